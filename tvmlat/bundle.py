"""Offline measurement bundles: compile on any machine, measure on one that has only TVM's runtime.

A bundle is a folder::

    manifest.json        schema_version, target, versions, and one entry per block: key, name, family,
                         spec, features, input shapes, the library and data files with their SHA-256
    libs/<key>.so        the compiled block (``export_library``; for CUDA it embeds the device code)
    data/<key>.npz       its inputs and torch's reference outputs
    tvmlat/              the few pure-Python modules the bundle runner needs (no torch, no pandas)

On the measuring machine, with TVM's runtime on PYTHONPATH (``tvmlat runtime-pack``)::

    TVM_USE_RUNTIME_LIB=1 PYTHONPATH=B:RUNTIME python -m tvmlat.bundle_run B --out results.jsonl

then, back here, ``tvmlat ingest results.jsonl`` adds the rows to a dataset.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import TvmlatError
from .jsonfile import read_json, write_json

BUNDLE_SCHEMA = 1
MANIFEST = "manifest.json"
#: modules copied into a bundle so ``python -m tvmlat.bundle_run`` works where tvmlat isn't installed
RUNNER_MODULES = ["__init__.py", "errors.py", "jsonfile.py", "targets.py", "bundle.py", "bundle_run.py", "power.py",
                  "runners/__init__.py", "runners/base.py", "runners/vmtime.py"]


#: reference output values kept per output (at seeded positions): enough to catch a wrong result
REF_SAMPLES = 2048


def input_seed(key: str) -> int:
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)


def make_inputs(seed: int, inputs: Sequence[dict[str, Any]]):
    """The block's inputs, regenerated from a seed and their shapes (NumPy's PCG64, standard normal):
    a bundle carries 8 bytes instead of the tensors."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for spec in inputs:
        dt = np.dtype(spec["dtype"])
        if dt.kind == "f":
            out.append(rng.standard_normal(spec["shape"]).astype(dt))
        else:
            out.append(rng.integers(0, 2, size=spec["shape"]).astype(dt))
    return out


def sample_reference(refs, seed: int) -> dict[str, Any]:
    """Up to REF_SAMPLES values of each reference output at seeded positions, and its scale."""
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    d = {}
    for j, r in enumerate(refs):
        flat = r.reshape(-1)
        idx = np.sort(rng.choice(flat.size, size=min(REF_SAMPLES, flat.size), replace=False))
        d[f"refidx{j}"], d[f"refval{j}"] = idx.astype(np.int64), flat[idx]
        d[f"refshape{j}"] = np.asarray(r.shape, dtype=np.int64)
        d[f"refscale{j}"] = np.asarray(float(np.abs(r).max()) if r.size else 0.0)
    return d


def sampled_error(outputs, ref: dict[str, Any]) -> float:
    """Largest |output - reference| at the sampled positions, over the output's scale (inf: wrong shape/count)."""
    import numpy as np

    n = sum(k.startswith("refidx") for k in ref)
    if len(outputs) != n:
        return float("inf")
    worst = 0.0
    for j, o in enumerate(outputs):
        if list(o.shape) != list(ref[f"refshape{j}"]):
            return float("inf")
        got = o.reshape(-1)[ref[f"refidx{j}"]].astype(np.float64)
        scale = max(float(ref[f"refscale{j}"]), 1e-6)
        if got.size:
            diff = np.abs(got - ref[f"refval{j}"])
            if not np.isfinite(diff).all():  # NaN or inf where the reference has a number
                return float("inf")
            worst = max(worst, float(diff.max()) / scale)
    return worst


class BundleError(TvmlatError):
    """A bundle is missing, tampered with, truncated, or made for another TVM."""


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_manifest(bundle: str | Path) -> dict[str, Any]:
    """The bundle's manifest, checked for form and version (not the files: see ``verify``)."""
    mp = Path(bundle) / MANIFEST
    if not mp.is_file():
        raise BundleError(f"{bundle} is not a tvmlat bundle (no {MANIFEST}); make one with `tvmlat bundle`")
    m = read_json(mp, BundleError, "valid JSON", "the bundle is damaged: copy it again")
    if not isinstance(m, dict) or m.get("kind") != "tvmlat-bundle":
        raise BundleError(f"{mp} is not a tvmlat bundle manifest")
    if not isinstance(m.get("schema_version"), int):
        raise BundleError(f"{mp} has no integer schema_version; the bundle is damaged")
    if m["schema_version"] > BUNDLE_SCHEMA:
        raise BundleError(f"{mp} has schema_version {m['schema_version']}, newer than this tvmlat reads "
                          f"({BUNDLE_SCHEMA}); upgrade tvmlat")
    if not isinstance(m.get("entries"), list):
        raise BundleError(f"{mp} has no entries list; the bundle is damaged")
    return m


