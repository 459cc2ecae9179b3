"""Measure a bundle with only TVM's runtime: ``python -m tvmlat.bundle_run BUNDLE --out results.jsonl``.

Needs: Python >= 3.11, numpy, TVM's runtime (``TVM_USE_RUNTIME_LIB=1``; no compiler, no torch, no
pandas). Checks every file against the manifest's SHA-256 and the TVM version before measuring
anything; writes one JSON line per block and flushes it to disk, so an interrupted run resumes
where it stopped (blocks already in the results file are skipped). ``tvmlat ingest`` turns the
file into a dataset.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .bundle import BundleError, make_inputs, read_manifest, sampled_error, verify
from .runners.base import RunResult
from .targets import TargetSpec

RESULT_SCHEMA = 1


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _records(results: Path) -> list[dict[str, Any]]:
    out = []
    if results.exists():
        for line in results.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash
            if isinstance(rec, dict):
                out.append(rec)
    return out


def _clean(o):
    """NaN -> null, numpy scalars -> Python: the results file is standard JSON (jq reads it)."""
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def done_keys(results: Path) -> set[str]:
    """Keys already measured in a results file (a torn last line from a crash is ignored)."""
    return {r["key"] for r in _records(results) if r.get("type") == "row" and "key" in r}


def _device(tvm, kind: str):
    dev = tvm.cuda(0) if kind == "cuda" else tvm.cpu(0)
    if not dev.exist:
        raise BundleError(f"the bundle is for {kind}, and this machine has no {kind} device that TVM can see")
    return dev


def run_bundle(bundle: str | Path, out: str | Path, check: bool = True, power: bool = False,
               allow_version_mismatch: bool = False, log: Callable[[str], None] = print,
               sampler=None) -> dict[str, Any]:
    """Measure every entry of ``bundle`` not yet in ``out``; returns counts."""
    import numpy as np
    import tvm
    from tvm.runtime.vm import VirtualMachine  # not tvm.relax: that needs the compiler library

    from .runners.vmtime import time_vm, vm_energy

    b = Path(bundle)
    m = read_manifest(b)
    problems = verify(b, m)
    if problems:
        raise BundleError(f"{len(problems)} bundle files fail their check, e.g. {problems[0]}; nothing was measured: "
                          f"copy the bundle again (or rebuild it with `tvmlat bundle`)")
    built = m.get("versions", {}).get("tvm")
    if built and built != tvm.__version__ and not allow_version_mismatch:
        raise BundleError(f"the bundle was compiled with TVM {built}, this runtime is TVM {tvm.__version__}; use the "
                          f"same version (tvmlat runtime-pack), or pass --allow-version-mismatch at your own risk")
    target = TargetSpec.from_dict(m["target"])
    dev = _device(tvm, target.kind)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = done_keys(out)
    if power and sampler is None:
        from .power import NVMLSampler

        sampler = NVMLSampler()
    counts = {"measured": 0, "skipped": len(done), "failed": 0}
    has_header = any(r.get("type") == "header" for r in _records(out))
    torn = out.exists() and out.stat().st_size > 0 and not out.read_bytes().endswith(b"\n")
    with open(out, "a") as f:
        def write(rec: dict[str, Any]) -> None:
            f.write(json.dumps(_clean(rec), default=str, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

        if torn:  # a crash cut the last line: end it, so it stays one unreadable line on its own
            f.write("\n")
        if not has_header:
            write({"type": "header", "result_schema": RESULT_SCHEMA, "bundle": str(b.resolve()),
                   "bundle_created": m.get("created"), "target": m["target"], "compile_versions": m.get("versions", {}),
                   "cache_geometry": m.get("cache_geometry"), "model_refs": m.get("model_refs"),
                   "compile_host": m.get("host", {}), "runtime": {"tvm": tvm.__version__, "python": platform.python_version(),
                   "host": platform.node(), "device": _device_name(tvm, dev, target.kind)}, "started": _now()})
        for fail in m.get("failed", []):
            if fail["key"] not in done:
                write({"type": "row", **fail, "measured_at": _now()})
                counts["failed"] += 1
        todo = [e for e in m["entries"] if e["key"] not in done]
        for i, e in enumerate(todo, 1):
            t0 = time.perf_counter()
            extra: dict[str, Any] = {}
            try:
                with np.load(b / e["data"]) as data:
                    ref = {k: data[k] for k in data.files}
                ins = make_inputs(int(ref.pop("seed")), e["inputs"])
                vm = VirtualMachine(tvm.runtime.load_module(str(b / e["lib"])), dev)
                res = time_vm(vm, dev, ins, ref if check else None, target.evaluator, compare=sampled_error)
                if sampler is not None and res.status == "ok":
                    res.energy = vm_energy(vm, dev, res.latency_ms_median, sampler)
                    extra = {k: v for k, v in res.energy.items() if k.startswith("energy_") and k != "energy_mj"}
            except Exception as ex:  # noqa: BLE001 - a failing block is a row
                res = RunResult(status="run_error", error=f"{type(ex).__name__}: {str(ex).strip().splitlines()[-1:]}")
            res.stages = {**e.get("stages", {}), **res.stages}
            row = {"type": "row", "key": e["key"], "name": e["name"], "family": e["family"], "spec": e["spec"],
                   "features": e["features"], **res.as_row(), **extra, "wall_s": time.perf_counter() - t0,
                   "measured_at": _now()}
            write(row)
            counts["measured"] += 1
            counts["failed"] += res.status != "ok"
            lat = f"{res.latency_ms_median:.4f} ms" if res.status == "ok" else res.status
            log(f"[{i}/{len(todo)}] {e['name'][:60]}: {lat}")
    return counts


def _device_name(tvm, dev, kind: str) -> str:
    try:
        return str(dev.device_name) if kind == "cuda" else platform.processor() or platform.machine()
    except Exception:  # noqa: BLE001
        return kind


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tvmlat.bundle_run", description=__doc__.split("\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--out", default=None, help="results file (.jsonl) [BUNDLE/results.jsonl]")
    ap.add_argument("--no-check", action="store_true", help="don't compare outputs with torch's reference")
    ap.add_argument("--power", action="store_true", help="also measure power and energy (NVML, nvidia-ml-py)")
    ap.add_argument("--allow-version-mismatch", action="store_true")
    a = ap.parse_args(argv)
    try:
        counts = run_bundle(a.bundle, a.out or Path(a.bundle) / "results.jsonl", check=not a.no_check,
                            power=a.power, allow_version_mismatch=a.allow_version_mismatch)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: every finished block is in the results file; run again to resume", file=sys.stderr)
        return 130
    print(f"done: {counts['measured']} measured ({counts['failed']} failed), {counts['skipped']} already there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
