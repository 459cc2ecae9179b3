"""Board power and energy per inference, sampled while a block runs (NVML on NVIDIA GPUs, RAPL on CPUs).

``measure_energy`` runs the block back to back for a window (>= ``min_window_s``) while a sampler
reads board power; it reports average power, idle power (sampled before), energy per inference
from the average power over the window, and whether the reading is trustworthy: NVML's power
reading is itself an average over tens to hundreds of milliseconds, so a window shorter than
``min_window_s`` or with fewer than ``min_samples`` readings is flagged ``energy_ok = False``.

Imports nothing heavy: it also runs inside a bundle on a machine with only TVM's runtime.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, Protocol


class PowerSampler(Protocol):
    def start(self) -> None: ...
    def stop(self) -> list[float]: ...  # watts, one per reading since start()


class _PollingSampler:
    """A background thread that appends power readings (W) every ``period_s`` between start() and stop()."""

    period_s: float

    def _poll(self) -> None:  # the thread's body: append to self._samples until self._stop is set
        raise NotImplementedError

    def start(self) -> None:
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def stop(self) -> list[float]:
        self._stop.set()
        if getattr(self, "_thread", None) is not None:
            self._thread.join()
        return list(getattr(self, "_samples", []))


class NVMLSampler(_PollingSampler):
    """Board power of one NVIDIA GPU through NVML (package ``nvidia-ml-py``), read every ``period_s``."""

    def __init__(self, index: int = 0, period_s: float = 0.01):
        try:
            import pynvml
        except ImportError:
            raise RuntimeError("power needs NVML's Python binding: pip install nvidia-ml-py") from None
        self.nvml = pynvml
        pynvml.nvmlInit()
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.name = pynvml.nvmlDeviceGetName(self.handle)
        self.period_s = period_s

    def read_watts(self) -> float:
        return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0  # mW -> W

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._samples.append(self.read_watts())
            time.sleep(self.period_s)


POWERCAP = "/sys/class/powercap"


class RAPLSampler(_PollingSampler):
    """CPU package power from Linux RAPL energy counters (``/sys/class/powercap/intel-rapl:N/energy_uj``,
    also used for AMD CPUs), read every ``period_s`` and turned into watts per interval.

    The counters cover the whole package (every process on it), so ``measure_energy``'s idle reading
    matters here; they wrap at ``max_energy_range_uj`` (handled). Many VMs expose no powercap at all,
    and since 2020 kernels make ``energy_uj`` readable by root only: then this raises ``RuntimeError``
    saying which, and nothing is measured (no zeros are written).
    """

    def __init__(self, root: str | None = None, period_s: float = 0.05):
        import glob
        import os

        root = root or os.environ.get("TVMLAT_POWERCAP", POWERCAP)
        if not os.path.isdir(root):
            raise RuntimeError(f"no RAPL on this machine ({root} does not exist; typical of VMs)")
        zones = []
        for z in sorted(glob.glob(os.path.join(root, "intel-rapl:*"))):
            name_file = os.path.join(z, "name")
            if ":" in os.path.basename(z).split("intel-rapl:", 1)[1]:
                continue  # a sub-zone (core, uncore, dram) of a package: the package counts it already
            if os.path.exists(name_file) and not open(name_file).read().startswith("package"):
                continue
            zones.append(z)
        if not zones:
            raise RuntimeError(f"no RAPL package zone under {root}")
        self.zones = []
        for z in zones:
            try:
                with open(os.path.join(z, "energy_uj")) as f:
                    int(f.read())
            except PermissionError:
                raise RuntimeError(f"{z}/energy_uj is readable by root only on this kernel; run as root or "
                                   f"grant read access (e.g. chmod o+r) to measure CPU energy") from None
            except (OSError, ValueError) as e:
                raise RuntimeError(f"cannot read {z}/energy_uj ({e})") from None
            rng_file = os.path.join(z, "max_energy_range_uj")
            wrap = int(open(rng_file).read()) if os.path.exists(rng_file) else 2**32
            self.zones.append((os.path.join(z, "energy_uj"), wrap))
        self.name = f"RAPL ({len(self.zones)} package zone{'s' if len(self.zones) > 1 else ''})"
        self.period_s = period_s

    def read_uj(self) -> list[int]:
        out = []
        for path, _ in self.zones:
            with open(path) as f:
                out.append(int(f.read()))
        return out

    def _watts(self, a: list[int], b: list[int], dt: float) -> float:
        total = sum((y - x) % wrap for x, y, (_, wrap) in zip(a, b, self.zones))
        return total / 1e6 / dt

    def _poll(self) -> None:
        last, t_last = self.read_uj(), time.perf_counter()
        while not self._stop.wait(self.period_s):
            now, t_now = self.read_uj(), time.perf_counter()
            self._samples.append(self._watts(last, now, t_now - t_last))
            last, t_last = now, t_now


class FakeSampler:
    """For tests: power is ``idle_w`` when nothing runs and ``busy_w`` while ``busy`` is set."""

    def __init__(self, idle_w: float = 60.0, busy_w: float = 300.0, readings_per_s: float = 100.0):
        self.idle_w, self.busy_w, self.rate = idle_w, busy_w, readings_per_s
        self.busy = False
        self._t0 = 0.0
        self._busy_s = 0.0

    def start(self) -> None:
        self._t0, self._busy_s = time.perf_counter(), 0.0

    def stop(self) -> list[float]:
        dt = time.perf_counter() - self._t0
        n = max(0, int(dt * self.rate))
        busy_n = min(n, int(self._busy_s * self.rate))
        return [self.busy_w] * busy_n + [self.idle_w] * (n - busy_n)

    def run(self, seconds: float) -> None:
        """What a block does to the fake board: draw busy power for ``seconds``."""
        self._busy_s += seconds
        time.sleep(seconds)


def measure_energy(run: Callable[[int], float], latency_s: float, sampler: PowerSampler,
                   min_window_s: float = 1.0, idle_s: float = 0.5, min_samples: int = 10,
                   max_window_s: float = 10.0) -> dict[str, float | bool | str]:
    """Energy per inference of a block whose latency is ``latency_s``.

    ``run(n)`` executes the block ``n`` times back to back (synchronised) and returns the seconds
    it took. Idle power is sampled for ``idle_s`` first; energy is average power x window / runs."""
    sampler.start()
    time.sleep(idle_s)
    idle = sampler.stop()
    n = max(1, math.ceil(min_window_s / max(latency_s, 1e-9)))
    n = min(n, max(1, int(max_window_s / max(latency_s, 1e-9))))
    sampler.start()
    t0 = time.perf_counter()
    run(n)
    window = time.perf_counter() - t0
    busy = sampler.stop()
    out: dict[str, float | bool | str] = {
        "idle_power_w": sum(idle) / len(idle) if idle else math.nan,
        "power_w": sum(busy) / len(busy) if busy else math.nan,
        "energy_window_s": window, "energy_samples": len(busy), "energy_runs": n}
    out["energy_mj"] = out["power_w"] * window / n * 1000.0 if busy else math.nan
    out["energy_ok"] = bool(busy) and window >= 0.9 * min_window_s and len(busy) >= min_samples
    if not out["energy_ok"]:
        out["energy_note"] = (f"too short for a trustworthy reading: {window:.3f} s window, {len(busy)} power "
                              f"readings (need >= {min_window_s:g} s and >= {min_samples})")
    else:
        out["energy_note"] = ""
    return out
