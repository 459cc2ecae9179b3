"""Interleaved rounds: the campaign times kept blocks round after round and rewrites their rows."""

import math

import numpy as np
import pandas as pd
import pytest

from helpers import campaign_meta, make_target
from tvmlat.blocks import sample_specs
from tvmlat.dataset import CampaignWriter, read_dataset
from tvmlat.errors import TargetError
from tvmlat.measure import _Rounds, run_campaign, spec_workloads
import json

from tvmlat.runners import base
from tvmlat.runners.base import common_drift, interleaved_rounds, rounds_stats
from tvmlat.runners.fake import FakeRunner
from tvmlat.targets import EvaluatorConfig

N, R = 6, 4


@pytest.fixture(scope="module")
def specs():
    return sample_specs(N, seed=5, max_flops=5e6)


def _writer(path):
    t = make_target()
    return CampaignWriter(path, campaign_meta(t)), t


def test_interleaved_rounds_visit_every_block_once_per_round():
    order = []
    timers = {k: (lambda k=k: order.append(k) or 0.001) for k in "abc"}
    seen = []
    got = interleaved_rounds(timers, 3, on_round=seen.append)
    assert order == list("abc") * 3  # round after round, not block after block
    assert seen == [1, 2, 3]
    assert {k: len(v) for k, v in got.items()} == {"a": 3, "b": 3, "c": 3}


def test_rounds_stats_replace_the_consecutive_measurement():
    samples = [0.0010, 0.0012, 0.0011, 0.0013]
    s = rounds_stats(samples, number=7, first_median_ms=2.5, first_runs=35)
    assert s["latency_ms_median"] == pytest.approx(1.15)
    assert s["rounds"] == 4 and s["repeats"] == 4 and s["number"] == 7
    assert s["n_runs"] == 35 + 4 * 7
    assert s["latency_ms_first"] == 2.5
    # odd rounds (1.2, 1.3 ms) vs even rounds (1.0, 1.1 ms)
    assert s["half_diff_rel"] == pytest.approx(abs(math.log(1.25 / 1.05)))
    assert s["latency_ms_p10"] <= s["latency_ms_median"] <= s["latency_ms_p90"]


def test_common_drift_is_the_rounds_shared_speed_not_one_blocks():
    rng = np.random.default_rng(0)
    speed = np.array([1.0, 1.3, 0.9, 1.1, 1.0, 1.2])
    base_ms = rng.uniform(0.1, 10, size=40)
    x = base_ms[:, None] * speed[None, :] * rng.lognormal(0, 0.01, size=(40, 6))
    x[0] *= np.array([5, 1, 1, 1, 1, 1])  # one block hit by something of its own in round 0
    f = common_drift({str(i): list(x[i] / 1000) for i in range(40)})
    assert f is not None and len(f) == 6
    assert f / np.median(f) == pytest.approx(speed / np.median(speed), rel=0.02)  # the outlier moves nothing
    corrected = rounds_stats(list(x[5] / 1000), 10, 1.0, 10, drift=f)
    plain = rounds_stats(list(x[5] / 1000), 10, 1.0, 10)
    assert corrected["latency_cov"] < plain["latency_cov"] / 5  # only the block's own noise is left
    assert corrected["latency_ms_raw"] == pytest.approx(plain["latency_ms_median"])
    assert json.loads(corrected["rounds_ms"]) == pytest.approx(list(x[5]), rel=1e-6)  # as timed, kept
    assert json.loads(corrected["round_drift"]) == pytest.approx(list(f), rel=1e-4)
    assert plain["round_drift"] is None


@pytest.mark.parametrize("samples", [
    {str(i): [0.001, 0.002] for i in range(5)},  # too few blocks to tell the machine from a block
    {**{str(i): [0.001, 0.002] for i in range(30)}, "x": [0.001]},  # unequal rounds
    {**{str(i): [0.001, 0.002] for i in range(30)}, "x": [0.001, float("nan")]},
])
def test_no_common_drift_without_enough_comparable_blocks(samples):
    assert common_drift(samples) is None


