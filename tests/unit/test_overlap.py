"""Features version 23: the chain overlap a fit chooses (tvmlat.overlap) and what the CLI does with it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from helpers import assert_user_error, run_cli
from tvmlat.blocks import sample_specs
from tvmlat.features import features_frame
from tvmlat.loop_features import CHAIN_OVERLAP, THRASH_LINES, CacheGeometry
from tvmlat.overlap import OVERLAP_GRID, THRASH_SLACK, choose_core, fit_loss, thrash_candidates

ZEN5 = CacheGeometry(64, 12, 64, l2=2**20)
#: ns per unit of the AMD Zen 5 200-block fit (the columns a sampled block's time mostly goes to)
PRICES = {"mac_excess": 0.83, "short_vec": 0.011, "short_scal": 0.046, "acts_rw": 0.089, "inp": 0.083,
          "mac_l1thrash": 1.44, "ew_slow": 0.38, "win_slow": 0.19, "w_matmul": 0.27, "red_chain": 0.35,
          "mac_l1thrash_far": 0.53}


def _campaign(overlap: int, n: int = 150, seed: int = 3, thrash: int = THRASH_LINES) -> tuple[pd.DataFrame, np.ndarray]:
    """Sampled blocks counted at the default overlap, timed (noise-free) as a host that hides ``overlap`` steps (and
    whose walks of up to ``thrash`` L1 lines thrash)."""
    specs = sample_specs(n, seed=seed)
    truth = features_frame(specs, geometry=ZEN5.with_overlap(overlap, thrash))
    y = 0.002 + sum(truth[c].to_numpy(float) * p * 1e-6 for c, p in PRICES.items())
    rows = features_frame(specs, geometry=ZEN5).assign(status="ok", latency_ms_median=y)
    return rows, y


@pytest.mark.parametrize("overlap", [70, 140])
def test_the_fit_finds_the_overlap_the_host_hides(overlap):
    rows, y = _campaign(overlap)
    geometry, counted, losses = choose_core(rows, ZEN5, y)
    assert geometry == ZEN5.with_overlap(overlap) and geometry.chain_overlap == overlap
    assert thrash_candidates(ZEN5) == (16, 24, 48)  # a 12-way L1: 16, what versions 8-23 counted, two and four sets
    assert sorted(losses) == sorted((a, t) for a in OVERLAP_GRID for t in (16, 24, 48))
    # the reach past 16 lines buys (next to) nothing on a host whose walks past 16 lines do not thrash: not taken
    assert losses[overlap, THRASH_LINES] <= min(losses.values()) * (1 + THRASH_SLACK)
    # the rows come back counted for it: a chain of the chosen overlap, not the default's
    assert (counted["mac_excess"] == features_frame(sample_specs(150, seed=3), geometry=geometry)["mac_excess"]).all()
    other = 140 if overlap == 70 else 70
    assert losses[other, THRASH_LINES] > losses[overlap, THRASH_LINES]
    assert (rows["mac_excess"].to_numpy() >= counted["mac_excess"].to_numpy()).all() or overlap == 70


@pytest.mark.parametrize("thrash", [24, 48])
def test_the_fit_finds_how_far_the_hosts_walks_thrash(thrash):
    """Version 24: a host whose walks of two (24 lines) or four sets (48) of its 12-way L1 thrash; the fit finds it
    with the overlap, records it, and counts the rows for it (their walks past 16 lines in mac_l1thrash_far)."""
    rows, y = _campaign(140, n=200, thrash=thrash)
    geometry, counted, losses = choose_core(rows, ZEN5, y)
    assert geometry.core == (140, thrash) and geometry.to_dict()["thrash_lines"] == thrash
    assert losses[140, thrash] < losses[140, THRASH_LINES]
    at16 = features_frame(sample_specs(200, seed=3), geometry=ZEN5.with_overlap(140))
    assert (counted["mac_l1thrash"] == at16["mac_l1thrash"]).all() and (at16["mac_l1thrash_far"] == 0).all()
    assert (counted["mac_l1thrash_far"] > 0).any()  # the walks past 16 lines, in their own column
    # an 8-way L1: two sets are 16 lines already, so it tries 16 and 32 only
    assert thrash_candidates(CacheGeometry(64, 8, 64)) == (16, 32)


def test_fit_loss_is_the_soft_l1_of_the_log_error():
    assert fit_loss([1.0, 2.0], [1.0, 2.0]) == 0.0
    # small errors: ~ (log ratio / 0.1)^2; large ones grow linearly, so an outlier does not drag the choice
    assert fit_loss([1.01], [1.0]) == pytest.approx(np.log(1.01) ** 2 / 0.01, rel=5e-3)
    assert fit_loss([np.e], [1.0]) == pytest.approx(2 * (np.sqrt(101) - 1))


def test_fit_records_the_chosen_or_given_overlap(tmp_path, fake_dataset, capsys):
    path, _ = fake_dataset
    code, out, err = run_cli(["fit", "-d", path, "-o", tmp_path / "auto.json"], capsys)
    assert code == 0, err
    assert "chain overlap" in out and "chosen by the fit over 40-200 steps and 16/32 lines" in out
    auto = json.loads((tmp_path / "auto.json").read_text())["cache_geometry"]
    assert auto.get("chain_overlap", CHAIN_OVERLAP) in OVERLAP_GRID
    code, out, err = run_cli(["fit", "-d", path, "-o", tmp_path / "150.json", "--chain-overlap", "150"], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "150.json").read_text())
    assert doc["cache_geometry"]["chain_overlap"] == 150 and "chosen by the fit at 150 steps and 16/32 lines" in out
    # prediction counts with the file's overlap: evaluate recounts the dataset for it and agrees with the fit
    code, out, err = run_cli(["evaluate", "-p", tmp_path / "150.json", "-d", path, "-f", "json"], capsys)
    assert code == 0, err
    assert json.loads(out)[0]["median_ape"] == pytest.approx(doc["training"]["metrics"]["in-sample"]["median_ape"])
    # the default overlap is not written down (files before version 23 have none and mean it)
    code, out, err = run_cli(["fit", "-d", path, "-o", tmp_path / "70.json", "--chain-overlap", "70"], capsys)
    assert code == 0, err
    assert "chain_overlap" not in json.loads((tmp_path / "70.json").read_text())["cache_geometry"]


@pytest.mark.parametrize("bad", ["0", "-3", "1001", "many", "7.5"])
def test_a_bad_chain_overlap_is_one_line_before_any_work(bad, tmp_path, fake_dataset, capsys):
    path, _ = fake_dataset
    assert_user_error(run_cli(["fit", "-d", path, "-o", tmp_path / "p.json", "--chain-overlap", bad], capsys),
                      f"--chain-overlap {bad!r}", "auto", "1 to 1000")
    assert not (tmp_path / "p.json").exists()


def test_a_chain_overlap_for_features_that_count_no_chains_is_one_line(tmp_path, fake_dataset, capsys):
    path, _ = fake_dataset
    assert_user_error(run_cli(["fit", "-d", path, "-o", tmp_path / "p.json", "--features", "ops", "--chain-overlap",
                               "100"], capsys), "--chain-overlap applies to the loops features", "--features ops")
    code, out, err = run_cli(["fit", "-d", path, "-o", tmp_path / "ops.json", "--features", "ops"], capsys)
    assert code == 0, err
    assert "chain overlap" not in out and "chain_overlap" not in json.loads((tmp_path / "ops.json").read_text())[
        "cache_geometry"]


def _fit_from(rows, prior, tmp_path, name):
    import io

    from rich.console import Console

    from tvmlat.cli.fit import fit_and_report

    out = tmp_path / f"{name}.json"
    text = io.StringIO()
    fit_and_report(rows, features="loops", target={"name": "zen5"}, profile="default", dataset_hash="", out=out,
                   con=Console(width=200, file=text), prior=prior, geometry=ZEN5)
    doc = json.loads(out.read_text())
    return doc["kind"], CacheGeometry.from_dict(doc["cache_geometry"]).chain_overlap, text.getvalue()


def test_calibrate_from_counts_the_rows_with_the_overlap_of_the_model_it_keeps(tmp_path):
    """`calibrate --from`: a prior's prices were fitted on chains counted with its own overlap, so an adapted
    predictor counts the new rows with that one and records it; where the target's own model wins, its overlap is
    chosen by the fit, as `calibrate` without --from chooses it (it used to stay at the measured 70 either way)."""
    from tvmlat.predictors import LinearPredictor
    from tvmlat.predictors.io import predictor_document

    rows, y = _campaign(140)
    at140 = choose_core(rows, ZEN5, y)[1]
    prior_model = LinearPredictor(features="loops").fit(at140, y)
    prior = predictor_document(prior_model, target={"name": "zen5-twin"}, profile="default",
                               geometry=ZEN5.with_overlap(140))
    # the prior helps: the same host, 1.5x slower; it is kept and its overlap with it
    kind, overlap, text = _fit_from(rows.assign(latency_ms_median=1.5 * y), prior, tmp_path, "adapted")
    assert (kind, overlap) == ("adapted", 140)
    assert "adapted from zen5-twin counts with its own core's parameters: chain overlap 140 steps" in text
    # a prior of another shape loses: the own model is fitted, with the overlap the fit chooses (140, the host's)
    rng = np.random.default_rng(0)
    wrong = predictor_document(LinearPredictor(features="loops").fit(rows, y * np.exp(rng.normal(0, 1.5, len(y)))),
                               target={"name": "other"}, profile="default")
    kind, overlap, text = _fit_from(rows.assign(latency_ms_median=y), wrong, tmp_path, "own")
    assert (kind, overlap) == ("linear", 140)
    assert "does not help" in text and "the own linear model's chain overlap 140 steps, thrashing walks up to 16 L1 lines" in text
    assert "counts with its own core's parameters" not in text


def test_the_ablations_few_shot_adapts_a_prior_on_rows_counted_with_its_overlap():
    """`ablation --few-shot-from`: the prior's prices are those of chains counted with its own overlap (140 here),
    so the model adapted from it predicts the new target's rows counted with that overlap (``dst_as_prior``), not as
    the new target's dataset counts them (70, as measured)."""
    from tvmlat.ablation import few_shot_pair
    from tvmlat.overlap import recount_core

    rows, y = _campaign(140)  # counted at 70, timed as a host hiding 140 steps
    src = choose_core(rows, ZEN5, y)[1].assign(latency_ms_median=y)
    dst = rows.assign(latency_ms_median=2 * y)  # another host: the same shape, twice as slow
    as_prior = recount_core(dst, ZEN5.with_overlap(140))
    pair = lambda **kw: pd.DataFrame(few_shot_pair(src, dst, "a", "b", sizes=(5,), draws=3, **kw)).set_index("model")
    right, wrong = pair(dst_as_prior=as_prior), pair()
    assert right.loc["adapted", "median_ape"] < 1 < wrong.loc["adapted", "median_ape"]
    assert right.loc["prior alone", "median_ape"] == pytest.approx(50, abs=1)  # half of every time: the scale only
    assert right.loc["scratch, all", "median_ape"] == wrong.loc["scratch, all", "median_ape"]  # dst as it is


