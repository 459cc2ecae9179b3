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
KINDS = {"llvm", "cuda", "torch-eager", "torch-compile"}
PROFILES = {"default", "tuned"}


@dataclass(frozen=True)
class EvaluatorConfig:
    warmup_runs: int = 1
    min_repeat_ms: float = 10.0
    min_repeats: int = 5
    max_repeats: int = 30
    rel_precision: float = 0.01
    max_seconds: float = 1.0
    # > 0: after the consecutive measurement, time every block of the campaign once per round for
    # this many rounds and report the statistics of those spread-out repeats (local runner)
    rounds: int = 0

    def check(self) -> "EvaluatorConfig":
        problems = []
        for name in ("warmup_runs", "min_repeats", "max_repeats", "rounds"):
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
        if self.rounds != 0 and not 2 <= self.rounds <= 1000:
            problems.append("rounds must be 0 (off) or between 2 and 1000")
        if problems:
            raise TargetError("bad [evaluator] settings: " + "; ".join(problems))
        return self


@dataclass(frozen=True)
class TuningConfig:
    """The ``tuned`` profile: MetaSchedule with this many trials per task, a shared JSON database."""

    trials_per_task: int = 32
    # Candidates the evolutionary search keeps per generation. TVM's default, 512, spent ~20 s of
    # CPU per task here on mutating and scoring candidates that a 32-trial budget never measures.
    population: int = 128
    builder_timeout_s: float = 600.0  # candidate builds of a conv took > 30 s (the default) on a 2-vCPU VM
    database: str = ""  # folder of MetaSchedule's JSON database; "" = datasets/<target>/tuning

    def check(self) -> "TuningConfig":
        if not isinstance(self.trials_per_task, int) or isinstance(self.trials_per_task, bool) \
                or self.trials_per_task < 1:
            raise TargetError(f"bad [tuning] settings: trials_per_task must be a positive integer, "
                              f"got {self.trials_per_task!r}")
        if not isinstance(self.population, int) or isinstance(self.population, bool) or self.population < 8:
            raise TargetError(f"bad [tuning] settings: population must be an integer >= 8, got {self.population!r}")
        if not isinstance(self.builder_timeout_s, (int, float)) or not self.builder_timeout_s > 0:
            raise TargetError(f"bad [tuning] settings: builder_timeout_s must be > 0, got {self.builder_timeout_s!r}")
        if not isinstance(self.database, str):
            raise TargetError("bad [tuning] settings: database must be a folder path (a string)")
        return self


DEFAULT_TRACKER = "127.0.0.1:9190"
TRACKER_ENV = "TVMLAT_TRACKER"


def parse_tracker(addr: str) -> tuple[str, int]:
    """``host:port`` -> (host, port), or a TargetError that says what a tracker address looks like."""
    if not isinstance(addr, str) or addr.count(":") != 1:
        raise TargetError(f"tracker address {addr!r} is not HOST:PORT (e.g. 127.0.0.1:9190)")
    host, port_s = addr.split(":")
    if not host or not (port_s.isascii() and port_s.isdigit()) or not 0 < int(port_s) < 65536:
        raise TargetError(f"tracker address {addr!r} is not HOST:PORT with a port in 1..65535 (e.g. 127.0.0.1:9190)")
    return host, int(port_s)


def valid_key(key: str, allow_empty: bool = False) -> bool:
    """An RPC key is what servers register under: printable, no whitespace, no ':' (the tracker's separator)."""
    return (allow_empty and key == "") or (bool(key) and key.isprintable() and ":" not in key
                                           and not any(c.isspace() for c in key))