def test_campaign_divides_out_the_drift_shared_by_its_blocks(tmp_path, specs, monkeypatch):
    monkeypatch.setattr(base, "MIN_DRIFT_BLOCKS", 3)
    path = tmp_path / "c.parquet"
    writer, t = _writer(path)
    runner = FakeRunner(rounds=R)  # every round slower than the last, the same for all blocks
    run_campaign(spec_workloads(specs), runner, t, writer, show_progress=False)
    df = read_dataset(path)
    factors = [runner.round_factor(r) for r in range(R)]
    level = df["latency_ms_first"].to_numpy() * np.median(factors)  # the block at its median round
    assert df["latency_ms_raw"].to_numpy() == pytest.approx(level)
    assert df["latency_ms_median"].to_numpy() == pytest.approx(level)
    assert (df["latency_cov"] < 1e-9).all() and (df["half_diff_rel"] < 1e-9).all()
    for _, d in df.iterrows():
        assert json.loads(d["rounds_ms"]) == pytest.approx([d["latency_ms_first"] * f for f in factors])
        drift = json.loads(d["round_drift"])
        assert np.array(drift) / np.median(drift) == pytest.approx(np.array(factors) / np.median(factors), rel=1e-4)


def test_campaign_rows_carry_the_rounds_statistics(tmp_path, specs):
    path = tmp_path / "c.parquet"
    writer, t = _writer(path)
    runner = FakeRunner(rounds=R)
    rows = run_campaign(spec_workloads(specs), runner, t, writer, show_progress=False)
    df = read_dataset(path).set_index("block_id")
    factors = [runner.round_factor(r) for r in range(R)]
    for row in rows:
        d = df.loc[row["block_id"]]
        assert d["rounds"] == R and d["repeats"] == R
        first = d["latency_ms_first"]  # the consecutive median, kept
        assert d["latency_ms_median"] == pytest.approx(first * float(np.median(factors)))
        assert row["latency_ms_median"] == pytest.approx(d["latency_ms_median"])  # returned rows updated too
        assert pd.isna(d["round_drift"])  # N blocks are too few to divide a common drift out
    assert runner.kept == 0


def test_failed_blocks_get_no_rounds(tmp_path, specs):
    path = tmp_path / "c.parquet"
    writer, t = _writer(path)
    bad = specs[1].block_id
    run_campaign(spec_workloads(specs), FakeRunner(rounds=R, fail_keys={bad}), t, writer, show_progress=False)
    df = read_dataset(path).set_index("block_id")
    assert df.loc[bad, "status"] == "compile_error" and df.loc[bad, "rounds"] == 0
    assert (df.drop(index=bad)["rounds"] == R).all()


def test_many_blocks_are_run_in_chunks(tmp_path, specs, monkeypatch):
    monkeypatch.setattr(_Rounds, "MAX_KEPT", 4)
    path = tmp_path / "c.parquet"
    writer, t = _writer(path)
    runner = FakeRunner(rounds=R)
    calls = []
    orig = runner.interleave
    monkeypatch.setattr(runner, "interleave", lambda on_round=None: calls.append(runner.kept) or orig(on_round))
    run_campaign(spec_workloads(specs), runner, t, writer, show_progress=False)
    assert calls == [4, N - 4]  # never more than MAX_KEPT blocks held at once
    assert (read_dataset(path)["rounds"] == R).all()


