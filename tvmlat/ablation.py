"""The linear-vs-tree ablation: the same splits for every model, a learning curve, a report.

Models: the published 3-feature linear form (one and two segments), the per-op-class linear
model, XGBoost alone, and linear + XGBoost on the log residual. Splits: random 5-fold and
leave-one-family-out, identical for every model. Learning curve: a fixed 30% test split, and
training subsets of 10, 20, 50, 100, 200... blocks from the rest (5 random draws each).
Few-shot (with datasets of other targets): error on this target vs. its own samples, with and
without another target's predictor as prior.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .errors import TvmlatError
from .metrics import accuracy, block_draw, cross_validate
from .predictors.conformal import SHARE_PREFIX, split_coverage
from .predictors.counted import OWN_WEIGHT, counted_factory
from .predictors.linear import LinearPredictor


def model_zoo(with_xgb: bool = True) -> dict[str, Callable[[], object]]:
    zoo: dict[str, Callable[[], object]] = {
        "linear-published": lambda: LinearPredictor(features="published", segmented=False),
        "linear-published-2seg": lambda: LinearPredictor(features="published", segmented=True),
        "linear-ops": lambda: LinearPredictor(features="ops"),
        "linear-loops": lambda: LinearPredictor(features="loops"),
        "linear-loops-untied": lambda: LinearPredictor(features="loops", tie=0),  # ACTS and INP costs fitted freely
    }
    if with_xgb:
        from .predictors.residual import ResidualPredictor, XGBPredictor

        zoo["xgb"] = lambda: XGBPredictor()
        zoo["linear-ops+xgb"] = lambda: ResidualPredictor(linear={"features": "ops"})
        zoo["linear-loops+xgb"] = lambda: ResidualPredictor(linear={"features": "loops"})
        # half the tree's correction beside the whole (the default): the AMD host's data favour half, the Intel
        # host's the whole; which one a host's data favour is what to give `tvmlat fit --residual-weight`
        zoo["linear-loops+xgb-half"] = lambda: ResidualPredictor(linear={"features": "loops"}, weight=0.5)
    return zoo


@dataclass
class AblationResult:
    metrics: pd.DataFrame       # one row per (model, split)
    predictions: pd.DataFrame   # held-out predictions: model, split_kind, block_id, family, measured, predicted
    curve: pd.DataFrame         # learning curve: model, n_train, draw, median_ape, within10
    few_shot: pd.DataFrame = field(default_factory=pd.DataFrame)  # few_shot_pair rows, if other targets given
    other: pd.DataFrame = field(default_factory=pd.DataFrame)  # memory/energy models' metrics (other_quantities)
    campaign_speeds: pd.Series | None = None  # several campaigns: each one's host speed, from all rows
    repeatability: pd.DataFrame = field(default_factory=pd.DataFrame)  # measurement_repeatability rows
    families: pd.DataFrame = field(default_factory=pd.DataFrame)  # family_table of the held-out families
    shots: pd.DataFrame = field(default_factory=pd.DataFrame)  # family_shots rows of SHOT_MODELS


def predict_rate(model, df: pd.DataFrame, rows: int = 200_000) -> float:
    """Predictions per second on ``rows`` rows (the dataset repeated)."""
    big = pd.concat([df] * max(1, rows // len(df) + 1), ignore_index=True).iloc[:rows]
    model.predict(big.iloc[:100])
    t0 = time.perf_counter()
    model.predict(big)
    return rows / (time.perf_counter() - t0)


def run_ablation(df: pd.DataFrame, zoo: dict[str, Callable[[], object]], sizes=(10, 20, 50, 100, 200, 500),
                 draws: int = 5, seed: int = 0, progress: Callable[[str], None] | None = None,
                 campaign_speed: bool = True, shot_models=None) -> AblationResult:
    """``campaign_speed``: with rows of several campaigns, divide each one's host speed out (per split,
    from its training rows; for the learning curve and the fit timing, from all rows). ``shot_models``: the
    models of the zoo whose ``family_shots`` to add (None: ``SHOT_MODELS``; () none)."""
    from .campaigns import campaign_count, campaign_speeds, divided

    y = df["latency_ms_median"].to_numpy(dtype=float)
    speeds = campaign_speed and campaign_count(df) > 1
    all_rows = campaign_speeds(df, y) if speeds else None
    if speeds:
        y = divided(df, y, all_rows)
    rows, preds, curve, family_cov, shots = [], [], [], {}, []
    for name, make in zoo.items():
        if progress:
            progress(name)
        t0 = time.perf_counter()
        full = make().fit(df, y)
        fit_s = time.perf_counter() - t0
        rate = predict_rate(full, df)
        for split in ("family", "kfold"):
            if split == "family" and df["family"].nunique() < 2:
                continue
            m, p = cross_validate(df, make, split=split, k=5, seed=seed, campaign_speed=speeds)
            c = split_coverage(p, 0.9)
            if split == "family":
                family_cov[name] = c["by_split"]
            rows.append({"model": name, "split": "held-out families" if split == "family" else "5-fold", **m,
                         "cov90": c["coverage"], "width90": c["width"], "fit_s": fit_s,
                         "predict_s_per_1e6": 1e6 / rate})
            preds.append(p.assign(model=name, split_kind=split))
        curve += learning_curve(df.assign(latency_ms_median=y), make, name, sizes, draws, seed)
        if name in (SHOT_MODELS if shot_models is None else shot_models):
            shots.append(family_shots(df.assign(latency_ms_median=y), make, seed=seed).assign(model=name))
    predictions = pd.concat(preds, ignore_index=True)
    return AblationResult(pd.DataFrame(rows), predictions, pd.DataFrame(curve),
                          other=other_quantities(df), campaign_speeds=all_rows,
                          repeatability=measurement_repeatability(df),
                          families=family_table(predictions, coverage_by_model=family_cov),
                          shots=pd.concat(shots, ignore_index=True) if shots else pd.DataFrame())


def learning_curve(df: pd.DataFrame, make, name: str, sizes, draws: int, seed: int) -> list[dict]:
    # a fixed 30 % test split of the blocks (a block measured in several campaigns: all its rows on one side)
    groups, perm = block_draw(df, seed)
    rank = np.empty_like(perm)
    rank[perm] = np.arange(len(perm))
    order = np.argsort(rank[groups], kind="stable")  # rows in the order of their block's draw
    is_test = rank[groups][order] < max(1, int(0.3 * len(perm)))
    test, pool = order[is_test], order[~is_test]
    y = df["latency_ms_median"].to_numpy(dtype=float)
    out = []
    sizes = sorted({n for n in sizes if n < len(pool)} | {len(pool)})
    for n in sizes:
        for d in range(draws if n < len(pool) else 1):
            tr = np.random.default_rng(seed + 1000 * n + d).choice(pool, size=n, replace=False)
            try:
                model = make().fit(df.iloc[tr], y[tr])
            except Exception:  # noqa: BLE001 - too few rows for this model: a gap in the curve
                continue
            m = accuracy(y[test], model.predict(df.iloc[test]))
            out.append({"model": name, "n_train": n, "draw": d, "median_ape": m["median_ape"],
                        "within10": m["within10"]})
    return out


#: a held-out family with k of its blocks measured into the calibration ("shots"): the k drawn, and how many times
#: each shot counts in the fit (what `calibrate --with` counts a user's own blocks: ``counted.OWN_WEIGHT``)
SHOTS, SHOT_WEIGHT = (0, 1, 2, 3, 5), OWN_WEIGHT
#: the models whose family_shots the ablation reports (the default, and it with the tree, which might learn a
#: family's own costs from its shots)
SHOT_MODELS = ("linear-loops", "linear-loops+xgb")


def family_shots(df: pd.DataFrame, make, *, shots=SHOTS, draws: int = 3, weights=(SHOT_WEIGHT,), seed: int = 0,
                 offset: bool = False, base: np.ndarray | None = None) -> pd.DataFrame:
    """A family the calibration never saw, with k of its blocks measured into it. For every family of at least
    max(shots) + 2 blocks (a block measured in several campaigns: all its rows together), its blocks are shuffled
    ``draws`` times; those after the first max(shots) are the test blocks, the same for every k, and the first k
    are the shots. Rows: family, draw, k, method, block_id, measured, predicted; method ``held`` is the model
    fitted without the family (the leave-one-family-out prediction, listed under every k), ``fit wW`` the one
    fitted with the shots counted W times, and with ``offset`` also ``offset``: the held-out prediction times the
    shots' geometric-mean ratio measured / predicted. ``base``: a mask of the rows the calibration may hold besides
    the shots (all: None), e.g. the first 100 blocks of a 200-block campaign, whose other families' blocks stay out."""
    y = df["latency_ms_median"].to_numpy(dtype=float)
    blocks = df["block_id"].astype(str).to_numpy()
    fams = df["family"].to_numpy()
    rng = np.random.default_rng(seed)
    top = max(shots)
    out = []

    def fit(rows):
        return make().fit(df.iloc[rows], y[rows])

    for fam in sorted(set(fams)):
        mine = fams == fam
        ids = np.unique(blocks[mine])
        if len(ids) < top + 2:
            continue
        rest = np.flatnonzero(~mine if base is None else ~mine & np.asarray(base, dtype=bool))
        held = fit(rest)
        for draw in range(draws):
            order = rng.permutation(ids)
            test = np.flatnonzero(np.isin(blocks, order[top:]) & mine)
            first = held.predict(df.iloc[test])
            for k in shots:
                chosen = np.flatnonzero(np.isin(blocks, order[:k]) & mine)
                preds = {"held": first}
                if k and offset:
                    ratio = y[chosen] / held.predict(df.iloc[chosen])
                    preds["offset"] = first * float(np.exp(np.mean(np.log(ratio))))
                if k:
                    rows = np.concatenate([rest, chosen])  # the shots counted as `calibrate --with` counts them
                    for w in weights:
                        model = counted_factory(make, {fam: w})().fit(df.iloc[rows], y[rows])
                        preds[f"fit w{w}"] = model.predict(df.iloc[test])
                for method, p in preds.items():
                    out.append(pd.DataFrame({"family": fam, "draw": draw, "k": k, "method": method,
                                             "block_id": blocks[test], "measured": y[test], "predicted": p}))
    cols = ["family", "draw", "k", "method", "block_id", "measured", "predicted"]
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=cols)


