"""NVMLSampler against a fake NVML module (no GPU here): the real sampler thread, units and energy."""

from __future__ import annotations

import sys
import time
import types

import pytest

from tvmlat.power import NVMLSampler, measure_energy


class FakeNVML(types.ModuleType):
    """pynvml's calls the sampler uses; power in mW, higher while ``busy``."""

    def __init__(self, idle_mw=70_000, busy_mw=350_000):
        super().__init__("pynvml")
        self.idle_mw, self.busy_mw, self.busy, self.inits, self.reads = idle_mw, busy_mw, False, 0, 0

    def nvmlInit(self):
        self.inits += 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("gpu", i)

    def nvmlDeviceGetName(self, h):
        return "Fake H100"

    def nvmlDeviceGetPowerUsage(self, h):
        self.reads += 1
        return self.busy_mw if self.busy else self.idle_mw


@pytest.fixture
def nvml(monkeypatch):
    fake = FakeNVML()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


def test_sampler_reads_watts_in_a_thread(nvml):
    s = NVMLSampler(period_s=0.002)
    assert nvml.inits == 1 and s.name == "Fake H100"
    assert s.read_watts() == pytest.approx(70.0)
    s.start()
    time.sleep(0.05)
    got = s.stop()
    assert len(got) >= 3 and set(got) == {70.0}
    n = nvml.reads
    time.sleep(0.02)
    assert nvml.reads == n  # the thread stopped


def test_energy_with_nvml_sampler(nvml):
    s = NVMLSampler(period_s=0.002)
    latency = 0.001

    def run(n):
        nvml.busy = True
        time.sleep(n * latency)
        nvml.busy = False
        return n * latency

    e = measure_energy(run, latency, s, min_window_s=0.2, idle_s=0.05)
    assert e["idle_power_w"] == pytest.approx(70.0)
    assert e["power_w"] == pytest.approx(350.0, rel=0.1)
    assert e["energy_mj"] == pytest.approx(350.0 * latency * 1000, rel=0.2)
    assert e["energy_ok"] and e["energy_runs"] >= 200


def test_missing_binding_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    with pytest.raises(RuntimeError, match="nvidia-ml-py"):
        NVMLSampler()
