"""`tvmlat ablation`: linear vs tree predictors on identical splits, with a learning curve and a report."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..dataset import concat_datasets, ok_rows
from ..errors import TvmlatError
from . import app
from .common import Format, console, emit


@app.command("ablation")
def ablation_cmd(
    dataset: List[Path] = typer.Option(..., "--dataset", "-d", help="dataset parquet file(s)"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for report.md, CSVs and PNG plots"),
    draws: int = typer.Option(5, "--draws", help="random training draws per learning-curve point"),
    xgb: bool = typer.Option(True, "--xgb/--no-xgb", help="include the XGBoost models"),
    few_shot_from: Optional[List[Path]] = typer.Option(None, "--few-shot-from",
                                                       help="dataset(s) of other targets, same blocks: add the few-shot "
                                                            "table (this target from N samples, with and without "
                                                            "their predictor as prior)"),
    campaign_speed: bool = typer.Option(True, "--campaign-speed/--no-campaign-speed",
                                        help="several datasets: divide each campaign's host speed out (per split, "
                                             "from its training rows)"),
    family_shots: bool = typer.Option(True, "--family-shots/--no-family-shots",
                                      help="add a held-out family's curve with 1-5 of its blocks in the calibration "
                                           "(linear-loops and its residual; ~20 s per 1,000 rows with the tree)"),
    fmt: Format = typer.Option(Format.table, "--format", "-f"),
) -> None:
    """Compare linear (published / two-segment / per-op-class), XGBoost alone and linear + XGBoost
    residual on the same random 5-fold and leave-one-family-out splits."""
    from ..ablation import SHOT_WEIGHT, family_columns, model_zoo, run_ablation, write_report
    from ..campaigns import describe, lone_note
    from ..dataset import read_meta
    from ..predictors.counted import recorded_counts, times

    if draws < 1:
        raise TvmlatError(f"--draws {draws}: give how many random training draws each learning-curve point averages, "
                          "1 or more [5]")
    df = ok_rows(concat_datasets(dataset))
    if len(df) < 20:
        raise TvmlatError(f"only {len(df)} measured blocks in the dataset(s); the ablation needs at least 20")
    con = console()
    df = _chosen_core(df, dataset, con, campaign_speed)
    with con.status("fitting") as status:
        res = run_ablation(df, model_zoo(with_xgb=xgb), draws=draws, campaign_speed=campaign_speed,
                           shot_models=None if family_shots else (),
                           progress=lambda m: status.update(f"cross-validating {m}"))
    own = {f: w for p in dataset for f, w in recorded_counts(read_meta(p), str(p)).items() if w != 1}
    if own:  # (the shots of family_shots would count again on top of a weight here: the models count each row once)
        ws = sorted(set(own.values()))
        con.print(f"note: the models here count each block once, your own ({', '.join(own)}) too; the predictor "
                  f"`calibrate --with` fitted counts them {times(ws[0]) if len(ws) == 1 else '/'.join(map(str, ws))} "
                  f"(--with-weight)" + (f"; the new-family table below shows what counting a family's blocks "
                                        f"{times(SHOT_WEIGHT)} buys" if family_shots else ""))
    if res.campaign_speeds is not None:
        con.print(describe(res.campaign_speeds) + " (all rows; each split estimates its own)")
        lone = lone_note(df)
        if lone:
            from rich.markup import escape

            con.print(f"[yellow]{escape(lone)}[/]")
    if few_shot_from:
        from ..ablation import few_shot_pair
        from ..dataset import dataset_label

        here = dataset_label(dataset[0])
        rows = []
        with con.status("few-shot") as status:
            for other in few_shot_from:
                name, dst = dataset_label(other), here
                if name == here:  # the same target and chip: tell the two campaigns apart by their files
                    name, dst = f"{name} ({other.stem})", f"{here} ({dataset[0].stem})"
                status.update(f"few-shot from {name}")
                src, as_prior = _few_shot_rows(other, df, dataset, con, name)
                rows += few_shot_pair(src, df, name, dst, draws=draws * 2, dst_as_prior=as_prior)
        import pandas as pd

        res.few_shot = pd.DataFrame(rows)
    cols = ["model", "split", "median_ape", "median_ape_ge1ms", "median_ape_lt1ms", "within5", "within10", "mape",
            "rmspe", "spearman", "r2_log", "worst_x", "cov90", "width90", "fit_s", "predict_s_per_1e6"]
    if fmt == Format.table:  # the terminal gets the columns that fit; the report and CSV have all of them
        short = {"median_ape": "medAPE%", "median_ape_ge1ms": ">=1ms", "median_ape_lt1ms": "<1ms",
                 "within10": "+-10%", "mape": "MAPE%", "spearman": "rho", "worst_x": "worst x", "cov90": "cov90", "width90": "width90",
                 "fit_s": "fit_s", "predict_s_per_1e6": "s/1e6 pred"}
        recs = [{"model": r["model"], "split": r["split"].replace("held-out families", "LOFO"),
                 **{v: (100 * r[k] if k in ("within10", "cov90") else r[k]) for k, v in short.items()}}
                for r in res.metrics.to_dict("records")]
        emit(recs, fmt, ["model", "split", *short.values()], title=f"ablation on {len(df)} blocks "
             "(LOFO = leave-one-family-out; % of blocks for +-10% and cov90)")
    else:
        emit(res.metrics.to_dict("records"), fmt, cols, title="ablation")
    if fmt == Format.table and not res.repeatability.empty:
        for r in res.repeatability.to_dict("records"):
            con.print(f"timings against themselves, {r['what']}: {r['within10']:.0f} % within +-10 % "
                      f"(median {r['median_dev_pct']:.1f} %; {r['timings']} timings of {r['blocks']} blocks): the "
                      "measurement's part of the errors above")
    fams = res.families
    if fmt == Format.table and not fams.empty:
        t = family_columns(fams, " +-10%")
        cov = "linear-loops cov90%"  # the default model's intervals, family by family
        if cov in fams:
            t["cov90 (loops)"] = fams[cov]
        emit(t.to_dict("records"), Format.table, list(t.columns),
             title="held-out families: % of each family's blocks within +-10 %, fitted without that family "
                   "(cov90: % inside linear-loops' 90 % interval)")
    if fmt == Format.table and not res.curve.empty:
        curve = res.curve.groupby(["model", "n_train"])["median_ape"].median().unstack("n_train")
        rows = [{"model": m, **{str(k): float(v) for k, v in r.items()}} for m, r in curve.iterrows()]
        emit(rows, Format.table, ["model", *map(str, curve.columns)],
             title="learning curve: median APE % on a fixed 30% test split vs. calibration blocks")
    if fmt == Format.table and not res.shots.empty:
        from ..ablation import shots_table

        t = shots_table(res.shots)
        emit(t.to_dict("records"), Format.table, list(t.columns),
             title=f"a new family: % of its test blocks within +-10 % (median APE %) with k of its blocks in the "
                   f"calibration, each counted {SHOT_WEIGHT} times (k=0: held out)")
    if fmt == Format.table and not res.other.empty:
        recs = [{**r, "within10": 100 * r["within10"]} for r in res.other.to_dict("records")]
        emit(recs, Format.table, ["quantity", "split", "n", "median_ape", "within10", "mape", "spearman"],
             title="memory and energy models on the same splits (median APE %, % within +-10 %)")
    if fmt == Format.table and not res.few_shot.empty:
        from ..ablation import few_shot_table

        t = few_shot_table(res.few_shot)
        emit(t.to_dict("records"), Format.table, list(t.columns),
             title="few-shot: median APE % (within +-10 %) on this target's held-out blocks vs. its own samples")
    if out is not None:
        files = write_report(res, out, f"tvmlat ablation: {', '.join(p.name for p in dataset)}")
        con.print("report: " + ", ".join(str(f) for f in files))


def _few_shot_rows(other, df, paths, con, name: str):
    """(``other``'s rows counted for the core's parameters its own fit chooses (chain overlap, thrash reach), as `fit`
    would count them; ``df``'s rows (of ``paths``) counted with those): a prior fitted on ``other`` prices what its own
    parameters count, so the few-shot models adapting it count the new target's rows with them, as `calibrate --from`
    does."""
    from ..dataset import datasets_geometry, datasets_model_refs
    from ..loop_features import stamped_geometry
    from ..overlap import choose_core, counted_with_core

    src = ok_rows(concat_datasets([other]))
    geometry, src, _ = choose_core(src, datasets_geometry([other]), src["latency_ms_median"],
                                   model_refs=datasets_model_refs([other]))
    here = stamped_geometry(df) or datasets_geometry(paths)
    same = geometry.core == here.core
    said = lambda g: f"chain overlap {g.chain_overlap}, thrash reach {g.thrash_lines} lines"  # noqa: E731
    con.print(f"few-shot from {name}: its own fit counts with {said(geometry)}; the model adapted from it counts this "
              f"target's blocks with them" + ("" if same else f" (this target's own fits with {said(here)})"))
    return src, counted_with_core(df, here, geometry, datasets_model_refs(paths))[1]


def _chosen_core(df, paths, con, campaign_speed: bool = True):
    """``df`` counted for the core's parameters the fit chooses on all of its rows (chain overlap and thrash reach,
    features versions 23 and 24, as `fit` and `calibrate` choose them; with ``campaign_speed``, each campaign's speed
    divided out first, as the ablation does), which every model here then counts with."""
    from ..campaigns import campaign_count, campaign_speeds, divided
    from ..dataset import datasets_geometry, datasets_model_refs
    from ..loop_features import stamp_geometry
    from ..overlap import choose_core, describe_choice

    y = df["latency_ms_median"]
    if campaign_speed and campaign_count(df) > 1:
        y = divided(df, y, campaign_speeds(df, y))
    geometry, df, losses = choose_core(df, datasets_geometry(paths), y, model_refs=datasets_model_refs(paths))
    con.print(describe_choice(geometry, losses) + "; every model here counts with them")
    return stamp_geometry(df, geometry)