def shots_stats(rows: pd.DataFrame) -> pd.DataFrame:
    """``family_shots`` rows (with a ``model`` column) per model, method and k: ``hit``, the % of the test blocks
    within +-10 %, and ``ape``, the median APE %."""
    err = (rows["predicted"] / rows["measured"] - 1).abs()
    return rows.assign(hit=100.0 * (err <= 0.1), ape=100.0 * err).groupby(["model", "method", "k"], sort=False).agg(
        hit=("hit", "mean"), ape=("ape", "median"))


def shots_table(rows: pd.DataFrame) -> pd.DataFrame:
    """``family_shots`` rows (with a ``model`` column) as one row per model and method, one column per k: the %
    of the test blocks within +-10 % (and the median APE %)."""
    t = shots_stats(rows)
    t["cell"] = [f"{h:.0f} % ({a:.1f})" for h, a in zip(t["hit"], t["ape"])]
    grid = t["cell"].unstack("k")
    grid.columns = [f"k={k}" for k in grid.columns]
    held = grid.xs("held", level="method")[["k=0"]] if "k=0" in grid else None
    fitted = grid.drop(index="held", level="method").drop(columns=["k=0"], errors="ignore")
    if held is not None:  # the held-out figure once, under k=0 of each model's fitted row
        fitted = fitted.join(held, on="model")
        fitted = fitted[["k=0", *[c for c in fitted.columns if c != "k=0"]]]
    fitted = fitted.reset_index()
    return fitted.drop(columns="method") if fitted["method"].nunique() == 1 else fitted