@pytest.mark.parametrize("edit, needles", [
    (lambda spec: json.dumps({**spec, "family": "nope"}),
     ["block spec cannot be counted", "unknown block family 'nope'", '"family":"nope"']),
    (lambda spec: "{not json", ["spec column is not a block spec", "JSONDecodeError", "{not json"]),
    (lambda spec: json.dumps({"c": 3}), ["spec column is not a block spec", "KeyError: 'family'"]),
])
def test_a_dataset_row_whose_spec_cannot_be_counted_is_one_line(edit, needles, tmp_path, fake_dataset, capsys):
    """A hand-edited row (an unknown family, text that is not JSON, no family) met while counting for the core's
    parameters: a one-line error that shows it, no predictor written; each was a traceback."""
    import shutil

    from tvmlat.dataset import meta_path

    path, df = fake_dataset
    bad = df.copy()
    bad.loc[0, "spec"] = edit(json.loads(bad.loc[0, "spec"]))
    p = tmp_path / "edited.parquet"
    bad.to_parquet(p, index=False)
    shutil.copy(meta_path(path), meta_path(p))
    assert_user_error(run_cli(["fit", "-d", p, "-o", tmp_path / "p.json"], capsys), *needles, "drop that row")
    assert not (tmp_path / "p.json").exists()