@dataclass(frozen=True)
class RPCConfig:
    """How to reach a target through TVM's RPC tracker. ``key`` = "" means the target is local.

    The tracker address comes from ``--tracker``, else $TVMLAT_TRACKER, else the target file's."""

    key: str = ""
    tracker: str = DEFAULT_TRACKER
    request_timeout_s: float = 30.0   # no free server under the key within this: a clear error, never a hang
    session_timeout_s: float = 300.0  # the server ends a session older than this; the client stops waiting too
    retries: int = 2                  # a block whose server died or hung is tried again on a new session

    def check(self) -> "RPCConfig":
        if not isinstance(self.key, str) or not valid_key(self.key, allow_empty=True):
            raise TargetError(f"bad [rpc] settings: key must be one word without ':' or spaces, got {self.key!r}")
        parse_tracker(self.tracker)
        for name in ("request_timeout_s", "session_timeout_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < 1e6:
                raise TargetError(f"bad [rpc] settings: {name} must be a number of seconds > 0, got {v!r}")
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise TargetError(f"bad [rpc] settings: retries must be an integer >= 0, got {self.retries!r}")
        return self

    @property
    def address(self) -> tuple[str, int]:
        return parse_tracker(self.tracker)


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
    triple: str = ""            # LLVM target triple of a board, e.g. aarch64-linux-gnu ("" = the host's)
    mattr: tuple[str, ...] = ()  # LLVM features, e.g. ("+neon",)
    cross_compiler: str = ""    # C compiler that links the board's shared library ("" = the host's)
    cross_package: str = ""     # the Debian/Ubuntu package that provides cross_compiler
    rpc: RPCConfig = field(default_factory=RPCConfig)
    arch: str = ""              # CUDA: compute capability as sm_XX ("auto" in the file = this machine's GPU)
    cache: dict = field(default_factory=dict)  # [cache] l1d_sets/l1d_ways/line/l2_bytes: the CPU's L1d and L2 size ({} = detect)

    def geometry(self):
        """The L1 data cache the loop features count for: the file's ``[cache]`` table, else this
        machine's (read from sysfs) for a host CPU target, else ``loop_features.DEFAULT_GEOMETRY``.
        Whether the code is AVX-512 code (``avx512``, versions 11 and 12) is the table's ``avx512`` where
        it says, else what LLVM knows of the CPU the target compiles for (its ``mcpu``, ``mtriple`` and
        ``mattr``): a host target built for ``mcpu = "haswell"`` runs no AVX-512 code on any host."""
        from dataclasses import replace

        from .loop_features import DEFAULT_GEOMETRY, CacheGeometry, host_geometry

        if self.cache:
            g = CacheGeometry.from_dict(self.cache)
            if "avx512" in self.cache:
                return g
        elif self.kind == "llvm" and not self.triple and not self.remote:
            g = host_geometry() or DEFAULT_GEOMETRY
        else:
            g = DEFAULT_GEOMETRY
        avx512 = self.llvm_has_feature("avx512f")
        if avx512 is None and self.triple and not self.triple.startswith("x86_64"):
            avx512 = False  # LLVM could not tell, but a board of another ISA runs no AVX-512 code
        return g if avx512 is None else replace(g, avx512=avx512)

    def llvm_has_feature(self, feature: str) -> bool | None:
        """Whether LLVM's code for this target uses the CPU ``feature`` (e.g. ``avx512f``); None for a
        target that is not LLVM's or a CPU LLVM cannot tell about (imports TVM)."""
        if self.kind != "llvm":
            return None
        try:
            from tvm.target import codegen

            return bool(codegen.target_has_features(feature, self.tvm_target()))
        except Exception:  # noqa: BLE001 - an mcpu this LLVM does not know: say nothing
            return None

    @property
    def remote(self) -> bool:
        """Measured on a device behind an RPC tracker (the target names an RPC key)."""
        return bool(self.rpc.key)

    def with_rpc(self, tracker: str | None = None, key: str | None = None) -> "TargetSpec":
        """This target with ``--tracker`` / ``--rpc-key`` applied (None keeps the file's or the environment's)."""
        from dataclasses import replace

        rpc = self.rpc
        env = os.environ.get(TRACKER_ENV)
        if tracker or env:
            parse_tracker(tracker or env)
            rpc = replace(rpc, tracker=tracker or env)
        if key is not None:
            if not valid_key(key):
                raise TargetError(f"--rpc-key {key!r} is not a valid key (one word without ':' or spaces)")
            rpc = replace(rpc, key=key)
        elif tracker and not rpc.key:
            raise TargetError(f"target {self.name!r} names no RPC key, so --tracker has nothing to ask for; "
                              f"pass --rpc-key KEY (the key its servers registered with)")
        return replace(self, rpc=rpc)

    def check_toolchain(self) -> None:
        """A board target needs its cross compiler here; say which package provides it."""
        import shutil

        if self.cross_compiler and shutil.which(self.cross_compiler) is None:
            pkg = self.cross_package or "the cross compiler's package"
            raise TargetError(f"target {self.name!r} links its libraries with {self.cross_compiler}, which is not "
                              f"installed; install it (e.g. `sudo apt install {pkg}`) or put it on PATH")

    def export_library(self, executable, path: str) -> None:
        """Write a compiled module as a shared library the target can load (cross-linked for boards)."""
        if self.cross_compiler:
            from tvm.support import cc

            self.check_toolchain()
            executable.export_library(path, fcompile=cc.cross_compiler(self.cross_compiler))
        else:
            executable.export_library(path)

    def database_dir(self) -> Path:
        """Where the tuned profile's MetaSchedule database lives (shared by every campaign of this target)."""
        return Path(self.tuning.database) if self.tuning.database else Path("datasets") / self.name / "tuning"

    def with_arch(self, arch: str | None) -> "TargetSpec":
        """A CUDA target for this architecture (``--arch``); ``"auto"`` asks the GPU here. None: resolve the file's."""
        from dataclasses import replace

        if self.kind != "cuda":
            if arch:
                raise TargetError(f"--arch is for CUDA targets; {self.name!r} is {self.kind}")
            return self
        return replace(self, arch=resolve_cuda_arch(arch or self.arch, f"target {self.name!r}"))

    def with_profile(self, profile: str | None) -> "TargetSpec":
        """This target with another compile profile (``--profile``); None keeps the file's."""
        if profile is None or profile == self.profile:
            return self
        if profile not in PROFILES:
            raise TargetError(f"--profile {profile!r} is not supported; supported: {sorted(PROFILES)}")
        from dataclasses import replace

        return replace(self, profile=profile)

    def with_trials(self, trials: int) -> "TargetSpec":
        """This target with another MetaSchedule trial budget per kernel (``--trials``, tuned profile)."""
        from dataclasses import replace

        if self.profile != "tuned":
            raise TargetError(f"--trials applies to the tuned profile only, and target {self.name!r} uses "
                              f"{self.profile!r}; add --profile tuned")
        return replace(self, tuning=replace(self.tuning, trials_per_task=trials).check())

    def tvm_target(self):
        """The ``tvm.target.Target`` this spec compiles for (imports TVM)."""
        import tvm

        d: dict[str, Any] = {"kind": self.kind}
        if self.kind == "llvm":
            d["num-cores"] = self.cores
            if self.mcpu:
                d["mcpu"] = self.mcpu
            if self.triple:
                d["mtriple"] = self.triple
            if self.mattr:
                d["mattr"] = list(self.mattr)
        elif self.kind == "cuda":
            d["arch"] = resolve_cuda_arch(self.arch, f"target {self.name!r}")
            # what every NVIDIA GPU since Kepler offers without opt-in (TVM would guess and warn)
            d.update({"max_shared_memory_per_block": 49152, "max_threads_per_block": 1024, "thread_warp_size": 32})
            return tvm.target.Target(d, host={"kind": "llvm"})
        return tvm.target.Target(d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TargetSpec":
        d = dict(d)
        d["evaluator"] = EvaluatorConfig(**d.get("evaluator", {}))
        d["tuning"] = TuningConfig(**d.get("tuning", {}))
        d["rpc"] = RPCConfig(**d.get("rpc", {}))
        d["mattr"] = tuple(d.get("mattr", ()))
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
    return target_from_dict(raw, source=_source(path), default_name=path.stem)


def _source(path: Path) -> str:
    """Where a target came from, as datasets and predictor files record it: a built-in target as
    ``targets/NAME.toml`` (not this machine's absolute path, which a shipped file would carry to every other),
    any other as given."""
    if path.resolve().parent == PROJECT_TARGETS:
        return f"{PROJECT_TARGETS.name}/{path.name}"
    return str(path)


def _table(raw: dict[str, Any], name: str, cls, where: str):
    """The ``[name]`` table of a target file as a checked ``cls`` (EvaluatorConfig, TuningConfig, RPCConfig)."""
    d = raw.get(name, {})
    if not isinstance(d, dict):
        raise TargetError(f"{where}: [{name}] must be a table")
    allowed = set(cls.__dataclass_fields__)
    bad = set(d) - allowed
    if bad:
        raise TargetError(f"{where}: unknown [{name}] keys {sorted(bad)}; allowed: {sorted(allowed)}")
    try:
        return cls(**d).check()
    except TypeError as e:
        raise TargetError(f"{where}: bad [{name}] settings: {e}") from None
    except TargetError as e:
        raise TargetError(f"{where}: {e}") from None


def target_from_dict(raw: dict[str, Any], source: str = "", default_name: str = "") -> TargetSpec:
    where = source or "target"
    raw = dict(raw)
    known = {"name", "description", "kind", "mcpu", "cores", "profile", "evaluator", "tuning", "triple", "mattr",
             "cross_compiler", "cross_package", "rpc", "arch", "cache"}
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
    if cores == "auto" and raw.get("triple"):
        raise TargetError(f"{where}: cores = \"auto\" counts this machine's cores; a board target (triple set) "
                          f"must say how many cores the board has, e.g. cores = 4")
    if cores == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not isinstance(cores, int) or isinstance(cores, bool) or cores < 1:
        raise TargetError(f"{where}: cores must be a positive integer or \"auto\", got {cores!r}")
    mcpu = raw.get("mcpu", "")
    if not isinstance(mcpu, str):
        raise TargetError(f"{where}: mcpu must be a string")
    triple = raw.get("triple", "")
    if mcpu == "host":
        if triple:
            raise TargetError(f"{where}: mcpu = \"host\" means this machine's CPU; a board target (triple = "
                              f"{triple!r}) names its own CPU, e.g. mcpu = \"cortex-a72\"")
        mcpu = _host_cpu()
    strings = {k: raw.get(k, "") for k in ("triple", "cross_compiler", "cross_package")}
    for k, v in strings.items():
        if not isinstance(v, str):
            raise TargetError(f"{where}: {k} must be a string, got {v!r}")
    mattr = raw.get("mattr", [])
    if not isinstance(mattr, list) or not all(isinstance(a, str) and a[:1] in "+-" and len(a) > 1 for a in mattr):
        raise TargetError(f"{where}: mattr must be a list of LLVM features like [\"+neon\"], got {mattr!r}")
    arch = raw.get("arch", "")
    if kind == "cuda":
        arch = arch or "auto"
        if arch != "auto":
            resolve_cuda_arch(arch, where)  # checks the form; "auto" is resolved when it is used
    elif kind.startswith("torch-"):
        if arch not in ("", "cuda"):
            raise TargetError(f"{where}: a {kind} target runs on the CPU (no arch) or on the GPU (arch = \"cuda\")")
    elif arch:
        raise TargetError(f"{where}: arch is for kind = \"cuda\" targets; an {kind} target names its CPU with mcpu")
    cache = raw.get("cache", {})
    try:
        from .loop_features import CacheGeometry

        CacheGeometry.from_dict(cache, where="[cache]")
    except ValueError as e:
        raise TargetError(f"{where}: {e}") from None
    rpc = _table(raw, "rpc", RPCConfig, where)
    ev = _table(raw, "evaluator", EvaluatorConfig, where)
    tuning = _table(raw, "tuning", TuningConfig, where)
    return TargetSpec(name=str(raw.get("name", default_name)), kind=kind, profile=profile, cores=cores, tuning=tuning,
                      mcpu=mcpu, description=str(raw.get("description", "")), evaluator=ev, source=source,
                      mattr=tuple(mattr), rpc=rpc, arch=arch, cache=dict(cache), **strings)


def detect_cuda_arch() -> str | None:
    """sm_XX of GPU 0 from nvidia-smi, or None when there is no NVIDIA GPU (or driver) here."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    if not out or "." not in out[0]:
        return None
    major, minor = out[0].split(".", 1)
    return f"sm_{major}{minor}" if major.isdigit() and minor.isdigit() else None


def resolve_cuda_arch(arch: Any, where: str = "target") -> str:
    """``"auto"`` (or empty) -> this machine's GPU architecture; ``"sm_90"`` stays; anything else is an error."""
    if arch in ("", "auto", None):
        found = os.environ.get("TVMLAT_CUDA_ARCH") or detect_cuda_arch()
        if not found:
            raise TargetError(f"{where}: arch = \"auto\" but no NVIDIA GPU was found here to read it from; "
                              f"name the GPU's architecture (e.g. --arch sm_90 for H100, sm_80 for A100) to "
                              f"compile for it on this machine")
        arch = found
    import re

    if not (isinstance(arch, str) and re.fullmatch(r"sm_[0-9]{2,3}a?", arch)):
        raise TargetError(f"{where}: arch = {arch!r} is not a CUDA architecture like \"sm_90\" (or \"auto\")")
    return arch