def family_table(predictions: pd.DataFrame, coverage: float = 0.9,
                 coverage_by_model: dict[str, dict] | None = None) -> pd.DataFrame:
    """Held-out families (leave-one-family-out): for each family, its blocks and, for each model, the % of
    them predicted within +-10 %, the median APE (%) and the % inside their ``coverage`` conformal intervals
    (sized as in the metrics' cov90, from the other families; ``coverage_by_model``: each model's
    ``split_coverage(...)["by_split"]`` where the caller has it): where a predictor is weak, not only how weak,
    and whether its intervals hold there."""
    lofo = predictions[predictions["split_kind"] == "family"]
    if lofo.empty:
        return pd.DataFrame()
    err = (lofo["predicted"] / lofo["measured"] - 1).abs()
    stats = lofo.assign(within10=100.0 * (err <= 0.1), ape=100.0 * err).groupby(["family", "model"], sort=False)
    within = stats["within10"].mean().unstack("model")
    ape = stats["ape"].median().unstack("model")
    models = list(dict.fromkeys(lofo["model"]))
    n = lofo[lofo["model"] == models[0]].groupby("family").size()
    out = pd.DataFrame({"family": within.index, "n": n.reindex(within.index).to_numpy()})
    cov = f"cov{round(100 * coverage)}%"
    for m in models:
        out[f"{m} +-10%"] = within[m].to_numpy()
        out[f"{m} medAPE%"] = ape[m].to_numpy()
        by = (coverage_by_model or {}).get(m)
        if by is None and "split" in lofo:
            by = split_coverage(lofo[lofo["model"] == m], coverage)["by_split"]
        if by is not None:
            out[f"{m} {cov}"] = [100 * by.get(f, np.nan) for f in within.index]
    return out.sort_values("family", ignore_index=True)


