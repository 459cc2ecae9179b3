"""`tvmlat fit`: fit a predictor on existing datasets; also the fit-and-report step of calibrate."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import pandas as pd
import typer

from ..dataset import concat_datasets, dataset_hash, datasets_geometry, ok_rows, read_meta
from ..errors import TvmlatError
from ..metrics import accuracy, cross_validate, per_family
from ..predictors.conformal import NEIGHBOURS, heldout_calibration, share_statistic, split_coverage
from ..predictors import FEATURE_SETS, LinearPredictor
from ..predictors.io import feature_max, predictor_document, write_predictor
from . import app
from .common import CHAIN_OVERLAP_HELP, console, emit, Format, metrics_table


MODELS = ("linear", "linear+xgb", "xgb")


def make_model_factory(model: str, features: str, prior: dict[str, Any] | None = None,
                       residual_weight: float | None = None, counted: dict[str, int] | None = None):
    """A zero-argument factory of unfitted predictors of the given kind (``prior``: a predictor
    document of another target, to adapt with few samples; ``residual_weight``: the share of the tree's
    correction a ``linear+xgb`` model applies, None: ``RESIDUAL_WEIGHT``; ``counted``: families whose rows count
    that many times each in a fit, a user's own blocks, ``predictors.counted``)."""
    from ..predictors.counted import counted_factory

    return counted_factory(_model_factory(model, features, prior, residual_weight), counted)


def _model_factory(model: str, features: str, prior: dict[str, Any] | None, residual_weight: float | None):
    from ..predictors.residual import RESIDUAL_WEIGHT, ResidualPredictor, XGBPredictor

    if residual_weight is not None and model != "linear+xgb":
        raise TvmlatError(f"--residual-weight applies to --model linear+xgb, not {model!r}; leave it out")

    if prior is not None:
        from ..predictors.adapted import AdaptedPredictor

        doc = {k: prior[k] for k in ("kind", "model", "target", "profile", "features") if k in prior}
        return lambda: AdaptedPredictor(prior=doc)

    if features not in FEATURE_SETS:
        raise TvmlatError(f"unknown --features {features!r}; known: {', '.join(FEATURE_SETS)}")
    if model == "linear":
        return lambda: LinearPredictor(features=features)
    if model == "linear+xgb":
        weight = RESIDUAL_WEIGHT if residual_weight is None else residual_weight
        ResidualPredictor(weight=weight)  # a bad weight is a one-line error now, not after the campaign's fits
        return lambda: ResidualPredictor(linear={"features": features}, weight=weight)
    if model == "xgb":
        return lambda: XGBPredictor()
    raise TvmlatError(f"unknown --model {model!r}; known: {', '.join(MODELS)}")


def evaluation_suite(df: pd.DataFrame, make_model) -> tuple[dict[str, dict], pd.DataFrame]:
    """Held-out-family (when there are >= 2 families) and 5-fold metrics for a model configuration,
    with the empirical coverage/width of 90% conformal intervals; plus the held-out predictions
    (by family when possible) that size the predictor's intervals."""
    out = {}
    fam_preds = None
    if df["family"].nunique() >= 2:
        out["held-out families"], fam_preds = cross_validate(df, make_model, split="family")
        out["held-out families"].update(_cov(fam_preds))
    out["5-fold"], kf_preds = cross_validate(df, make_model, split="kfold", k=5)
    out["5-fold"].update(_cov(kf_preds))
    return out, fam_preds if fam_preds is not None else kf_preds


def _cov(preds: pd.DataFrame) -> dict[str, float]:
    c = split_coverage(preds, 0.9)
    return {"cov90": c["coverage"], "width90": c["width"]}


def fit_and_report(good: pd.DataFrame, *, features: str, target: dict[str, Any], profile: str,
                   dataset_hash: str, out: Path, con, model: str = "linear", prior: dict[str, Any] | None = None,
                   geometry=None, campaign_speeds=None, plot: Path | None = None,
                   residual_weight: float | None = None, counted: dict[str, int] | None = None,
                   chain_overlap: int | str | None = "auto", model_refs: list[dict[str, Any]] | None = None) -> None:
    """Fit, evaluate and save a predictor on ``good`` rows; ``geometry``: the L1 their loop features were
    counted for, recorded in the predictor file (None: ``DEFAULT_GEOMETRY``); ``campaign_speeds``: the
    speeds already divided out of ``good``'s labels, recorded too; ``plot``: a PNG of predicted against
    measured latency (in-sample and held out) to write; ``counted``: the user's own families (``--with``) and how
    many times each of their rows counts in every fit, recorded too; ``chain_overlap``: how many steps of a
    multiply-add chain the core hides (features version 23, ``overlap``): ``"auto"`` chooses it by the fit of the
    ``loops`` features, a number sets it (the thrash reach of version 24 is chosen either way), None keeps
    ``geometry``'s; ``model_refs``: a dataset's meta.json's, to count its rows measured from a model reference again
    for it."""
    present = set(good["family"])
    counted = {f: w for f, w in (counted or {}).items() if f in present}
    make = make_model_factory(model, features, prior, residual_weight, counted)
    need = 3 if prior is not None else 12
    if len(good) < need:
        raise TvmlatError(f"only {len(good)} blocks measured successfully; need at least {need} to fit a predictor")
    if prior is not None:
        make, model, geometry, good = _adapted_or_own(good, geometry, prior, make, features=features, counted=counted,
                                                       chain_overlap=chain_overlap, model_refs=model_refs, con=con)
    elif features == "loops" and chain_overlap is not None:
        geometry, good = _counted_for_core(good, geometry, chain_overlap, model_refs, counted, con)
    y = good["latency_ms_median"].to_numpy()
    fitted = make().fit(good, y)
    insample = fitted.predict(good)
    results = {"in-sample": accuracy(y, insample)}
    cv, heldout = evaluation_suite(good, make)
    results.update(cv)
    split = "leave-one-family-out" if "held-out families" in cv else "5-fold"
    cal = heldout_calibration(heldout)
    stat = share_statistic(cal.get("block_groups"))  # a fit on several campaigns keeps the median
    what = "median" if stat["quantile"] == 0.5 else f"{stat['quantile']:.0%} quantile"
    near = (f"the {what} of the {stat['k']} held-out scores nearest in predicted latency and cost shares, from "
            f"other families" if "cost_shares" in cal
            else f"the median of the {NEIGHBOURS} held-out scores nearest in predicted latency")
    interval = {"method": f"split-conformal on |log(measured/predicted)| of {split} predictions, each divided "
                          f"by {near}", **cal}
    from ..energy import energy_rows, fit_energy

    energy = fit_energy(good, features)
    seen = feature_max(good, fitted.feature_names_in_)
    if model.startswith("adapted"):  # the prior prices what its own target's blocks had: those are seen too
        prior_seen = (prior or {}).get("training", {}).get("feature_max")
        seen = {f: max(v, float(prior_seen.get(f, 0))) for f, v in seen.items()} if prior_seen else None
    doc = predictor_document(
        fitted, target=target, profile=profile, dataset_hash=dataset_hash, interval=interval,
        training={"n": int(len(good)), "families": sorted(good["family"].unique()), "metrics": results,
                  **({"feature_max": seen} if seen is not None else {}),
                  **({"counted": counted} if counted else {}),
                  **({"campaign_speeds": {str(k): float(v) for k, v in campaign_speeds.items()}}
                     if campaign_speeds is not None else {})},
        energy=energy, geometry=geometry)
    # what `tvmlat fit` does not make, of a predictor file this one replaces, goes into the same write: nothing
    # measured (a network correction's timings) is ever out of the file
    kept, dropped = _carried(_replaced_sections(out), doc)
    write_predictor({**doc, **kept}, out)
    if counted:
        from ..predictors.counted import times

        con.print("your own blocks count " + ", ".join(
            f"{times(w)} each ({f}, {int((good['family'] == f).sum())} blocks)"
            for f, w in counted.items()) + " in every fit (held out, their family is left out whole)")
    con.print(f"\n[bold]fitted model[/] ({model}, features: {features})\n{fitted.describe()}")
    con.print(metrics_table(results, f"accuracy of the {model} model"))
    emit(per_family(heldout).to_dict("records"), Format.table,
         ["family", "n", "median_ape", "within10", "bias"],
         title="held-out families: error per family" if "held-out families" in results else "5-fold: error per family")
    if energy is not None:
        con.print(metrics_table(energy["training"]["metrics"], "accuracy of the energy model and the derived power",
                                quantity="energy"))
    elif len(energy_rows(good)):
        con.print(f"[yellow]note:[/] only {len(energy_rows(good))} blocks have an energy reading; no energy model "
                  f"(needs 12)")
    con.print(f"predictor saved to {out}" + (" (with an energy model)" if energy is not None else ""))
    _after_carry(out, kept, dropped, con)
    if plot is not None:
        from ..plots import accuracy_plot

        held = "held-out families" if "held-out families" in results else "5-fold"
        accuracy_plot({"in-sample": good[["family"]].assign(measured=y, predicted=insample),
                       f"{held} (refitted without them)": heldout}, plot,
                      f"{model} ({features}) on {len(good)} blocks of {target.get('name', '?')}, profile {profile}")
        con.print(f"plot: {plot}")


def _adapted_or_own(good: pd.DataFrame, geometry, prior: dict[str, Any], make, *, features: str, counted,
                    chain_overlap, model_refs, con):
    """(model factory, model name, geometry, rows) of a ``--from`` fit: the predictor adapted from ``prior`` (``make``),
    its rows counted with the prior's core parameters (its prices were fitted on chains of its overlap and reach); or,
    with 12 rows or more and a lower 5-fold error, this target's own linear model, its core chosen as `calibrate`
    chooses it."""
    src = prior.get("target", {}).get("name", "?")
    geometry_p, good_p = _counted_as_prior(good, geometry, prior, features, model_refs)
    if len(good) >= 12:  # enough samples for a model of its own: keep the prior only if it helps
        own = make_model_factory("linear", features, counted=counted)
        geometry_o, good_o = ((_counted_for_core(good, geometry, chain_overlap, model_refs, counted, con,
                                                 "the own linear model's ")
                               if features == "loops" and chain_overlap is not None else (geometry, good)))
        err_prior = cross_validate(good_p, make, split="kfold", k=5)[0]["median_ape"]
        err_own = cross_validate(good_o, own, split="kfold", k=5)[0]["median_ape"]
        con.print(f"5-fold median APE: adapted from {src} {err_prior:.1f} %, own linear model {err_own:.1f} %")
        if err_own < err_prior:
            con.print(f"[yellow]the prior from {src} does not help on this target; fitting its own model[/]")
            return own, "linear", geometry_o, good_o
    if features == "loops":
        con.print(f"the predictor adapted from {src} counts with its own core's parameters: chain overlap "
                  f"{geometry_p.chain_overlap} steps, thrashing walks up to {geometry_p.thrash_lines} L1 lines")
    return make, f"adapted from {src}", geometry_p, good_p


def _counted_for_core(good: pd.DataFrame, geometry, chain_overlap: int | str, model_refs, counted, con,
                      whose: str = ""):
    """``good`` counted again for the core's parameters the fit chooses (``overlap``): the chain overlap
    (``chain_overlap`` "auto", or the number given) and the thrash reach; and the geometry with them; ``whose``: what
    the line that says the choice begins with."""
    from ..loop_features import DEFAULT_GEOMETRY
    from ..overlap import OVERLAP_GRID, choose_core, describe_choice

    geometry, good, losses = choose_core(good, geometry or DEFAULT_GEOMETRY, good["latency_ms_median"],
                                         model_refs=model_refs,
                                         make_model=make_model_factory("linear", "loops", counted=counted),
                                         grid=OVERLAP_GRID if chain_overlap == "auto" else (int(chain_overlap),))
    con.print(whose + describe_choice(geometry, losses))
    return geometry, good


def _counted_as_prior(good: pd.DataFrame, geometry, prior: dict[str, Any], features: str, model_refs):
    """``good`` counted with the core's parameters a ``--from`` prior's prices were fitted with (its
    ``cache_geometry``'s chain overlap and thrash reach; 70 and 16 where it records none), and the geometry with them:
    the same rows and geometry where those are already theirs, or where ``features`` are not the loop features."""
    from ..loop_features import DEFAULT_GEOMETRY, CacheGeometry
    from ..overlap import counted_with_core

    geometry = geometry or DEFAULT_GEOMETRY
    theirs = CacheGeometry.from_dict(prior.get("cache_geometry"), "the --from predictor's cache_geometry")
    return (geometry, good) if features != "loops" else counted_with_core(good, geometry, theirs, model_refs)


def parse_chain_overlap(text: str | None, features: str = "loops", prior: Any = None) -> int | str | None:
    """``--chain-overlap``: ``auto`` (or nothing), or a whole number of steps, 1 to ``MAX_OVERLAP``; given with
    features other than ``loops`` (which count no chains) or a ``--from`` prior (whose prices were fitted with its own
    overlap), a one-line error."""
    from ..loop_features import MAX_OVERLAP

    if text is not None and (features != "loops" or prior is not None):
        raise TvmlatError("--chain-overlap applies to the loops features fitted here, not to "
                          + (f"--features {features}" if features != "loops" else "a predictor adapted with --from")
                          + "; leave it out")
    if text is None or text.strip().lower() == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_OVERLAP:
        raise TvmlatError(f"--chain-overlap {text!r}: give auto (chosen by the fit) or a whole number of steps, 1 to "
                          f"{MAX_OVERLAP} (70: what features versions 16-22 counted on every host)")
    return n


#: sections of a predictor file that other commands add (`network-correction`, `memory`): a refit keeps them
CARRIED = ("network_correction", "memory")


def _replaced_sections(out: Path) -> dict[str, Any]:
    """The ``CARRIED`` sections of the predictor file at ``out`` that a fit is about to replace, with its target,
    profile and ``MODEL_KEYS`` (``{}``: no such file, none of those sections, or not a predictor's JSON)."""
    import json

    try:
        doc = json.loads(Path(out).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    kept = {k: doc[k] for k in CARRIED if isinstance(doc.get(k), dict)}
    target = doc.get("target")
    return {**kept, "target": target if isinstance(target, dict) else {}, "profile": doc.get("profile"),
            "model_keys": {k: doc.get(k) for k in MODEL_KEYS}} if kept else {}


#: the note of a network correction kept from a file whose model the refit changed
STALE = "fitted with the model this file held before"
#: what a fitted model is: a network correction fitted with a file equal in these fitted the same model
MODEL_KEYS = ("kind", "model", "features", "features_version", "cache_geometry")


def _carried(replaced: dict[str, Any], doc: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The sections of the file a fit replaces (``_replaced_sections``) to keep in the new document ``doc``, and
    the line to say when it drops them: the memory model (TVM's memory planning of the target, which a latency refit does not
    change) and the network correction, marked as fitted with the model before where the model changed
    (``_after_carry`` refits it from its stored timings). Sections of another target, profile or chip are
    dropped, and the line says so."""
    import json

    from ..predictors.io import target_chip

    kept = {k: replaced[k] for k in CARRIED if k in replaced}
    if not kept:
        return {}, ""
    old, target = replaced["target"], doc["target"]
    if (old.get("name"), replaced["profile"], target_chip(old)) != (target.get("name"), doc["profile"],
                                                                    target_chip(target)):
        what = " and a ".join({"network_correction": "network correction", "memory": "memory model"}[k] for k in kept)
        return {}, (f"[yellow]note: the file replaced held a {what} of another target, profile or chip "
                    f"({old.get('name')}, {replaced['profile']}, {target_chip(old) or '?'}); the refit drops it[/]")
    nc = kept.get("network_correction")
    new_keys = json.loads(json.dumps({k: doc.get(k) for k in MODEL_KEYS}, default=float))
    if nc is not None and replaced["model_keys"] != new_keys:
        kept["network_correction"] = {**nc, "note": STALE + "; run `tvmlat network-correction` again"}
    return kept, ""


def _after_carry(out: Path, kept: dict[str, Any], dropped: str, con) -> None:
    """Say what the refit kept of the file it replaced (``_carried``), and fit its network correction again from
    the networks' stored timings where it has them and the model changed (nothing measured)."""
    if dropped:
        con.print(dropped)
    if "memory" in kept:
        con.print("kept the memory model of the file replaced (TVM's memory planning, which a refit does not change)")
    nc = kept.get("network_correction")
    if nc is None:
        return
    if not str(nc.get("note")).startswith(STALE):  # not marked by _carried: the model is the one it was fitted with
        con.print("kept the network correction of the file replaced: the model it was fitted with is unchanged")
        return
    if not nc.get("timings"):
        con.print("[yellow]note: kept the network correction of the file replaced, fitted with the model it held; "
                  "it stores no timings to refit it from: measure the networks again with `tvmlat "
                  "network-correction`[/]")
        return
    from rich.markup import escape

    from .network_correction import refit_correction

    try:
        new = refit_correction(out)
    except TvmlatError as e:
        con.print(f"[yellow]note: kept the network correction of the file replaced as it was, fitted with the model "
                  f"it held; refitting it from its stored timings failed: {escape(str(e))}[/]")
        return
    con.print(f"network correction refitted from its {len(new['networks'])} networks' stored timings (nothing "
              f"measured): factor {new['factor']:.3f}, median |error| {new['median_abs_error_%_before']:.1f} %")


@app.command("fit")
def fit_cmd(
    dataset: List[Path] = typer.Option(..., "--dataset", "-d", help="dataset parquet file(s)"),
    out: Path = typer.Option(..., "--out", "-o", help="predictor JSON to write"),
    features: str = typer.Option("loops", "--features", help="feature set: loops | ops | published"),
    model: str = typer.Option("linear", "--model", help="linear | linear+xgb (XGBoost on the linear residual) | xgb"),
    residual_weight: Optional[float] = typer.Option(None, "--residual-weight",
                                                    help="linear+xgb: the share of the tree's log correction to "
                                                         "apply, 0-1 [1; 0.5 where `tvmlat ablation` says half "
                                                         "the residual (linear-loops+xgb-half) pays on this host]"),
    campaign_speed: bool = typer.Option(True, "--campaign-speed/--no-campaign-speed",
                                        help="several datasets: divide each campaign's host speed out before fitting"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG of predicted against measured latency "
                                                             "(in-sample and held-out families)"),
    chain_overlap: Optional[str] = typer.Option(None, "--chain-overlap", help=CHAIN_OVERLAP_HELP),
    own_weight: Optional[int] = typer.Option(None, "--own-weight",
                                             help="how many times each of your own blocks (a campaign's `calibrate "
                                                  "--with` families) counts in the fit [as calibrated: 3 unless "
                                                  "--with-weight said otherwise]"),
) -> None:
    """Fit a predictor on measured datasets and report its held-out accuracy and interval coverage.
    Several campaigns of one target are fitted as one host state: each one's speed is divided out."""
    from ..campaigns import campaign_count, campaign_speeds, describe, divided, lone_note

    from ..plots import check_plot

    check_plot(plot)
    make_model_factory(model, features, residual_weight=residual_weight)  # bad options fail before any reading
    overlap = parse_chain_overlap(chain_overlap, features)

    geometry = datasets_geometry(dataset)  # one L1 for all (else a one-line error); the predictor records it
    df = concat_datasets(dataset, geometry)
    metas = [read_meta(p) for p in dataset]
    targets = {m.get("target_name") for m in metas if m}
    profiles = {m.get("profile") for m in metas if m}
    if len(targets) > 1 or len(profiles) > 1:
        raise TvmlatError(f"datasets mix targets {sorted(map(str, targets))} / profiles {sorted(map(str, profiles))};"
                          " fit one predictor per target and profile")
    meta = metas[0] if metas else {}
    counted = own_counts(dataset, metas, own_weight)
    good = ok_rows(df)
    con = console()
    speeds = None
    if campaign_speed and campaign_count(good) > 1:  # several campaigns of this target: one host state
        speeds = campaign_speeds(good, good["latency_ms_median"])
        good = good.assign(latency_ms_median=divided(good, good["latency_ms_median"], speeds))
        con.print(describe(speeds) + "; the predictor predicts their average state")
        lone = lone_note(good)
        if lone:
            from rich.markup import escape

            con.print(f"[yellow]{escape(lone)}[/]")
    fit_and_report(good, features=features, target=meta.get("target", {}), profile=meta.get("profile", "default"),
                   dataset_hash=",".join(dataset_hash(p) for p in dataset), out=out, con=con,
                   model=model, geometry=geometry, campaign_speeds=speeds, plot=plot, residual_weight=residual_weight,
                   counted=counted, chain_overlap=overlap,
                   model_refs=[r for m in metas if m for r in (m.get("model_refs") or [])])


def own_counts(paths, metas, weight: int | None) -> dict[str, int]:
    """The user's own families of the datasets at ``paths`` (their meta.json's ``own_families``, written by
    ``calibrate --with``) and how many times each counts in a fit: ``weight`` where given, else as calibrated."""
    from ..predictors.counted import check_weight, recorded_counts

    if weight is not None:
        check_weight(weight, "--own-weight")
    out, where = {}, {}
    for path, m in zip(paths, metas):
        for fam, w in recorded_counts(m, f"{path}'s meta.json").items():
            if weight is None and fam in out and out[fam] != w:
                raise TvmlatError(f"{where[fam]} counts your own family {fam!r} {out[fam]} times, {path} {w} times; "
                                  f"say which with --own-weight")
            out[fam], where[fam] = w if weight is None else weight, path
    if weight is not None and not out:
        raise TvmlatError("--own-weight: none of these datasets holds blocks of your own (`tvmlat calibrate --with`); "
                          "leave it out")
    return out