def test_interrupted_rounds_keep_the_rows_and_resume(tmp_path, specs):
    path = tmp_path / "c.parquet"
    writer, t = _writer(path)
    with pytest.raises(KeyboardInterrupt):
        run_campaign(spec_workloads(specs), FakeRunner(rounds=R, interrupt_in_round=2), t, writer,
                     show_progress=False)
    df = read_dataset(path)
    assert len(df) == N and (df["status"] == "ok").all()  # everything measured is on disk…
    assert (df["rounds"] == 0).all()  # …with its consecutive statistics
    writer2, _ = _writer(path)
    runner = FakeRunner(rounds=R)
    new = run_campaign(spec_workloads(specs), runner, t, writer2, show_progress=False)
    assert new == [] and runner.calls == 0  # nothing measured again
    assert sorted(runner.kept_keys) == sorted(s.block_id for s in specs)  # only the rounds were redone
    df = read_dataset(path)
    assert len(df) == N and (df["rounds"] == R).all()
    assert (df["latency_ms_first"] > 0).all()


def test_runners_without_rounds_leave_rows_alone(tmp_path, specs):
    path = tmp_path / "c.parquet"
    writer, t = _writer(path)
    run_campaign(spec_workloads(specs), FakeRunner(), t, writer, show_progress=False)
    df = read_dataset(path)
    assert (df["rounds"] == 0).all() and df["latency_ms_first"].isna().all()


@pytest.mark.parametrize("bad", [1, -1, 1001, 2.5, True])
def test_bad_rounds_setting_is_refused(bad):
    with pytest.raises(TargetError, match="rounds"):
        EvaluatorConfig(rounds=bad).check()


def test_a_runner_used_outside_a_campaign_keeps_nothing(specs):
    from tvmlat.blocks import build_block

    runner = FakeRunner(rounds=R)
    module, inputs = build_block(specs[0])
    assert runner.run(module, inputs, key="x").status == "ok"
    assert runner.kept == 0


def test_each_chunk_waits_for_the_compile_workers_before_its_rounds(tmp_path, specs, monkeypatch):
    monkeypatch.setattr(_Rounds, "MAX_KEPT", 4)
    writer, t = _writer(tmp_path / "c.parquet")
    events = []

    class Ahead(FakeRunner):  # a runner with compile workers (the CompilesAhead protocol)
        ahead_depth = 1

        def prefetch(self, key, spec_json):
            pass

        def settle(self):
            events.append("settle")

    runner = Ahead(rounds=R)
    orig = runner.interleave
    monkeypatch.setattr(runner, "interleave", lambda on_round=None: events.append("rounds") or orig(on_round))
    run_campaign(spec_workloads(specs), runner, t, writer, show_progress=False)
    assert events == ["settle", "rounds"] * 2  # every chunk: workers idle first, then the rounds


def test_compile_ahead_wait_returns_when_everything_submitted_is_done(monkeypatch):
    import time
    from concurrent.futures import ThreadPoolExecutor

    from tvmlat.runners import ahead as ahead_mod
    from tvmlat.runners.ahead import CompileAhead

    # a thread pool stands in for the worker processes, a sleep for the compile
    monkeypatch.setattr(ahead_mod, "compile_spec_to_library", lambda spec, *a: time.sleep(0.05 * int(spec)))
    ahead = CompileAhead({}, executor_factory=lambda n: ThreadPoolExecutor(2))
    for k in (1, 2, 3):
        ahead.submit(str(k), str(k))
    ahead.wait()
    assert all(f.done() for f in ahead.futures.values()) and ahead.stalls == 0
    ahead.close()


def test_json_output_gives_the_rounds_as_lists(capsys):
    from tvmlat.cli.common import Format, emit

    emit([{"name": "a", "rounds_ms": "[1.5, 1.25]", "round_drift": None, "latency_ms": float("nan")}],
         Format.json, ["name"])
    got = json.loads(capsys.readouterr().out)
    assert got == [{"name": "a", "rounds_ms": [1.5, 1.25], "round_drift": None, "latency_ms": None}]
    emit([{"name": "b", "rounds_ms": "[1.5,"}], Format.json, ["name"])  # an edited file: kept as text
    assert json.loads(capsys.readouterr().out) == [{"name": "b", "rounds_ms": "[1.5,"}]