def family_columns(fams: pd.DataFrame, suffix: str) -> pd.DataFrame:
    """``family_table``'s family, n and one of its figures per model (``suffix``: " +-10%", " medAPE%",
    " cov90%"), each column named after its model alone: what the terminal and the report show."""
    t = fams[["family", "n", *[c for c in fams.columns if c.endswith(suffix)]]].copy()
    t.columns = [c.removesuffix(suffix) for c in t.columns]
    return t


#: the fewest repeated blocks the across-campaign repeatability is given for
MIN_REPEATED = 10


def measurement_repeatability(df: pd.DataFrame) -> pd.DataFrame:
    """How well the timings agree with themselves: the measurement's part of any predictor's error.

    * ``odd vs even rounds``: within each campaign, a block's odd and even interleaved rounds (``half_diff_rel``,
      the |log| ratio of their medians): two half-campaigns, the noise a predictor fitted and tested in one
      campaign meets (each half has half the rounds, so the whole campaign's noise is smaller still).
    * ``across campaigns`` (rows of several campaigns that measure some blocks more than once): each campaign's
      common speed divided out (its median log offset from its blocks' other measurements, five rounds), the
      deviation of one measurement from its block's mean, scaled by sqrt(n / (n - 1)) so it estimates one
      measurement's distance from the block's true time. A perfect predictor of pooled campaigns is off by this
      much against single measurements.

    Rows: what, blocks, timings (rows: a block's timing in one campaign), median |deviation| %, % within +-5 % and
    +-10 %. Empty where neither applies."""
    from .campaigns import CAMPAIGN

    rows = []
    if "half_diff_rel" in df:
        half = pd.to_numeric(df["half_diff_rel"], errors="coerce")
        h = np.abs(np.expm1(half.dropna().to_numpy(float)))
        if len(h):
            blocks = df.loc[half.notna(), "block_id"].nunique() if "block_id" in df else len(h)
            rows.append({"what": "odd vs even rounds", "blocks": int(blocks), "timings": len(h),
                         "median_dev_pct": 100 * float(np.median(h)), "within5": 100 * float(np.mean(h <= 0.05)),
                         "within10": 100 * float(np.mean(h <= 0.1))})
    if CAMPAIGN in df and "block_id" in df and df[CAMPAIGN].nunique() > 1:
        d = pd.DataFrame({"block": df["block_id"].astype(str).to_numpy(), "camp": df[CAMPAIGN].astype(str).to_numpy(),
                          "y": np.log(df["latency_ms_median"].to_numpy(float))})
        d = d[np.isfinite(d["y"])]
        d = d[d.groupby("block")["y"].transform("size") >= 2]
        if d["block"].nunique() >= MIN_REPEATED and d["camp"].nunique() > 1:
            speed = pd.Series(0.0, index=pd.unique(d["camp"]))
            for _ in range(5):
                x = d["y"] - speed.reindex(d["camp"]).to_numpy()
                dev = x - x.groupby(d["block"]).transform("mean")
                speed = speed + dev.groupby(d["camp"]).median()
            x = d["y"] - speed.reindex(d["camp"]).to_numpy()
            n = d.groupby("block")["y"].transform("size").to_numpy(float)
            z = (x - x.groupby(d["block"]).transform("mean")).to_numpy() * np.sqrt(n / (n - 1))
            a = np.abs(np.expm1(z))
            rows.append({"what": "across campaigns", "blocks": int(d["block"].nunique()), "timings": len(d),
                         "median_dev_pct": 100 * float(np.median(a)), "within5": 100 * float(np.mean(a <= 0.05)),
                         "within10": 100 * float(np.mean(a <= 0.1))})
    return pd.DataFrame(rows)