def verify(bundle: str | Path, manifest: dict[str, Any] | None = None) -> list[str]:
    """Problems with the bundle's files (missing, wrong size or checksum); [] when all is well."""
    b = Path(bundle)
    m = manifest or read_manifest(b)
    problems = []
    for e in m["entries"]:
        for kind in ("lib", "data"):
            p = b / e[kind]
            if not p.is_file():
                problems.append(f"{e[kind]} is missing")
            elif p.stat().st_size != e["size"][kind]:
                problems.append(f"{e[kind]} has {p.stat().st_size} bytes, the manifest says {e['size'][kind]} "
                                f"(truncated or replaced)")
            elif sha256(p) != e["sha256"][kind]:
                problems.append(f"{e[kind]} does not match its SHA-256 in the manifest (modified)")
    return problems


class BundleWriter:
    """Builds a bundle entry by entry; the manifest is rewritten atomically after each, so an
    interrupted ``tvmlat bundle`` resumes where it stopped."""

    def __init__(self, out: str | Path, target, meta: dict[str, Any]):
        self.dir = Path(out)
        (self.dir / "libs").mkdir(parents=True, exist_ok=True)
        (self.dir / "data").mkdir(exist_ok=True)
        if (self.dir / MANIFEST).exists():
            self.manifest = read_manifest(self.dir)
            old = self.manifest.get("target", {})
            fields = ("name", "kind", "arch", "profile", "mcpu", "cores", "triple")
            new = target.to_dict()
            if any(old.get(k) != new.get(k) for k in fields):
                raise BundleError(f"{self.dir} holds a bundle for {old.get('name')} ({old.get('arch') or old.get('kind')}"
                                  f", {old.get('profile')}); use another --out")
        else:
            self.manifest = {"kind": "tvmlat-bundle", "schema_version": BUNDLE_SCHEMA, "created": _now(),
                             "target": target.to_dict(), "entries": [], "failed": [], **meta}
        self._copy_runner()
        self._write()

    def done(self) -> set[str]:
        return {e["key"] for e in self.manifest["entries"]} | {f["key"] for f in self.manifest["failed"]}

    def add(self, w, feats: dict[str, Any], art: dict[str, Any], inputs: Sequence) -> None:
        """Record one compiled workload (``art`` from ``compile_to_library`` with files in libs/ and data/)."""
        base = {"key": w.key, "name": w.name, "family": w.family, "spec": w.spec,
                "features": {k: int(v) for k, v in feats.items()}}
        if art["status"] != "ok":
            self.manifest["failed"].append({**base, "status": art["status"], "error": art["error"]})
        else:
            rel = {k: str(Path(art[k]).relative_to(self.dir)) for k in ("lib", "data")}
            self.manifest["entries"].append({
                **base, **rel,
                "inputs": [{"shape": list(a.shape), "dtype": str(a.dtype)} for a in inputs],
                "size": {k: (self.dir / rel[k]).stat().st_size for k in rel},
                "sha256": {k: sha256(self.dir / rel[k]) for k in rel},
                "stages": art.get("stages", {})})
        self._write()

    def _copy_runner(self) -> None:
        src = Path(__file__).resolve().parent
        for rel in RUNNER_MODULES:
            dst = self.dir / "tvmlat" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, dst)

    def _write(self) -> None:
        self.manifest["updated"] = _now()
        write_json(self.dir / MANIFEST, self.manifest, indent=1, sort_keys=True, default=str)


def build_bundle(workloads, target, out: str | Path, meta: dict[str, Any],
                 on_done: Callable[[Any, dict], None] | None = None) -> BundleWriter:
    """Compile every workload not yet in the bundle at ``out`` into it."""
    from .runners.ahead import artefact_name, compile_to_library

    from .loop_features import CacheGeometry

    target.check_toolchain()
    # the rows' loop features are counted for the target's L1 (a board's [cache] table); the manifest
    # records it, and a resumed bundle keeps the one it was started with
    bw = BundleWriter(out, target, {**meta, "cache_geometry": target.geometry().to_dict()})
    geometry = CacheGeometry.from_dict(bw.manifest.get("cache_geometry"))
    done = bw.done()
    for w in workloads:
        if w.key in done:
            continue
        safe = artefact_name(w.key, w.spec)
        try:
            module, inputs = w.make()
            feats = w.count(module, inputs, geometry)
        except Exception as e:  # noqa: BLE001 - a broken workload is recorded, not fatal
            art, feats, inputs = {"status": "export_error", "error": f"{type(e).__name__}: {e}"}, {}, []
        else:
            import numpy as np
            import torch

            seed = input_seed(w.key)
            shapes = [{"shape": list(i.shape), "dtype": str(i.detach().numpy().dtype)} for i in inputs]
            inputs = [torch.from_numpy(a) for a in make_inputs(seed, shapes)]
            art = compile_to_library(module, inputs, target, str(bw.dir / "libs"), safe)
            if art["status"] == "ok":
                from .runners.ahead import load_arrays

                _, refs = load_arrays(art["data"])
                os.remove(art["data"])
                art["data"] = str(bw.dir / "data" / f"{safe}.npz")
                np.savez(art["data"], seed=np.asarray(seed), **sample_reference(refs or [], seed))
                inputs = [i.numpy() for i in inputs]
        bw.add(w, feats, art, inputs)
        if on_done is not None:
            on_done(w, art)
    return bw
