"""`tvmlat network-correction`: fit the factor between the sum of layer predictions and measured
whole networks, and store it in the predictor file for `analyze` to apply."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from ..anchors import draw_anchor_specs, fitted_correction, loo_factors
from ..predictors.conformal import network_interval
from ..predictors.io import _finite, target_chip
from ..errors import TvmlatError
from ..jsonfile import write_json
from . import app
from .common import Format, console, emit, warn_unpriced


@app.command("network-correction")
def network_correction_cmd(
    model_refs: Optional[List[str]] = typer.Argument(None, help="MODEL_REFs of whole networks (path/file.py:NAME)"),
    predictor: Path = typer.Option(..., "--predictor", "-p", help="predictor JSON to correct"),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="target to measure the networks on [llvm]"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the corrected predictor here [update -p in place]"),
    anchors: Optional[Path] = typer.Option(None, "--anchors", help="calibration dataset (parquet) to draw anchor "
                                           "blocks from: measured with the networks, they tell the host's speed now "
                                           "from its speed at calibration, which is then divided out"),
    anchor_blocks: int = typer.Option(40, "--anchor-blocks", help="how many anchor blocks to draw (seed 0)"),
    timings_from: Optional[Path] = typer.Option(None, "--timings-from", help="measure nothing: reuse the networks "
                                                "(and anchor blocks) an earlier run timed, stored in this predictor "
                                                "file's network correction (after a refit, say)"),
    fmt: Format = typer.Option(Format.table, "--format", "-f"),
) -> None:
    """Measure whole networks, compare with the sum of their layers' predictions, and store the
    geometric-mean factor (with its leave-one-network-out error) in the predictor file.

    With --anchors, blocks of the calibration dataset are measured in the same campaign (interleaved
    rounds) and the networks' timings are scaled by the host's drift since calibration, so the
    stored factor corrects the model, not today's host.

    The timings are stored too (``network_correction.timings``): --timings-from fits the correction of a
    refitted predictor from them, with no new measurement."""
    correct_networks(predictor, model_refs=model_refs, target=target, out=out, anchors=anchors,
                     anchor_blocks=anchor_blocks, timings_from=timings_from, fmt=fmt)


def refit_correction(path: Path) -> dict:
    """Fit the network correction of the predictor file ``path`` again from the timings its own section stores
    (nothing measured, nothing printed) and return the new section; TvmlatError where it can't."""
    return correct_networks(path, timings_from=path, fmt=None)


