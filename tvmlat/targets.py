"""TargetSpec: one target (device + backend + compile profile + evaluator settings) from a TOML file.

Lookup of ``--target NAME``: a path to a .toml file; else ``NAME.toml`` in ``$TVMLAT_TARGETS``,
``./targets`` and the project's ``targets/`` folder, in that order.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import TargetError

PROJECT_TARGETS = Path(__file__).resolve().parent.parent / "targets"
KINDS = {"llvm"}
PROFILES = {"default", "tuned"}


@dataclass(frozen=True)
class EvaluatorConfig:
    warmup_runs: int = 1
    min_repeat_ms: float = 10.0
    min_repeats: int = 5
    max_repeats: int = 30
    rel_precision: float = 0.01
    max_seconds: float = 1.0

    def check(self) -> "EvaluatorConfig":
        problems = []
        for name in ("warmup_runs", "min_repeats", "max_repeats"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise TargetError(f"bad [evaluator] settings: {name} must be an integer, got {v!r}")
        for name in ("min_repeat_ms", "rel_precision", "max_seconds"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise TargetError(f"bad [evaluator] settings: {name} must be a finite number, got {v!r}")
        if self.warmup_runs < 0:
            problems.append("warmup_runs must be >= 0")
        if self.min_repeat_ms <= 0:
            problems.append("min_repeat_ms must be > 0")
        if not 3 <= self.min_repeats <= self.max_repeats:
            problems.append("need 3 <= min_repeats <= max_repeats")
        if not 0 < self.rel_precision < 1:
            problems.append("rel_precision must be in (0, 1)")
        if self.max_seconds <= 0:
            problems.append("max_seconds must be > 0")
        if problems:
            raise TargetError("bad [evaluator] settings: " + "; ".join(problems))
        return self


@dataclass(frozen=True)
class TuningConfig:
    """The ``tuned`` profile: MetaSchedule with this many trials per task, a shared JSON database."""

    trials_per_task: int = 32
    builder_timeout_s: float = 600.0  # candidate builds of a conv took > 30 s (the default) on a 2-vCPU VM
    database: str = ""  # folder of MetaSchedule's JSON database; "" = datasets/<target>/tuning

    def check(self) -> "TuningConfig":
        if not isinstance(self.trials_per_task, int) or isinstance(self.trials_per_task, bool) \
                or self.trials_per_task < 1:
            raise TargetError(f"bad [tuning] settings: trials_per_task must be a positive integer, "
                              f"got {self.trials_per_task!r}")
        if not isinstance(self.builder_timeout_s, (int, float)) or not self.builder_timeout_s > 0:
            raise TargetError(f"bad [tuning] settings: builder_timeout_s must be > 0, got {self.builder_timeout_s!r}")
        if not isinstance(self.database, str):
            raise TargetError("bad [tuning] settings: database must be a folder path (a string)")
        return self


@dataclass(frozen=True)
class TargetSpec:
    name: str
    kind: str
    profile: str = "default"
    cores: int = 1
    mcpu: str = ""
    description: str = ""
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    source: str = ""
    tuning: TuningConfig = field(default_factory=TuningConfig)

    def database_dir(self) -> Path:
        """Where the tuned profile's MetaSchedule database lives (shared by every campaign of this target)."""
        return Path(self.tuning.database) if self.tuning.database else Path("datasets") / self.name / "tuning"

    def with_profile(self, profile: str | None) -> "TargetSpec":
        """This target with another compile profile (``--profile``); None keeps the file's."""
        if profile is None or profile == self.profile:
            return self
        if profile not in PROFILES:
            raise TargetError(f"--profile {profile!r} is not supported; supported: {sorted(PROFILES)}")
        from dataclasses import replace

        return replace(self, profile=profile)

    def tvm_target(self):
        """The ``tvm.target.Target`` this spec compiles for (imports TVM)."""
        import tvm

        d: dict[str, Any] = {"kind": self.kind}
        if self.kind == "llvm":
            d["num-cores"] = self.cores
            if self.mcpu:
                d["mcpu"] = self.mcpu
        return tvm.target.Target(d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TargetSpec":
        d = dict(d)
        d["evaluator"] = EvaluatorConfig(**d.get("evaluator", {}))
        d["tuning"] = TuningConfig(**d.get("tuning", {}))
        return cls(**d)


def search_paths() -> list[Path]:
    paths = []
    if os.environ.get("TVMLAT_TARGETS"):
        paths += [Path(p) for p in os.environ["TVMLAT_TARGETS"].split(os.pathsep) if p]
    paths += [Path.cwd() / "targets", PROJECT_TARGETS]
    seen, out = set(), []
    for p in paths:
        rp = p.resolve()
        if rp not in seen:
            seen.add(rp)
            out.append(p)
    return out


def available_targets() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in search_paths():
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                found.setdefault(f.stem, f)
    return found


def _host_cpu() -> str:
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def load_target(name_or_path: str) -> TargetSpec:
    """Load and validate a target; every problem is a TargetError with a one-line message."""
    p = Path(name_or_path)
    if name_or_path.endswith(".toml") or p.is_file():
        if not p.is_file():
            raise TargetError(f"target file {name_or_path} does not exist")
        path = p
    else:
        targets = available_targets()
        if name_or_path not in targets:
            known = ", ".join(sorted(targets)) or "none"
            raise TargetError(f"unknown target {name_or_path!r}; known targets: {known} (see `tvmlat targets`)")
        path = targets[name_or_path]
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise TargetError(f"{path}: not a UTF-8 text file; a target is a TOML file like targets/llvm.toml") from None
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"{path}: not valid TOML ({e}); fix the file or copy targets/llvm.toml") from None
    return target_from_dict(raw, source=str(path), default_name=path.stem)


