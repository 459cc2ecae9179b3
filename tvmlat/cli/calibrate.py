"""`tvmlat calibrate`: sample blocks, measure them on a target, fit and evaluate a predictor."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import List, Optional

import typer

from ..dataset import CampaignWriter, dataset_hash, model_ref_record, ok_rows, versions
from ..errors import TvmlatError
from ..features import FEATURES_VERSION
from ..predictors.counted import OWN_WEIGHT, check_weight, recorded_counts, times
from . import app
from .common import CHAIN_OVERLAP_HELP, RPC_KEY_HELP, TRACKER_HELP, check_seed, console, make_runner, provenance, resolve_target


@app.command("calibrate")
def calibrate_cmd(
    target: str = typer.Option("llvm", "--target", "-t", help="target name (see `tvmlat targets`) or a .toml path"),
    profile: Optional[str] = typer.Option(None, "--profile", help="compile profile: default | tuned [the target file's]"),
    trials: Optional[int] = typer.Option(None, "--trials", help="tuned profile: MetaSchedule trials per kernel "
                                                               "[the target file's [tuning] trials_per_task]"),
    samples: int = typer.Option(100, "--samples", "-n",
                                help="number of sampled calibration blocks (0 with --with: only yours)"),
    seed: int = typer.Option(0, "--seed", help="sampler seed: same seed, same blocks"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for dataset and predictor [datasets/<target>]"),
    campaign: Optional[str] = typer.Option(None, "--campaign", help="campaign name [calib-<cpu>-n<samples>-s<seed>]"),
    families: Optional[str] = typer.Option(None, "--families", help="comma-separated families [all]"),
    planes: str = typer.Option("default", "--planes",
                               help="plane sizes of the image blocks: default (7-112 px, networks at 224 px), pow2 "
                                    "(8-128 px: at 32, 128 or 256 px) or both"),
    features: str = typer.Option("loops", "--features", help="feature set of the linear model: loops | ops | published"),
    model: str = typer.Option("linear", "--model", help="linear | linear+xgb (XGBoost on the linear residual) | xgb"),
    overlap: bool = typer.Option(True, "--overlap/--no-overlap",
                                 help="compile the next block in a worker process while timing this one"),
    compile_workers: Optional[int] = typer.Option(None, "--compile-workers",
                                                  help="compile worker processes, ~0.5 GB each [one per core, at most "
                                                       "4, with interleaved rounds; else 1; $TVMLAT_COMPILE_WORKERS]"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
    tracker: Optional[str] = typer.Option(None, "--tracker", help=TRACKER_HELP),
    rpc_key: Optional[str] = typer.Option(None, "--rpc-key", help=RPC_KEY_HELP),
    arch: Optional[str] = typer.Option(None, "--arch", help="CUDA architecture, e.g. sm_90 [the GPU here]"),
    power: bool = typer.Option(False, "--power", help="also measure power and energy per inference (NVIDIA, NVML)"),
    prior: Optional[Path] = typer.Option(None, "--from", help="few-shot: adapt this predictor of another target "
                                                                "with the new samples (then --samples 10 is enough)"),
    tune_budget: Optional[str] = typer.Option(None, "--tune-budget",
                                              help="tuned profile: stop tuning new blocks after this much tuning "
                                                   "time, e.g. 30m, 2h, 900s (resume later to continue)"),
    with_refs: Optional[List[str]] = typer.Option(None, "--with", help="MODEL_REF (path/file.py:NAME) of your own "
                                                  "blocks, e.g. of a family the sampler lacks: measured in the same "
                                                  "interleaved rounds as the sampled blocks and fitted with them, "
                                                  "as family NAME (repeatable)"),
    with_weight: Optional[int] = typer.Option(None, "--with-weight",
                                              help="how many times each of your --with blocks counts in the fit [3: "
                                                   "better than once for the family's other blocks]"),
    chain_overlap: Optional[str] = typer.Option(None, "--chain-overlap", help=CHAIN_OVERLAP_HELP),
    cache: bool = typer.Option(True, "--cache/--no-cache",
                               help="reuse compiled blocks from the compile cache ($TVMLAT_CACHE or ~/.cache/tvmlat)"),
) -> None:
    """Measure a seeded sample of blocks on TARGET, fit the linear predictor, print it and its accuracy.

    Resumable: running the same command again skips blocks already in the dataset.
    """
    from ..blocks import FAMILIES, PLANES, log10_span, sample_specs  # here: blocks and measure import torch
    from ..measure import run_campaign, spec_workloads
    from .fit import fit_and_report, make_model_factory, parse_chain_overlap

    make_model_factory(model, features)  # a bad --model/--features fails now, not after measuring
    chain = parse_chain_overlap(chain_overlap, features, prior)
    budget_s = parse_duration(tune_budget) if tune_budget else None
    prior_doc = None
    if prior is not None:
        from ..predictors.io import load_predictor

        prior_doc = load_predictor(prior).doc
    if samples < 0:
        raise TvmlatError(f"--samples {samples} is negative; give how many blocks to sample (0 with --with: only yours)")
    check_seed(seed)
    if campaign is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+=-]*", campaign):
        raise TvmlatError(f"--campaign {campaign!r}: name the campaign's files with letters, digits and . _ + = - "
                          "(no '/', not empty); choose their folder with --out")
    if samples == 0 and families:
        raise TvmlatError("--families chooses the families of the sampled blocks, and --samples 0 samples none; "
                          "give --samples N or leave --families out")
    fams = list(dict.fromkeys(f.strip() for f in families.split(","))) if families else None  # a name given twice: once
    if planes not in PLANES:
        raise TvmlatError(f"--planes {planes!r}: choose {', '.join(PLANES)} (the plane sizes image blocks are drawn "
                          "from)")
    if fams and [f for f in fams if f not in FAMILIES]:
        raise TvmlatError(f"unknown families {[f for f in fams if f not in FAMILIES]}; known: {', '.join(FAMILIES)}")
    with_refs = list(dict.fromkeys(with_refs or []))  # the same reference twice is once
    if with_weight is not None and not with_refs:
        raise TvmlatError("--with-weight counts your --with blocks; give --with path/file.py:NAME, or leave it out")
    weight = check_weight(OWN_WEIGHT if with_weight is None else with_weight)
    own = _own_blocks(with_refs)  # a bad MODEL_REF fails now, before anything is measured or written
    least = 3 if prior_doc else 12
    if samples + len(own) < least:  # your own blocks count towards the blocks a fit needs
        if own:
            raise TvmlatError(f"--samples {samples} and {len(own)} blocks of your own are too few to fit and evaluate "
                              f"a predictor; use at least {least} in all (--samples {least - len(own)} or more)")
        raise TvmlatError(f"--samples {samples} is too few to fit and evaluate a predictor; use at least {least}"
                          + ("" if prior_doc else " (or adapt another target's with --from)"))
    t = resolve_target(target, profile, tracker, rpc_key, arch)
    if trials is not None:
        t = t.with_trials(trials)
    out = out or Path("datasets") / (f"{t.name}-{t.arch}" if t.kind == "cuda" else t.name)
    tag = "" if t.profile == "default" else f"-{t.profile}{t.tuning.trials_per_task}"
    # own blocks make another campaign: added to an earlier one, they would be timed in another host state
    own_families = {w.family: weight for w in own}
    tag += "" if planes == "default" else f"-{planes}"  # another draw of blocks: another campaign
    name = campaign or (f"calib-{t.mcpu or t.arch or 'generic'}{tag}-n{samples}-s{seed}"
                        + "".join(f"-with-{fam}" for fam in own_families))
    path = out / f"{name}.parquet"
    con = console()
    specs = sample_specs(samples, seed=seed, families=fams, planes=planes)
    clash = sorted({w.key for w in own} & {s.block_id for s in specs})
    if clash:
        raise TvmlatError(f"--with: entries {clash[:3]} are named like sampled blocks; rename them")
    geometry = t.geometry()  # run_campaign counts the rows' features for this L1; meta.json and the predictor record it
    meta = {"target_name": t.name, "target": t.to_dict(), "profile": t.profile, "versions": versions(),
            **provenance(t), "sampler": {"seed": seed, "samples": samples, "families": fams or list(FAMILIES),
                                     **({"planes": planes} if planes != "default" else {})},
            "evaluator": t.evaluator.__dict__, "command": "calibrate", "features_version": FEATURES_VERSION,
            "compile_overlap": overlap, "cache_geometry": geometry.to_dict(),
            # where the own blocks' rows come from: a later features version recounts them from it
            **({"model_refs": [model_ref_record(r) for r in with_refs], "own_families": own_families} if own else {})}
    # the runner first: a target this machine can't measure fails before anything is written
    # tuned kernels are multi-threaded, and tuning itself uses both cores: no overlap for them
    runner = make_runner(t, overlap=overlap and t.profile == "default", power=power, cache=cache,
                         workers=compile_workers)
    try:
        writer = CampaignWriter(path, meta)
    except BaseException:
        getattr(runner, "close", lambda: None)()
        raise
    keys = {s.block_id for s in specs} | {w.key for w in own}
    already = len(writer.done_ids() & keys)
    where = f", over RPC key {t.rpc.key!r} at {t.rpc.tracker}" if t.remote else ""
    device = (f"arch={t.arch}" if t.kind == "cuda"
              else f"mcpu={t.mcpu or 'generic'}, {t.cores} cores, {geometry.describe()}")
    con.print(f"[bold]calibrating[/] {t.name} ({t.kind}, {device}, "
              f"profile {t.profile}{where}): {samples} blocks, seed {seed}"
              + (f", and {len(own)} of your own ({', '.join(own_families)}, counted {times(weight)} in the fit)"
                 if own else "")
              + f" -> {path}"
              + (f" (resuming: {already} already measured)" if already else ""))
    late = [f for f in own_families if f not in recorded_counts(writer.previous_meta)]
    if late and already:  # a --campaign named after a campaign measured without them: one host state no more
        con.print(f"[yellow]note:[/] {path.name} was measured before without your {', '.join(late)} blocks; they are "
                  f"timed now, in another host state than its {already} earlier blocks. Give another --campaign "
                  f"name to time them all together")
    if budget_s is not None and t.profile != "tuned":
        con.print("[yellow]note:[/] --tune-budget applies to the tuned profile only; ignored")
        budget_s = None

    t0 = time.perf_counter()
    workloads = spec_workloads(specs) + own
    tuning = None
    try:
        if t.profile == "tuned":
            # tune every new block's kernels first (deduplicated across blocks), then measure with
            # nothing else running: tuning in the background would disturb the timings
            from ..tuning import tune_ahead

            done = writer.done_ids()
            todo = [w for w in workloads if w.key not in done]
            if todo:
                tuning = tune_ahead(todo, t, budget_s=budget_s, console=con, show_progress=progress)
                con.print(tuning_report(tuning))
                workloads = [w for w in workloads if w.key not in tuning["tasks_of"] or w.key in tuning["ready"]]
        new = run_campaign(workloads, runner, t, writer, show_progress=progress, console=con)
    finally:
        getattr(runner, "close", lambda: None)()
    wall = time.perf_counter() - t0
    df = writer.df[writer.df["block_id"].isin(keys)]
    good = ok_rows(df)
    # a run that measured nothing (all done, the predictor refitted) keeps the wall time of the run that did
    writer.finish(**({"wall_s_last_run": round(wall, 2)} if new else {}),
                  **({"tuning_last_run": {k: v for k, v in tuning.items() if k not in ("ready", "tasks_of")}}
                     if tuning is not None else {}))
    failed = len(df) - len(good)
    con.print(time_report(new, wall))
    why = tuning["stopped"] if tuning is not None else ""
    if why:
        con.print(f"[yellow]stopped early:[/] {why}; {len(df)} of {len(keys)} blocks are measured. "
                  f"Run the same command again (with a budget) to continue.")
        if len(good) < (3 if prior_doc else 12):
            raise TvmlatError(f"only {len(good)} blocks measured so far, too few to fit; run again to continue")
    this_run = f"all {len(df)} this run" if len(new) == len(df) else f"{len(new)} of them this run"
    con.print(f"{len(df)} blocks measured ({this_run}, {wall:.1f} s; {failed} failed); median CoV "
              f"{100 * good['latency_cov'].median():.2f} %, median CI of the median +-{100 * good['ci_rel'].median():.2f} %, "
              f"latency {good['latency_ms_median'].min():.4f}..{good['latency_ms_median'].max():.1f} ms "
              f"({log10_span(good['latency_ms_median']):.1f} decades)")
    con.print(rounds_report(good))
    pred_path = out / f"{name}.predictor.json"
    from ..plots import have_matplotlib

    plot = out / f"{name}.accuracy.png" if have_matplotlib() else None  # next to the predictor, when it can be drawn
    fit_and_report(good, features=features, target=t.to_dict(), profile=t.profile,
                   dataset_hash=dataset_hash(path), out=pred_path, con=con, model=model, prior=prior_doc,
                   geometry=geometry, plot=plot, counted=own_families, chain_overlap=chain,
                   model_refs=[model_ref_record(r) for r in with_refs] if own else None)


def _own_blocks(refs: list[str]) -> list:
    """Workloads of the blocks ``--with`` names: every entry of each MODEL_REF, its family the ref's NAME."""
    from ..blocks import FAMILIES
    from ..measure import module_workloads
    from ..modelref import load_model_ref

    own, seen = [], {}
    for ref in refs:
        if ref.startswith("torchvision:") or ":" not in ref:
            raise TvmlatError(f"--with {ref}: give your blocks as path/file.py:NAME (NAME, the callable that returns "
                              "them, names their family)")
        family = ref.rpartition(":")[2]
        if family in FAMILIES:
            raise TvmlatError(f"--with {ref}: {family!r} is a family the sampler already draws; name the callable "
                              "after your blocks' own family")
        for w in module_workloads(load_model_ref(ref), family=family):
            if w.key in seen:
                raise TvmlatError(f"--with: the entry {w.key!r} comes from both {seen[w.key]} and {ref}; rename one")
            seen[w.key] = ref
            own.append(w)
    return own