def correct_networks(predictor: Path, *, model_refs=None, target: str | None = None, out=None, anchors=None,
                     anchor_blocks: int = 40, timings_from=None, fmt: Format | None = Format.table) -> dict:
    """`network-correction`'s work; returns the section it wrote. ``fmt`` None: print nothing
    (``refit_correction``)."""
    from ..analysis import layer_table
    from ..modelref import load_model_ref, recorded_ref
    from ..predictors import load_predictor
    from ..runners.local import LocalRunner
    from ..targets import load_target

    pred = load_predictor(predictor)
    stored = None
    if timings_from is not None:
        if model_refs or anchors is not None:
            raise TvmlatError(f"give {'MODEL_REFs' if model_refs else '--anchors'} to measure, or --timings-from to "
                              "reuse stored timings (with their anchors), not both")
        stored = stored_timings(timings_from)
        if target is not None and load_target(target).name != stored["target"]:
            raise TvmlatError(f"--target {target}: the networks in {timings_from} were timed on {stored['target']!r} "
                              "and nothing is measured with --timings-from; leave --target out, or measure the "
                              "networks on it (MODEL_REF...)")
        # the folder its relative MODEL_REFs and anchor dataset are relative to (where it was timed)
        timed_in = Path(os.path.normpath(Path(timings_from).resolve().parent / stored.get("folder", ".")))
        root = _found_in(stored["model_refs"], timed_in)
        model_refs = [recorded_ref(r, root, timed_in) for r in stored["model_refs"]]
    elif not model_refs:
        raise TvmlatError("name the networks to measure (MODEL_REF...), or reuse stored timings with --timings-from")
    else:
        root = timed_in = Path.cwd()
    t = None if stored else load_target(target or "llvm")  # nothing is measured from stored timings
    tname = stored["target"] if stored else t.name
    if pred.target.get("name") not in (None, tname):
        raise TvmlatError(f"{predictor} predicts target {pred.target.get('name')!r}, not {tname!r}"
                          + (f" (the target {timings_from} was timed on)" if stored else ""))
    # the networks are (or were) timed on one CPU: they correct only a predictor calibrated on that CPU
    chip, mine = (stored.get("chip", "") if stored else target_chip(t.to_dict())), target_chip(pred.target)
    if chip and mine and chip != mine:
        raise TvmlatError(f"{predictor} was calibrated on {mine!r}, but the networks "
                          + (f"in {timings_from} were timed on {chip!r}" if stored else f"would be timed on {chip!r} "
                             "(this host)")
                          + "; correct a predictor calibrated on the CPU that times the networks")
    entries = {}
    for given, ref in zip(stored["model_refs"] if stored else model_refs, model_refs):
        try:
            entries.update(load_model_ref(ref))
        except TvmlatError as e:
            if not stored:
                raise
            raise TvmlatError(f"{timings_from} timed the networks of {given!r}, which does not load from here nor "
                              f"from {timed_in}, the folder it was timed in ({e}); put the file back, or measure the "
                              "networks again (MODEL_REF...)") from None
    if stored:
        missing = [n for n in stored["networks"] if n not in entries]
        if missing:
            raise TvmlatError(f"{timings_from}: {', '.join(map(repr, missing))} timed there no longer come from its "
                              f"MODEL_REFs {model_refs}; measure the networks again")
        entries = {n: entries[n] for n in stored["networks"]}
    predicted, bounds = {}, {}
    cal = pred.interval_calibration() if (pred.doc.get("interval") or {}).get("abs_log_residuals") else None
    for name, (module, inputs) in entries.items():
        layers = layer_table(module, inputs, pred)
        warn_unpriced(layers["name"].tolist(), layers.attrs.get("unpriced", []), f"layers of {name}")
        predicted[name] = float(layers["latency_ms"].sum())
        if cal:  # the 90 % interval analyze --interval gives it from the calibration, to check on this network
            _, lo, hi, how = network_interval(layers["latency_ms"].to_numpy(), cal, 0.9)
            bounds[name] = (lo, hi)
    host, anchor_ms = None, {}
    if stored:
        measured = stored["networks"]
        if stored["anchors"]:
            anchor_ms, given = stored["anchors"]["blocks"], Path(stored["anchors"]["dataset"])
            # from here, the folder the refs load from, the one it was timed in, or moved with the file: beside it
            tried = [given, root / given, timed_in / given, Path(timings_from).parent / given.name]
            anchors = next((p for p in tried if p.is_file()), given)
            specs = {s.block_id: s for s in draw_anchor_specs(anchors, 10 ** 9)}  # every block
            host, anchor_err, n_anchors = _host_from_anchors(anchors, anchor_ms, specs, pred, fmt)
    elif anchors is None:
        runner = LocalRunner(t)
        measured = {}
        for name, (module, inputs) in entries.items():
            res = runner.run(module, inputs, key=name)
            if res.status != "ok":
                raise TvmlatError(f"measuring {name!r} failed: {res.error}")
            measured[name] = res.latency_ms_median
    else:
        measured, anchor_ms, specs = _measure_anchored(entries, anchors, anchor_blocks, LocalRunner(t), t, fmt)
        host, anchor_err, n_anchors = _host_from_anchors(anchors, anchor_ms, specs, pred, fmt)
    rows = [{"name": n, "measured_ms": measured[n], "predicted_ms": predicted[n]} for n in entries]
    if host is not None:
        for r in rows:  # what the network would take at the host's speed during calibration
            r["host_adjusted_ms"] = r["measured_ms"] * host
    if len(rows) < 3:
        raise TvmlatError(f"need at least 3 networks to fit and check a correction, got {len(rows)}")
    key = "measured_ms" if host is None else "host_adjusted_ms"
    m = np.array([r[key] for r in rows])
    p = np.array([r["predicted_ms"] for r in rows])
    corr = fitted_correction(m, p, host_adjusted=host is not None)
    factor, loo = corr["fitted_factor"], loo_factors(m, p)
    for r, f_loo in zip(rows, loo):
        r["ratio"] = r["predicted_ms"] / r[key]
        r["error_%"] = 100 * (r["ratio"] - 1)
        r["corrected_error_%"] = 100 * (r["predicted_ms"] * f_loo / r[key] - 1)
        if bounds:
            lo, hi = bounds[r["name"]]
            r["in_90%_interval"] = "yes" if lo <= r[key] <= hi else "no"
    if fmt is not None:
        emit(rows, fmt, ["name", "measured_ms", *([] if host is None else ["host_adjusted_ms"]), "predicted_ms",
                         "ratio", "error_%", "corrected_error_%", *(["in_90%_interval"] if bounds else [])],
             title=f"whole networks on {tname}" + (f" (timed before, {timings_from})" if stored else "")
                   + ": sum of layer predictions vs measured (corrected: factor fitted on the other networks)")
    if not math.isfinite(factor):  # before anything is written: the predictor file stays as it was
        raise TvmlatError("the correction factor is not finite")
    doc = pred.doc
    # factor: the fitted one (with anchors: where it pays leave-one-out, else 1); loo_log_residuals: each
    # network's log error against that correction (its factor fitted on the others), which size `analyze
    # --interval`'s whole-network interval once there are enough of them (9 for 90 %)
    doc["network_correction"] = {
        **corr, "networks": [r["name"] for r in rows],
        "note": "multiply the sum of layer predictions by factor to predict a whole network" + (
            "" if corr["applied"] else f" (1: the fitted x{factor:.3f} did not pay in leave-one-out)"),
        # what was measured (not what the predictor made of it): --timings-from refits the correction from it
        "timings": {"target": tname, "chip": chip, "model_refs": list(stored["model_refs"] if stored else model_refs),
                    "networks": dict(measured),
                    "anchors": {"dataset": stored["anchors"]["dataset"] if stored else str(anchors),
                                "blocks": dict(anchor_ms)} if anchor_ms else None},
    }
    if stored:
        # relative to the file written, as its networks' folder is: a shipped file names no machine's paths
        doc["network_correction"]["timings_reused_from"] = os.path.relpath(
            Path(timings_from).resolve(), Path(out or predictor).resolve().parent)
    if host is not None:
        doc["network_correction"].update({"host_factor": host, "anchor_blocks": n_anchors,
                                          "anchor_median_abs_error_%": anchor_err, "anchor_dataset": str(anchors)})
    dest = out or predictor
    # relative MODEL_REFs and anchor dataset are relative to this folder: a refit finds them from anywhere
    doc["network_correction"]["timings"]["folder"] = os.path.relpath(root.resolve(), Path(dest).resolve().parent)
    write_json(dest, doc, indent=2)
    if fmt == Format.table:
        console().print(f"factor {factor:.3f} (median |error| {corr['median_abs_error_%_before']:.1f} % -> "
                        f"{corr['median_abs_error_%_loo_corrected']:.1f} % leave-one-out): "
                        + ("applied" if corr["applied"] else "not applied, the plain sums are closer (stored as 1)")
                        + f"; saved in {dest}")
        if bounds:
            inside = sum(r["in_90%_interval"] == "yes" for r in rows)
            console().print(f"{inside} of {len(rows)} networks inside the 90 % interval analyze --interval gives them "
                            f"from the calibration (sized from {how})"
                            + ("" if host is not None else "; the host's drift since calibration is in these timings: "
                               "--anchors divides it out"))
        if len(rows) < 9:
            console().print(f"analyze --interval sizes a whole network's 90 % interval from these networks' leave-one-out "
                            f"errors once there are 9 or more ({len(rows)} now); until then from the calibration")
    return doc["network_correction"]