def target_from_dict(raw: dict[str, Any], source: str = "", default_name: str = "") -> TargetSpec:
    where = source or "target"
    raw = dict(raw)
    known = {"name", "description", "kind", "mcpu", "cores", "profile", "evaluator", "tuning"}
    extra = set(raw) - known
    if extra:
        raise TargetError(f"{where}: unknown keys {sorted(extra)}; allowed: {sorted(known)}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise TargetError(f"{where}: kind = {kind!r} is not supported; supported kinds: {sorted(KINDS)}")
    profile = raw.get("profile", "default")
    if profile not in PROFILES:
        raise TargetError(f"{where}: profile = {profile!r} is not supported; supported: {sorted(PROFILES)}")
    cores = raw.get("cores", "auto")
    if cores == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not isinstance(cores, int) or isinstance(cores, bool) or cores < 1:
        raise TargetError(f"{where}: cores must be a positive integer or \"auto\", got {cores!r}")
    mcpu = raw.get("mcpu", "")
    if not isinstance(mcpu, str):
        raise TargetError(f"{where}: mcpu must be a string")
    if mcpu == "host":
        mcpu = _host_cpu()
    ev_raw = raw.get("evaluator", {})
    if not isinstance(ev_raw, dict):
        raise TargetError(f"{where}: [evaluator] must be a table")
    allowed = set(EvaluatorConfig.__dataclass_fields__)
    bad = set(ev_raw) - allowed
    if bad:
        raise TargetError(f"{where}: unknown [evaluator] keys {sorted(bad)}; allowed: {sorted(allowed)}")
    try:
        ev = EvaluatorConfig(**ev_raw).check()
    except TypeError as e:
        raise TargetError(f"{where}: bad [evaluator] settings: {e}") from None
    except TargetError as e:
        raise TargetError(f"{where}: {e}") from None
    tu_raw = raw.get("tuning", {})
    if not isinstance(tu_raw, dict):
        raise TargetError(f"{where}: [tuning] must be a table")
    bad = set(tu_raw) - set(TuningConfig.__dataclass_fields__)
    if bad:
        raise TargetError(f"{where}: unknown [tuning] keys {sorted(bad)}; allowed: "
                          f"{sorted(TuningConfig.__dataclass_fields__)}")
    try:
        tuning = TuningConfig(**tu_raw).check()
    except TargetError as e:
        raise TargetError(f"{where}: {e}") from None
    return TargetSpec(name=str(raw.get("name", default_name)), kind=kind, profile=profile, cores=cores, tuning=tuning,
                      mcpu=mcpu, description=str(raw.get("description", "")), evaluator=ev, source=source)