def rounds_report(good) -> str:
    """One line on the interleaved rounds: how many, and how well each block's two halves agree."""
    import numpy as np

    r = good["rounds"].fillna(0) if "rounds" in good else None
    if r is None or not (r > 0).any():
        return "repeats: back to back per block (no interleaved rounds)"
    done = good[r > 0]
    moved = np.abs(np.log(done["latency_ms_first"].to_numpy(float) / done["latency_ms_median"].to_numpy(float)))
    return (f"repeats: {int(done['rounds'].median())} interleaved rounds per block ({len(done)} of {len(good)} "
            f"blocks; CoV and CI are over those spread-out repeats); a block's odd and even rounds agree to "
            f"{100 * done['half_diff_rel'].median():.1f} % (median); the short back-to-back first pass (it only "
            f"picks each block's repeat length, timed while the next blocks compile) was {100 * float(np.median(moved)):.1f} "
            f"% off the result{drift_report(done)}")


def drift_report(done) -> str:
    """The range of the common drift divided out of the rounds (``round_drift``), or nothing."""
    import json

    import numpy as np

    if "round_drift" not in done:
        return ""
    lists = [json.loads(v) for v in done["round_drift"].dropna().unique()]
    if not lists:
        return "; too few blocks per chunk to divide out the machine's drift per round"
    f = np.concatenate([np.asarray(v, dtype=float) for v in lists])
    n = int(done["round_drift"].notna().sum())
    return (f"; the machine's speed per round, common to all blocks ({f.min():.2f}-{f.max():.2f}x their "
            f"median), is divided out ({n} of {len(done)} blocks)")