def _measure_anchored(entries, anchors: Path, n: int, runner, t, fmt):
    """Time the networks and ``n`` blocks drawn from the ``anchors`` dataset in one campaign; return
    ({network: ms}, {anchor block_id: ms} of the anchors measured, {block_id: spec} of those drawn)."""
    from ..measure import module_workloads, run_campaign, spec_workloads

    if n < 3:
        raise TvmlatError(f"--anchor-blocks {n}: need at least 3 anchor blocks to measure the host's drift")
    specs = draw_anchor_specs(anchors, n)
    rows = run_campaign(module_workloads(entries) + spec_workloads(specs), runner, t,
                        show_progress=fmt == Format.table)
    by_key = {r["block_id"]: r for r in rows}
    for name in entries:
        if by_key[name]["status"] != "ok":
            raise TvmlatError(f"measuring {name!r} failed: {by_key[name]['error']}")
    ok = {s.block_id: by_key[s.block_id]["latency_ms_median"] for s in specs if by_key[s.block_id]["status"] == "ok"}
    return {name: by_key[name]["latency_ms_median"] for name in entries}, ok, {s.block_id: s for s in specs}


def _host_from_anchors(anchors: Path, anchor_ms: dict, specs: dict, pred, fmt):
    """(host factor = median predicted/measured of the anchor blocks timed at ``anchor_ms``, their median |error|
    % after the factor, number of anchors); ``specs``: the blocks of the ``anchors`` dataset by id."""
    from ..anchors import host_factor
    from ..features import features_frame

    if len(anchor_ms) < 3:
        raise TvmlatError(f"only {len(anchor_ms)} anchor blocks could be measured; need 3")
    lost = [k for k in anchor_ms if k not in specs]
    if lost:
        raise TvmlatError(f"{anchors} no longer holds the anchor blocks {lost[:3]}{' ...' if len(lost) > 3 else ''} "
                          "that were timed; measure the networks again with --anchors")
    ids = list(anchor_ms)
    predicted = pred.predict(features_frame([specs[k] for k in ids], geometry=pred.geometry))
    host, err = host_factor(predicted, [anchor_ms[k] for k in ids])
    if fmt == Format.table:
        console().print(f"{len(ids)} anchor blocks from {anchors}: predicted/measured {host:.3f} (the host now against "
                        f"its speed at calibration), {err:.1f} % median error once that is divided out")
    return host, err, len(ids)