FEW_SHOT_SIZES = (5, 10, 20, 50, 100)


def other_quantities(df: pd.DataFrame) -> pd.DataFrame:
    """Held-out metrics of the models of what else a dataset measured: peak memory (``tvmlat memory``
    filled ``peak_memory_bytes``) and energy per inference (``--power`` filled ``energy_mj``), on
    the same leave-one-family-out and 5-fold splits as latency. Empty when neither was measured."""
    from .energy import MIN_ROWS, energy_rows
    from .memory import MemoryModel

    rows = []
    todo = []
    if "peak_memory_bytes" in df:
        mem = df[pd.to_numeric(df["peak_memory_bytes"], errors="coerce") > 0].reset_index(drop=True)
        if len(mem) >= 8:
            todo.append(("peak memory (bytes)", mem, MemoryModel, "peak_memory_bytes"))
    en = energy_rows(df)
    if len(en) >= MIN_ROWS:
        todo.append(("energy per inference (mJ)", en, lambda: LinearPredictor(features="ops"), "energy_mj"))
    for quantity, data, make, col in todo:
        for split in ("family", "kfold"):
            if split == "family" and data["family"].nunique() < 2:
                continue
            m, _ = cross_validate(data, make, split=split, k=5, y_col=col)
            rows.append({"quantity": quantity, "split": "held-out families" if split == "family" else "5-fold", **m})
    return pd.DataFrame(rows)