def parse_duration(text: str) -> float:
    """``30m``, ``2h``, ``900s``, ``1h30m`` or a bare number of minutes -> seconds."""
    import re

    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t) * 60
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", t)
    if not t or parts is None or not any(parts.groups()):
        raise TvmlatError(f"--tune-budget {text!r} is not a duration; use e.g. 30m, 2h, 1h30m or 900s")
    h, m, s = (float(x) if x else 0.0 for x in parts.groups())
    seconds = 3600 * h + 60 * m + s
    if seconds <= 0:
        raise TvmlatError(f"--tune-budget {text!r} must be longer than zero")
    return seconds


def tuning_report(r: dict) -> str:
    """One line on the tune-ahead phase: blocks, kernels, how many the shared database saved."""
    return (f"tuning: {r['blocks']} blocks have {r['tasks']} kernels, {r['unique']} distinct; "
            f"{r['already_tuned']} were in the shared database, {r['tuned']} tuned now in {r['tune_s']:.0f} s "
            f"(+{r['extract_s']:.0f} s extracting); {len(r['ready'])} blocks ready to measure")


def time_report(rows, wall: float) -> str:
    """Where this run's time went: tuning, building (export+import+compile), timing, the rest."""
    def total(col):  # a block from the compile cache cost no building (its stages are the original's)
        return sum(float(r.get(col) or 0) for r in rows if r.get(col) == r.get(col)
                   and (col == "measure_s" or r.get("cache_hit") != 1))

    tune, meas = total("tune_s"), total("measure_s")
    build = total("export_s") + total("import_s") + total("compile_s")
    hits = sum(1 for r in rows if r.get("cache_hit") == 1)
    parts = [f"tuning {tune:.0f} s" if tune else "", f"export+import+compile {build:.0f} s", f"timing {meas:.0f} s"]
    note = f" ({hits} blocks from the compile cache)" if hits else ""
    return (f"time this run: {wall:.0f} s wall; " + ", ".join(p for p in parts if p) + note
            + " (summed per block; compile-ahead overlaps building with timing)")