def stored_timings(path: Path) -> dict:
    """The timings an earlier `network-correction` stored in the predictor file ``path`` (``timings``: target, its
    chip, model_refs, {network: ms}, anchors None or {dataset, {block_id: ms}}), checked; a clear error where there are
    none (a file from before they were stored) or they are damaged."""
    from ..jsonfile import read_json

    if not Path(path).is_file():
        raise TvmlatError(f"--timings-from {path}: no such file; give the predictor file an earlier "
                          "`tvmlat network-correction` wrote")
    doc = read_json(path, TvmlatError, "a predictor file", "give the predictor file an earlier "
                    "`tvmlat network-correction` wrote")
    nc = doc.get("network_correction") if isinstance(doc, dict) else None
    t = nc.get("timings") if isinstance(nc, dict) else None
    if t is None:
        raise TvmlatError(f"{path} stores no network timings (no network correction, or one made before they were "
                          "stored); measure the networks: tvmlat network-correction MODEL_REF... -p P.json")
    nets, anch = (t.get("networks"), t.get("anchors")) if isinstance(t, dict) else (None, None)
    ok = (isinstance(t, dict) and isinstance(t.get("target"), str) and isinstance(t.get("chip", ""), str)
          and isinstance(t.get("model_refs"), list) and isinstance(t.get("folder", "."), str)
          and all(isinstance(r, str) for r in t["model_refs"]) and isinstance(nets, dict) and len(nets) >= 3
          and all(_positive(v) for v in nets.values())
          and (anch is None or (isinstance(anch, dict) and isinstance(anch.get("dataset"), str)
                                and isinstance(anch.get("blocks"), dict)
                                and all(_positive(v) for v in anch["blocks"].values()))))
    if not ok:
        raise TvmlatError(f"{path}: network_correction.timings is damaged; measure the networks again")
    return t


def _from_root(path: str, root: Path) -> Path:
    """A stored relative ``path``, found from here or else from ``root``, the folder it was stored from."""
    p = Path(path)
    return root / p if not p.is_absolute() and not p.exists() and (root / p).exists() else p


def _found_in(refs, root: Path) -> Path:
    """Where stored MODEL_REFs' relative files are found: from here (the current folder) where the first of them
    is, else from ``root``, the folder they were timed in."""
    rel = [r.rpartition(":")[0] for r in refs if not r.startswith("torchvision:") and ":" in r]
    rel = [p for p in rel if not Path(p).is_absolute()]
    return root if rel and _from_root(rel[0], root) != Path(rel[0]) else Path.cwd()


def _positive(v) -> bool:
    return _finite(v) and v > 0