def few_shot_pair(src: pd.DataFrame, dst: pd.DataFrame, src_name: str, dst_name: str,
                  sizes=FEW_SHOT_SIZES, draws: int = 20, seed: int = 0, features: str = "loops",
                  dst_as_prior: pd.DataFrame | None = None) -> list[dict]:
    """Few-shot adaptation from target ``src`` to target ``dst`` (datasets measuring the same blocks).

    30 % of the shared blocks are the test set, never seen by either model nor by the prior; for N
    new-target samples (``draws`` draws from the rest) it fits the linear model of ``features`` (the
    predictors' default, ``loops``; ``ops`` before 2026-12-05) from scratch and the prior (the same model
    fitted on ``src``, test blocks excluded) adapted with the same N samples. Each dataset's loop features
    are its own CPU's counts; ``dst_as_prior``: ``dst``'s rows counted with the core's parameters ``src``'s were (chain
    overlap and thrash reach, features versions 23 and 24: the prior's prices are those of its own, as `calibrate
    --from` counts them), which the prior and the adapted model predict from (None: ``dst`` as it is).
    Rows: pair, n_new, model (scratch | adapted | reference rows), median_ape, within10, draws.
    """
    from .predictors.adapted import AdaptedPredictor
    from .predictors.io import predictor_document

    common = sorted(set(src["block_id"]) & set(dst["block_id"]))
    if len(common) < 10:
        raise TvmlatError(f"{src_name} and {dst_name} share only {len(common)} blocks; few-shot needs datasets "
                          f"of the same sampled blocks (same --seed) on both targets")
    rng = np.random.default_rng(seed)
    test_ids = set(rng.choice(common, size=int(0.3 * len(common)), replace=False))
    src_train = src[~src["block_id"].isin(test_ids)]
    make = partial(LinearPredictor, features=features)
    prior = make().fit(src_train, src_train["latency_ms_median"].to_numpy())
    prior_doc = predictor_document(prior, target={"name": src_name}, profile="default")
    test = dst[dst["block_id"].isin(test_ids)]
    pool = dst[~dst["block_id"].isin(test_ids)]
    as_prior = dst if dst_as_prior is None else dst_as_prior
    test_p, pool_p = as_prior.loc[test.index], as_prior.loc[pool.index]
    yt = test["latency_ms_median"].to_numpy()
    rows = []
    try:
        full = make().fit(pool, pool["latency_ms_median"].to_numpy())
        ref = accuracy(yt, full.predict(test))
    except Exception:  # noqa: BLE001 - too few new-target blocks for a model of its own
        ref = {"median_ape": float("nan"), "within10": float("nan")}
    prior_only = accuracy(yt, prior.predict(test_p))
    for n in [s for s in sizes if s <= len(pool)]:
        res = {"scratch": [], "adapted": []}
        for d in range(draws):
            tr = pool.sample(n=n, random_state=seed * 1000 + d)
            y = tr["latency_ms_median"].to_numpy()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    m = make().fit(tr, y)
                    res["scratch"].append(accuracy(yt, m.predict(test)))
                except Exception:  # noqa: BLE001 - too few samples for this model
                    pass
            a = AdaptedPredictor(prior={"kind": "linear", "model": prior_doc["model"]}).fit(pool_p.loc[tr.index], y)
            res["adapted"].append(accuracy(yt, a.predict(test_p)))
        for model, accs in res.items():
            if accs:
                rows.append({"pair": f"{src_name} -> {dst_name}", "n_new": n, "model": model,
                             "median_ape": float(np.median([a["median_ape"] for a in accs])),
                             "within10": float(np.median([a["within10"] for a in accs])), "draws": len(accs)})
    rows.append({"pair": f"{src_name} -> {dst_name}", "n_new": len(pool), "model": "scratch, all",
                 "median_ape": ref["median_ape"], "within10": ref["within10"], "draws": 1})
    rows.append({"pair": f"{src_name} -> {dst_name}", "n_new": 0, "model": "prior alone",
                 "median_ape": prior_only["median_ape"], "within10": prior_only["within10"], "draws": 1})
    return rows


