"""Compile cache: a compiled block is kept as (library, inputs + reference) under a key made of the
block id, the target's compile-relevant settings, the compile profile (and tuning budget) and the
TVM version, so re-measuring a block, a second campaign or a resumed one never compiles it twice.

Location: ``$TVMLAT_CACHE`` or ``~/.cache/tvmlat/compiled``; ``--no-cache`` (or TVMLAT_CACHE=off)
turns it off. Entries are written to a temporary name and renamed, so a crash leaves no half entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

CACHE_ENV = "TVMLAT_CACHE"
#: target fields that change the compiled code (not the evaluator, description, RPC address…)
COMPILE_FIELDS = ("kind", "profile", "cores", "mcpu", "triple", "mattr", "arch", "cross_compiler")


def cache_root() -> Path | None:
    env = os.environ.get(CACHE_ENV, "")
    if env.lower() in ("off", "0", "none", "false"):
        return None
    return Path(env) if env else Path.home() / ".cache" / "tvmlat" / "compiled"


def target_key(target: dict[str, Any]) -> str:
    """Hash of what decides the compiled code: compile fields, tuning budget (tuned), TVM version."""
    import tvm

    d = {k: target.get(k) for k in COMPILE_FIELDS}
    if target.get("profile") == "tuned":
        d["trials_per_task"] = target.get("tuning", {}).get("trials_per_task")
    d["tvm"] = tvm.__version__
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


class CompileCache:
    def __init__(self, root: str | Path, target: dict[str, Any]):
        self.dir = Path(root) / f"{target.get('name', 'target')}-{target_key(target)}"

    def get(self, block_id: str) -> dict[str, Any] | None:
        d = self.dir / block_id
        meta = d / "entry.json"
        if not meta.is_file():
            return None
        try:
            info = json.loads(meta.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):  # a damaged entry is a miss: compiled again
            return None
        if not isinstance(info, dict):
            return None
        lib, data = d / "lib.so", d / "data.npz"
        if not (lib.is_file() and data.is_file()):
            return None
        return {"status": "ok", "lib": str(lib), "data": str(data),
                "stages": {**info.get("stages", {}), "cache_hit": 1.0}}

    def put(self, block_id: str, art: dict[str, Any]) -> dict[str, Any]:
        """Store a compiled artefact (files are copied); returns the artefact pointing into the cache."""
        if art.get("status") != "ok":
            return art
        final = self.dir / block_id
        tmp = self.dir / f".{block_id}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copyfile(art["lib"], tmp / "lib.so")
        shutil.copyfile(art["data"], tmp / "data.npz")
        (tmp / "entry.json").write_text(json.dumps({"block_id": block_id, "stages": art.get("stages", {})}))
        try:
            os.replace(tmp, final)
        except OSError:  # another process stored it meanwhile: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        return {**art, "lib": str(final / "lib.so"), "data": str(final / "data.npz")}
