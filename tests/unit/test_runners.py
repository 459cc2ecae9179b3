import math

import numpy as np
import pytest

from tvmlat.blocks import build_block
from tvmlat.features import count_features
from tvmlat.runners.base import STATUSES, RunResult, adaptive_measure, median_ci_rel
from tvmlat.runners.fake import FakeRunner
from tvmlat.specs import BlockSpec
from tvmlat.targets import EvaluatorConfig


# ------------------------------------------------------------------ median_ci_rel

def test_ci_identical_samples_is_zero():
    assert median_ci_rel([2.0] * 10) == 0.0
    assert median_ci_rel([1e-4] * 3) == 0.0


def test_ci_spread_samples_positive():
    rng = np.random.default_rng(0)
    ci = median_ci_rel(1.0 + 0.2 * rng.random(20))
    assert ci > 0
    assert math.isfinite(ci)


def test_ci_shrinks_with_more_samples():
    rng = np.random.default_rng(1)
    x = 1.0 + 0.1 * rng.standard_normal(2000)
    assert median_ci_rel(x[:2000]) < median_ci_rel(x[:20])


@pytest.mark.parametrize("samples", [[], [1.0], [1.0, 2.0]])
def test_ci_too_few_samples_is_inf(samples):
    assert median_ci_rel(samples) == math.inf


# ------------------------------------------------------------------ adaptive_measure with a fake clock

class FakeClock:
    """A time function: (number, repeats) -> per-run seconds, one per repeat; records its calls."""

    def __init__(self, per_run_s: float, noise: float = 0.0, seed: int = 0):
        self.per_run_s = per_run_s
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.calls: list[tuple[int, int]] = []

    def __call__(self, number: int, repeats: int) -> list[float]:
        self.calls.append((number, repeats))
        if self.noise == 0:
            return [self.per_run_s] * repeats
        return list(self.per_run_s * (1 + self.noise * self.rng.random(repeats)))


def _cfg(**kw) -> EvaluatorConfig:
    base = dict(warmup_runs=1, min_repeat_ms=10.0, min_repeats=5, max_repeats=30, rel_precision=0.01,
                max_seconds=1e6)
    return EvaluatorConfig(**{**base, **kw}).check()


def test_constant_samples_stop_at_min_repeats():
    clock = FakeClock(0.002)
    cfg = _cfg(min_repeats=6)
    res = adaptive_measure(clock, cfg)
    assert res.status == "ok"
    assert res.repeats == 6
    assert res.ci_rel == 0.0
    assert res.latency_ms_median == pytest.approx(2.0)
    assert res.n_runs == res.number * res.repeats
    timed = [c for c in clock.calls if c != (1, 1)]
    assert sum(r for _, r in timed) == 6


def test_noisy_samples_respect_max_repeats():
    clock = FakeClock(0.001, noise=0.5)
    cfg = _cfg(max_repeats=17)
    res = adaptive_measure(clock, cfg)
    assert res.repeats == 17  # CI never gets within 1 %, so the cap ends it
    assert res.ci_rel > cfg.rel_precision
    assert res.n_runs == res.number * 17
    # every timed call used the chosen `number`
    assert all(n == res.number for n, _ in clock.calls[cfg.warmup_runs:])


@pytest.mark.parametrize("per_run_s,min_repeat_ms", [(0.0003, 10.0), (0.001, 10.0), (0.05, 10.0), (1e-6, 2.0)])
def test_number_makes_a_repeat_last_min_repeat_ms(per_run_s, min_repeat_ms):
    clock = FakeClock(per_run_s)
    res = adaptive_measure(clock, _cfg(min_repeat_ms=min_repeat_ms))
    assert res.number >= 1
    assert res.number * per_run_s * 1000 >= min_repeat_ms * (1 - 1e-9)
    if res.number > 1:  # and not much more than needed
        assert (res.number - 1) * per_run_s * 1000 <= min_repeat_ms * (1 + 1e-9)
    assert clock.calls[0] == (1, 1)  # warm-up: one run


def test_warmup_runs_are_untimed():
    clock = FakeClock(0.01)
    adaptive_measure(clock, _cfg(warmup_runs=3))
    assert clock.calls[:3] == [(1, 1)] * 3


def test_percentiles_ordered_on_noisy_samples():
    res = adaptive_measure(FakeClock(0.004, noise=0.3, seed=5), _cfg())
    assert res.latency_ms_p10 <= res.latency_ms_median <= res.latency_ms_p90
    assert res.latency_ms_p10 < res.latency_ms_p90
    assert 4.0 <= res.latency_ms_median <= 4.0 * 1.3
    assert res.latency_cov > 0
    assert "measure_s" in res.stages


def test_max_seconds_stops_early():
    import time

    clock = FakeClock(0.001, noise=0.5)

    def slow(number, repeats):
        time.sleep(0.002)  # each call takes longer than the whole budget
        return clock(number, repeats)

    res = adaptive_measure(slow, _cfg(max_seconds=0.001, min_repeats=5, max_repeats=1000))
    assert res.repeats == 5  # the first batch, then the time cap


# ------------------------------------------------------------------ RunResult and FakeRunner

def test_run_result_as_row():
    row = RunResult(latency_ms_median=1.5, stages={"compile_s": 2.0}).as_row()
    assert row["latency_ms_median"] == 1.5
    assert row["compile_s"] == 2.0
    assert math.isnan(row["export_s"])
    assert "stages" not in row
    assert "ok" in STATUSES


def test_fake_runner_deterministic_and_failing():
    spec = BlockSpec.make("linear", tokens=16, din=64, dout=64, bias=True)
    module, inputs = build_block(spec)
    r = FakeRunner(fail_keys={"bad"})
    a = r.run(module, inputs, key=spec.block_id)
    b = FakeRunner().run(module, inputs, key=spec.block_id)
    assert a.status == "ok" and a.latency_ms_median == b.latency_ms_median > 0
    bad = r.run(module, inputs, key="bad")
    assert bad.status != "ok" and bad.status in STATUSES and bad.error
    assert r.calls == 2
    # larger blocks take longer on the fake hardware
    big, big_in = build_block(BlockSpec.make("linear", tokens=256, din=512, dout=512, bias=True))
    assert FakeRunner(noise=0).run(big, big_in).latency_ms_median > FakeRunner(noise=0).run(module, inputs).latency_ms_median
    assert count_features(big, big_in)["flops"] > count_features(module, inputs)["flops"]


def test_fake_runner_interrupt():
    module, inputs = build_block(BlockSpec.make("matmul", b=1, m=16, k=32, n=16))
    r = FakeRunner(interrupt_after=1)
    assert r.run(module, inputs, key="a").status == "ok"
    with pytest.raises(KeyboardInterrupt):
        r.run(module, inputs, key="b")
