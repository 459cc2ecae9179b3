"""What makes a calibration fit in two minutes: several compile workers, a short back-to-back pass
when interleaved rounds follow, and closed-form features. None of it may change what is measured."""

import math

import pytest

from helpers import MODELS, assert_user_error, run_cli
from tvmlat.blocks import sample_specs
from tvmlat.errors import TvmlatError
from tvmlat.features import block_features, spec_features
from tvmlat.loop_features import CacheGeometry
from tvmlat.measure import run_campaign, spec_workloads
from tvmlat.runners.base import RunResult
from tvmlat.runners.fake import FakeRunner
from tvmlat.runners.local import LocalRunner, compile_workers
from tvmlat.specs import BlockSpec
from tvmlat.targets import load_target


@pytest.fixture
def llvm():
    return load_target("llvm")


def test_compile_workers_default_to_the_cores_only_when_rounds_follow(monkeypatch):
    monkeypatch.delenv("TVMLAT_COMPILE_WORKERS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert compile_workers(rounds=10) == 2
    assert compile_workers(rounds=0) == 1  # the back-to-back pass is the result: it keeps a core
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert compile_workers(rounds=10) == 4
    monkeypatch.setenv("TVMLAT_COMPILE_WORKERS", "3")
    assert compile_workers(rounds=0) == 3


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_bad_compile_workers_setting_is_one_clear_error(monkeypatch, bad):
    monkeypatch.setenv("TVMLAT_COMPILE_WORKERS", bad)
    with pytest.raises(TvmlatError, match="TVMLAT_COMPILE_WORKERS.*positive whole number"):
        compile_workers(rounds=10)


def test_the_compile_workers_option_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("TVMLAT_COMPILE_WORKERS", "2")
    assert compile_workers(rounds=10, requested=3) == 3 and compile_workers(rounds=0, requested=1) == 1
    for bad in (0, -2, True, 1.5):
        with pytest.raises(TvmlatError, match="--compile-workers .*positive whole number"):
            compile_workers(rounds=10, requested=bad)


def test_the_runner_starts_as_many_workers_as_asked(llvm):
    r = LocalRunner(llvm, ahead=True, workers=3)
    try:
        assert r.ahead_depth == 3  # and the campaign announces three blocks ahead
    finally:
        r.close()


def test_calibrate_with_zero_compile_workers_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    line = assert_user_error(run_cli(["calibrate", "--samples", "12", "--no-progress", "--compile-workers", "0",
                                      "--out", str(tmp_path)], capsys), "--compile-workers 0")
    assert "positive whole number" in line
    assert not list(tmp_path.glob("*")), "refused before anything was written"


def test_calibrate_with_a_bad_compile_workers_setting_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TVMLAT_COMPILE_WORKERS", "many")
    line = assert_user_error(run_cli(["calibrate", "--samples", "12", "--no-progress", "--out", str(tmp_path)], capsys),
                             "TVMLAT_COMPILE_WORKERS")
    assert "'many'" in line
    assert not list(tmp_path.glob("*.parquet"))  # refused before anything was measured


def test_a_bad_compile_workers_setting_is_refused_without_workers_too(monkeypatch, llvm):
    monkeypatch.setenv("TVMLAT_COMPILE_WORKERS", "0")
    with pytest.raises(TvmlatError, match="TVMLAT_COMPILE_WORKERS='0'"):
        LocalRunner(llvm, ahead=False)  # measure of a model reference starts no worker


def test_measure_with_a_bad_compile_workers_setting_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models.py").write_text(MODELS)
    monkeypatch.setenv("TVMLAT_COMPILE_WORKERS", "-2")
    out = tmp_path / "runs" / "m.parquet"
    assert_user_error(run_cli(["measure", f"{tmp_path / 'models.py'}:good", "--out", str(out)], capsys),
                      "TVMLAT_COMPILE_WORKERS")
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_first_pass_is_short_only_while_rounds_will_replace_it(llvm):
    r = LocalRunner(llvm)
    cfg = llvm.evaluator
    assert r.rounds > 0 and cfg.max_repeats > cfg.min_repeats
    assert r._first_pass_config() == cfg  # a single measurement: the full adaptive pass
    r.keeping = True  # inside a campaign with rounds
    short = r._first_pass_config()
    assert short.max_repeats == cfg.min_repeats and short.min_repeat_ms == cfg.min_repeat_ms
    r.rounds = 0  # no rounds: the pass is the result
    assert r._first_pass_config() == cfg


def test_rounds_repeat_lasts_min_repeat_ms_at_the_fastest_time(llvm):
    r = LocalRunner(llvm)
    ms = llvm.evaluator.min_repeat_ms
    slow_warmup = RunResult(latency_ms_median=1.0, latency_ms_p10=ms / 20, number=4)
    assert r._rounds_number(slow_warmup) == 20  # the warm-up ran slow: more runs per repeat
    assert r._rounds_number(RunResult(latency_ms_median=50.0, latency_ms_p10=ms * 4, number=1)) == 1
    assert r._rounds_number(RunResult(latency_ms_median=1.0, latency_ms_p10=math.nan, number=7)) == 7


class _Recorder(FakeRunner):
    ahead_depth = 2

    def __init__(self):
        super().__init__()
        self.announced: list[list[str]] = []
        self._seen: list[str] = []

    def prefetch(self, key, spec_json):
        self._seen.append(key)

    def settle(self):  # the rest of the CompilesAhead protocol
        pass

    def run(self, module, inputs, key=""):
        self.announced.append(list(self._seen))
        return super().run(module, inputs, key)


def test_campaign_keeps_every_worker_a_block_ahead(llvm):
    specs = sample_specs(5, seed=4)
    runner = _Recorder()
    run_campaign(spec_workloads(specs), runner, llvm, None, show_progress=False)
    ids = [s.block_id for s in specs]
    # before block i is timed, blocks i, i+1 and i+2 have been announced
    for i, seen in enumerate(runner.announced):
        assert set(ids[i:i + 3]) <= set(seen)
        assert ids[i + 3:i + 4] == [] or ids[i + 3] not in seen


def test_campaign_features_equal_the_counter(llvm):
    small_l2 = CacheGeometry(64, 12, 64, l2=64 * 1024)  # a 64 KiB L2: the L2 rule fires on several specs
    fired = 0
    for s in sample_specs(40, seed=11):
        assert spec_features(s) == block_features(s), s.short()
        assert spec_features(s, small_l2) == block_features(s, geometry=small_l2), s.short()
        fired += spec_features(s, small_l2)["mac_l2miss"] > 0
    assert fired >= 3


def test_campaign_features_fall_back_to_the_counter(monkeypatch):
    s = BlockSpec.make("linear", tokens=4, din=16, dout=8, bias=True)

    def unknown(spec, geometry=None):
        raise KeyError(spec.family)

    monkeypatch.setattr("tvmlat.analytic_features.analytic_features", unknown)
    assert spec_features(s) == block_features(s)