def write_report(res: AblationResult, out: Path, title: str) -> list[Path]:
    """report.md, CSVs, and PNG plots (predicted vs measured, error CDF, learning curve)."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    res.metrics.to_csv(out / "metrics.csv", index=False)
    res.predictions.drop(columns=[c for c in res.predictions if str(c).startswith(SHARE_PREFIX)]).to_csv(
        out / "predictions.csv", index=False)
    res.curve.to_csv(out / "learning_curve.csv", index=False)
    files += [out / "metrics.csv", out / "predictions.csv", out / "learning_curve.csv"]
    for frame, name in ((res.few_shot, "few_shot"), (res.other, "memory_energy"), (res.families, "families"),
                        (res.repeatability, "repeatability"), (res.shots, "family_shots")):
        if not frame.empty:  # a part the run had nothing for writes no file
            frame.to_csv(out / f"{name}.csv", index=False)
            files.append(out / f"{name}.csv")
    fams = res.families
    files += _plots(res, out)
    cols = ["model", "split", "median_ape", "median_ape_ge1ms", "median_ape_lt1ms", "within5", "within10", "mape",
            "rmspe", "spearman", "r2_log", "worst_x", "cov90", "width90", "fit_s", "predict_s_per_1e6"]
    table = res.metrics[cols].copy()
    for c in ("within5", "within10", "cov90"):
        table[c] = (100 * table[c]).round(0)
    curve = (res.curve.groupby(["model", "n_train"])["median_ape"].median().unstack("n_train").round(1)
             if not res.curve.empty else pd.DataFrame())
    md = [f"# {title}", "",
          "Median APE and MAPE/RMSPE in %, within-5/10 and 90%-interval coverage in % of blocks, width90 = "
          "(high - low) / predicted of the 90% conformal interval, fit time in s, predict time in s per 10^6 blocks.",
          "", md_table(table), ""]
    if not res.repeatability.empty:
        md += ["## How well the timings agree with themselves", "",
               "The measurement's share of any predictor's error. `odd vs even rounds`: within each campaign, a "
               "block's odd and even interleaved rounds, two half-campaigns. `across campaigns`: a block measured "
               "in several campaigns (each campaign's speed divided out), one timing against the block's mean, "
               "scaled to one timing's distance from its true time. Median |deviation| in %, within +-5/10 in % "
               "of timings; compare with the models' within10.", "", md_table(res.repeatability.round(2)), ""]
    if not fams.empty:
        md += ["## Held-out families", "",
               "Each family predicted by the models fitted without it: % of its blocks within +-10 % "
               "(families.csv has the median APE and the 90% intervals' coverage of each family too).", "",
               md_table(family_columns(fams, " +-10%").round(0)), ""]
        c = family_columns(fams, " cov90%")
        if c.shape[1] > 2:
            md += ["Whether the 90% intervals hold family by family (% of each held-out family's blocks inside "
                   "the interval sized from the other families; the table above cov90 is over all of them):", "",
                   md_table(c.round(0)), ""]
    if not res.shots.empty:
        md += ["## A new family, and a few of its blocks", "",
               f"Each family with its test blocks (all but {max(SHOTS)} of its blocks, in 3 random draws) predicted "
               f"by the model fitted without it (k=0), then with k of its other blocks in the calibration, each "
               f"counted {SHOT_WEIGHT} times: % of the test blocks within +-10 % (median APE %). What measuring a "
               "few blocks of a new family buys (`family_shots.csv`: every test prediction).", "",
               md_table(shots_table(res.shots)), "", "![a new family](family_shots.png)", ""]
    md += ["## Learning curve (median APE %, 30% fixed test split, median of 5 draws)", "",
           md_table(curve.reset_index()) if not curve.empty else "(no data)", "",
           "![predicted vs measured](pred_vs_measured.png)", "", "![error CDF](error_cdf.png)", "",
           "![learning curve](learning_curve.png)", ""]
    if not res.other.empty:
        t = res.other[["quantity", "split", "n", "median_ape", "within10", "mape", "spearman"]].copy()
        t["within10"] = (100 * t["within10"]).round(0)
        md += ["## Memory and energy models", "",
               "The same splits for the other quantities this dataset measured (memory: TVM's planned peak, "
               "`tvmlat memory`; energy: `--power`). Median APE and MAPE in %, within +-10 % in % of blocks.", "",
               md_table(t), ""]
    if not res.few_shot.empty:
        md += ["## Few-shot adaptation from other targets", "",
               "Median APE % (and share within +-10 %) on 30 % of this target's blocks held out, vs. the number of "
               "this target's own samples: `scratch` = the linear model on those samples alone, `adapted` = the "
               "other target's linear predictor mapped with them (`calibrate --from`); median over random draws.", "",
               md_table(few_shot_table(res.few_shot)), "", "![few-shot](few_shot.png)", ""]
    (out / "report.md").write_text("\n".join(md))
    files.append(out / "report.md")
    return files


def md_table(df: pd.DataFrame) -> str:
    """A GitHub markdown table (numbers to 3 significant digits), without extra dependencies."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "-" if np.isnan(v) else f"{v:.3g}"
        return str(v)
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def _plots(res: AblationResult, out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    files = []
    p = res.predictions[res.predictions["split_kind"] == "family"]
    if p.empty:
        p = res.predictions
    models = list(dict.fromkeys(p["model"]))
    ncol = min(4, len(models))  # a grid of at most four panels a row: eight models stay readable
    nrow = -(-len(models) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.6 * nrow), squeeze=False)
    for ax in axes.flat[len(models):]:
        ax.set_visible(False)
    for ax, m in zip(axes.flat, models):
        g = p[p["model"] == m]
        ax.loglog(g["measured"], g["predicted"], ".", alpha=0.6)
        lo, hi = g[["measured", "predicted"]].min().min(), g[["measured", "predicted"]].max().max()
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="g", alpha=0.15)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("measured (ms)")
    for row in axes:
        row[0].set_ylabel("predicted, held-out family (ms)")
    fig.tight_layout()
    fig.savefig(out / "pred_vs_measured.png", dpi=110)
    files.append(out / "pred_vs_measured.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for m in models:
        g = p[p["model"] == m]
        e = np.sort(np.abs(g["predicted"] / g["measured"] - 1) * 100)
        ax.plot(e, np.arange(1, len(e) + 1) / len(e), label=m)
    ax.axvline(10, color="k", lw=0.6, ls="--")
    files.append(_finish_log_x(plt, fig, ax, "absolute percentage error (%)", "share of blocks",
                               "error CDF, held-out families", out / "error_cdf.png"))

    if not res.curve.empty:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for m, g in res.curve.groupby("model", sort=False):
            med = g.groupby("n_train")["median_ape"].median()
            ax.plot(med.index, med.values, "o-", label=m)
        files.append(_finish_log_x(plt, fig, ax, "calibration blocks", "median APE on test split (%)",
                                   "learning curve", out / "learning_curve.png",
                                   ticks=sorted(res.curve["n_train"].unique())))
    if not res.shots.empty:
        fig, ax = plt.subplots(figsize=(6, 4))
        t = shots_stats(res.shots).reset_index()
        for m, g in t.groupby("model", sort=False):
            held = g[(g["method"] == "held") & (g["k"] == 0)]["hit"]
            fitted = g[g["method"] != "held"].set_index("k")["hit"]
            ax.plot([0, *fitted.index], [*held, *fitted.values], "o-", label=m)
        ax.set_xticks(sorted(t["k"].unique()))
        ax.set_xlabel(f"blocks of the new family in the calibration (each counted {SHOT_WEIGHT} times)")
        ax.set_ylabel("its test blocks within +-10 % (%)")
        ax.set_title("a family the calibration had not seen")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "family_shots.png", dpi=110)
        plt.close(fig)
        files.append(out / "family_shots.png")
    if not res.few_shot.empty:
        fig, ax = plt.subplots(figsize=(6, 4))
        fs = res.few_shot[res.few_shot["model"].isin(["scratch", "adapted"])]
        scratch_drawn = False  # the scratch curve is the same for every prior (same test split): draw it once
        for (pair, model), g in fs.groupby(["pair", "model"], sort=False):
            if model == "scratch" and scratch_drawn:
                continue
            g = g.sort_values("n_new")
            label = f"prior {pair.split(' -> ')[0]}, adapted" if model == "adapted" else "from scratch (no prior)"
            ax.plot(g["n_new"], g["median_ape"], "o-" if model == "adapted" else "ks--", label=label)
            scratch_drawn = scratch_drawn or model == "scratch"
        dst = fs["pair"].iloc[0].split(" -> ")[1]
        files.append(_finish_log_x(plt, fig, ax, f"samples of {dst}", "median APE on its held-out blocks (%)",
                                   f"few-shot adaptation to {dst}", out / "few_shot.png",
                                   ticks=sorted(fs["n_new"].unique())))
    return files


def few_shot_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (pair, model), one column per number of new samples: median APE % (within +-10 %)."""
    t = rows.assign(cell=[f"{a:.1f} ({100 * w:.0f} %)" for a, w in zip(rows["median_ape"], rows["within10"])])
    grid = t[t["model"].isin(["scratch", "adapted"])].pivot_table(index=["pair", "model"], columns="n_new",
                                                                    values="cell", aggfunc="first")
    grid.columns = [f"n={c}" for c in grid.columns]
    ref = t[~t["model"].isin(["scratch", "adapted"])]
    refs = ref.assign(label=[f"{m} (n={n})" for m, n in zip(ref["model"], ref["n_new"])])
    extra = refs.pivot_table(index="pair", columns="label", values="cell", aggfunc="first")
    return grid.reset_index().merge(extra.reset_index(), on="pair", how="left")


def _finish_log_x(plt, fig, ax, xlabel: str, ylabel: str, title: str, path: Path, ticks=None) -> Path:
    """Log x axis (``ticks``: the values drawn, labelled as plain numbers, not 2x10^1), labels, legend,
    title; save to ``path`` and close."""
    ax.set_xscale("log")
    if ticks is not None:
        ax.set_xticks(ticks, [str(v) for v in ticks])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
