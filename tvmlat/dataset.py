"""Datasets: one parquet file per campaign plus a meta.json with provenance.

``datasets/<target>/<campaign>.parquet`` holds one row per (block, target, compile profile);
failures are rows too. Each row is written as soon as it is measured, by rewriting the file
atomically (write to a temporary file, then rename), so a crash or Ctrl-C loses at most the
block in flight and a re-run resumes from what is on disk.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from .errors import DatasetError
from .features import FEATURE_COLUMNS
from .jsonfile import read_json, write_json

SCHEMA_VERSION = 1

ID_COLUMNS = ["block_id", "name", "family", "spec", "target", "profile"]
RESULT_COLUMNS = [
    "status", "error", "latency_ms_median", "latency_ms_p10", "latency_ms_p90", "latency_cov", "ci_rel",
    "n_runs", "number", "repeats", "max_rel_err", "export_s", "import_s", "tune_s", "compile_s", "measure_s",
    "energy_mj", "peak_memory_bytes", "measured_at", "wall_s",
    "cache_hit",  # 1: the compiled block came from the compile cache (export/import/compile_s are the original's)
    "upload_s", "server", "attempts", "rpc_errors",  # remote targets: where it ran, sessions used, what failed
    "power_w", "idle_power_w", "energy_note",  # where the target measures power (NVML); note: why not trustworthy
    # interleaved rounds: how many (0: the statistics are the consecutive repeats'), the consecutive
    # median they replaced, and |log(median of odd rounds / median of even rounds)|
    "rounds", "latency_ms_first", "half_diff_rel",
    # the rounds as timed: their median, each round's ms (JSON list) and the campaign's common speed
    # per round that the statistics above are divided by (JSON list; missing: too few blocks to tell)
    "latency_ms_raw", "rounds_ms", "round_drift",
]
COLUMNS = ID_COLUMNS + RESULT_COLUMNS + FEATURE_COLUMNS


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("tvm", "torch", "numpy", "tvmlat"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - provenance is best effort
            out[mod] = "unknown"
    return out


def host_info() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"hostname": platform.node(), "machine": platform.machine(), "cpu": cpu, "cores": os.cpu_count()}


#: what a latency predictor is fitted on: which blocks, their features and their timings. A predictor's
#: ``dataset_hash`` covers these columns only, so a column filled in later (``tvmlat memory`` writes
#: peak_memory_bytes) leaves it true, while a changed timing, feature or block makes it stale.
FIT_COLUMNS = ID_COLUMNS + ["status", "latency_ms_median", "latency_ms_p10", "latency_ms_p90",
                            "latency_cov"] + FEATURE_COLUMNS


def _cell(v: Any) -> Any:
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    return v.item() if hasattr(v, "item") else v


def dataset_hash(path: str | Path) -> str:
    """A hash of the rows a latency predictor is fitted on (``FIT_COLUMNS``, in the file's row order; values
    written as JSON, so it does not depend on how parquet or pandas store them)."""
    df = read_dataset(path)
    cols = [c for c in FIT_COLUMNS if c in df]
    rows = [[_cell(v) for v in row] for row in df[cols].itertuples(index=False, name=None)]
    text = json.dumps({"columns": cols, "rows": rows}, separators=(",", ":"), default=str)
    return "rows:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def meta_path(parquet: str | Path) -> Path:
    p = Path(parquet)
    return p.with_name(p.stem + ".meta.json")


#: what ``read_dataset`` advises for a file that is not there (a caller that knows what makes it says that instead)
MAKE_DATASET = "run `tvmlat calibrate` or give the path of a .parquet file"


def read_dataset(path: str | Path, missing_hint: str = MAKE_DATASET) -> pd.DataFrame:
    """A tvmlat dataset's rows; DatasetError for a missing file (with ``missing_hint``: how to make it), an
    unreadable one, or a parquet without tvmlat's columns."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"dataset {p} does not exist; {missing_hint}")
    try:
        df = pd.read_parquet(p)
    except Exception as e:  # noqa: BLE001
        raise DatasetError(f"{p} is not a readable parquet file ({type(e).__name__}); was it written by tvmlat?") from None
    missing = [c for c in ("block_id", "status", "latency_ms_median") if c not in df.columns]
    if missing:
        raise DatasetError(f"{p} lacks the columns {missing}; it is not a tvmlat dataset")
    return df


def read_meta(path: str | Path) -> dict[str, Any]:
    mp = meta_path(path)
    if not mp.is_file():
        return {}
    meta = read_json(mp, DatasetError, "valid JSON", "fix it or move it away (the .parquet beside it keeps the rows)")
    if not isinstance(meta, dict):
        raise DatasetError(f"{mp} is not a tvmlat meta.json (not a JSON object); move it away")
    if not isinstance(meta.get("schema_version", 0), int):
        raise DatasetError(f"{mp} has schema_version {meta['schema_version']!r}, not a whole number; the file "
                           "is damaged: fix it or move it away")
    if meta.get("schema_version", 0) > SCHEMA_VERSION:
        raise DatasetError(f"{mp} has schema_version {meta['schema_version']}, newer than this tvmlat "
                           f"understands ({SCHEMA_VERSION}); upgrade tvmlat")
    return meta


def dataset_label(path: str | Path) -> str:
    """A short name for a dataset's target in tables and plots: the target's name, with the chip LLVM was
    told (``mcpu``) where there is one, so two ``llvm`` datasets of different CPUs read apart
    (``llvm (emeraldrapids)``, ``llvm (znver4)``); the file's stem without a meta.json."""
    meta = read_meta(path)
    name = meta.get("target_name")
    if not name:
        return Path(path).stem
    target = meta.get("target")
    mcpu = target.get("mcpu") if isinstance(target, dict) else None
    return f"{name} ({mcpu})" if isinstance(mcpu, str) and mcpu else str(name)


class CampaignWriter:
    """Appends rows to a campaign's parquet file; resumes from what is already there."""

    def __init__(self, path: str | Path, meta: dict[str, Any]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.meta = {"schema_version": SCHEMA_VERSION, **meta}
        old_meta = read_meta(self.path)
        self.previous_meta = old_meta if self.path.exists() else {}  # what the campaign recorded before this run
        if self.path.exists():
            self.df = read_dataset(self.path)
            old_cpu = old_meta.get("host", {}).get("cpu")
            new_cpu = self.meta.get("host", {}).get("cpu")
            checks = [("target_name", old_meta.get("target_name"), self.meta.get("target_name")),
                      ("profile", old_meta.get("profile"), self.meta.get("profile")),
                      ("mcpu", old_meta.get("target", {}).get("mcpu"), self.meta.get("target", {}).get("mcpu")),
                      ("host cpu", old_cpu, new_cpu),
                      ("RPC key", old_meta.get("device", {}).get("rpc_key"), self.meta.get("device", {}).get("rpc_key"))]
            planes = [(m.get("sampler") or {}).get("planes", "default") for m in (old_meta, self.meta)]
            if len(self.df) and "sampler" in old_meta and "sampler" in self.meta and planes[0] != planes[1]:
                raise DatasetError(f"{self.path.name} was sampled with --planes {planes[0]}, not {planes[1]}: its blocks "
                                   f"are another draw; give another --campaign name, or the same --planes to resume it")
            for key, old, new in checks:
                if old is not None and new is not None and old != new:
                    raise DatasetError(
                        f"{self.path} was measured with {key}={old!r}, not {new!r}; resuming would mix the two: "
                        f"use another --out or --campaign name")
            self.meta["created"] = old_meta.get("created", self.meta.get("created"))
            refs = list(old_meta.get("model_refs") or [])
            self.meta["model_refs"] = refs + [r for r in self.meta.get("model_refs") or [] if r not in refs]
            for key in ("notes", "wall_s_last_run", "tuning_last_run"):  # until this run's finish() says otherwise
                if old_meta.get(key):
                    self.meta[key] = old_meta[key]
            if not self.meta["model_refs"]:
                del self.meta["model_refs"]
            if (old_meta.get("features_version") != self.meta.get("features_version")
                    or old_meta.get("cache_geometry") != self.meta.get("cache_geometry")) and len(self.df):
                # rows counted by older code (or for no recorded L1): recount them, so the file's rows
                # agree with the meta.json written below (a legacy file's model rows from the reference
                # being measured now, the usual resume)
                self.df = refresh_features(self.df, self.geometry, self.meta.get("model_refs"), str(self.path))
                self._write()
        else:
            self.df = pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in COLUMNS})
        self.meta.setdefault("created", _now())
        self._write_meta()

    @property
    def geometry(self):
        """The L1 geometry its rows' loop features are counted for (meta.json's ``cache_geometry``)."""
        from .loop_features import CacheGeometry

        return CacheGeometry.from_dict(self.meta.get("cache_geometry"))

    def done_ids(self) -> set[str]:
        """Blocks that need no new measurement: every row already written (failures included)."""
        return set(self.df["block_id"].astype(str))

    def append(self, row: dict[str, Any]) -> None:
        row = {c: row.get(c) for c in COLUMNS}
        row["measured_at"] = row.get("measured_at") or _now()
        new = pd.DataFrame([row], columns=COLUMNS).astype({c: _dtype(c) for c in COLUMNS})
        self.df = new if self.df.empty else pd.concat([self.df, new], ignore_index=True)
        self._write()

    def update(self, changes: dict[str, dict[str, Any]]) -> None:
        """Overwrite fields of rows already written (``{block_id: {column: value}}``), in one atomic rewrite."""
        if not changes:
            return
        idx = {k: i for i, k in enumerate(self.df["block_id"].astype(str))}
        for key, fields in changes.items():
            if key not in idx:
                raise DatasetError(f"cannot update {key!r}: no such row in {self.path}")
            for col, v in fields.items():
                if col not in self.df.columns:
                    self.df[col] = pd.Series(pd.NA if _dtype(col) != "float64" else float("nan"),
                                             index=self.df.index, dtype=_dtype(col))
                self.df.loc[idx[key], col] = v
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.df.to_parquet(tmp, index=False)
        os.replace(tmp, self.path)

    def _write_meta(self) -> None:
        self.meta["updated"] = _now()
        mp = meta_path(self.path)
        write_json(mp, self.meta, indent=2, sort_keys=True, default=str)

    def finish(self, **extra: Any) -> None:
        self.meta.update(extra)
        self.meta["rows"] = int(len(self.df))
        self._write_meta()


def _dtype(col: str) -> str:
    if col in ("block_id", "name", "family", "spec", "target", "profile", "status", "error", "measured_at",
               "server", "rpc_errors", "energy_note", "rounds_ms", "round_drift"):
        return "string"
    if col in FEATURE_COLUMNS or col in ("n_runs", "number", "repeats", "attempts", "rounds"):
        return "Int64"
    return "float64"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows usable for fitting: status ok and a positive median latency."""
    out = df[(df["status"] == "ok") & (df["latency_ms_median"] > 0)]
    return out.reset_index(drop=True)


def spec_rows(df: pd.DataFrame):
    """Which rows were measured from a block spec (their ``spec`` column is set), not from a model reference."""
    if "spec" not in df:
        return pd.Series(False, index=df.index)
    return df["spec"].fillna("").astype(str).str.len() > 0


def refresh_features(df: pd.DataFrame, geometry, model_refs: list[dict[str, Any]] | None = None,
                     where: str = "the dataset", columns: Sequence[str] = FEATURE_COLUMNS) -> pd.DataFrame:
    """Recompute the feature columns of every row (``columns`` of them; the rest stay as stored), loop features for
    the L1 ``geometry``: block rows from their spec, rows measured from a model reference (no spec) by loading it
    again from ``model_refs`` (meta.json's, see ``model_ref_record``). Rows of neither kind are a DatasetError
    that says what to do: left as they were, they would be fitted with another version's features."""
    df = df.copy()
    has_spec = spec_rows(df)
    fresh = [_specs_frame([spec_of(s, where) for s in df.loc[has_spec, "spec"]], geometry, where)
             .set_axis(df.index[has_spec])] if has_spec.any() else []
    if (~has_spec).any():
        fresh.append(_recount_model_rows(df.loc[~has_spec], model_refs or [], geometry, where))
    for part in fresh:
        whole = part.index.equals(df.index)  # every row from its spec: the columns replaced at once
        for c in columns:
            if whole:
                df[c] = part[c].astype("int64").astype("Int64")
                continue
            if c not in df:  # a column newer than the file: integers like the rest, not floats
                df[c] = pd.Series(0, index=df.index, dtype="Int64")
            df.loc[part.index, c] = part[c].astype("int64")
            df[c] = df[c].astype("Int64")
    return df


def spec_of(text: str, where: str):
    """A row's ``spec`` column as a BlockSpec; text that is not one (a file edited by hand) is a DatasetError."""
    from .specs import BlockSpec

    try:
        return BlockSpec.from_json(text)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise DatasetError(f"{where}: a row's spec column is not a block spec ({type(e).__name__}: {e}): "
                           f"{str(text)[:120]}; drop that row or measure the block again") from None


def _specs_frame(specs: list, geometry, where: str = "the dataset") -> pd.DataFrame:
    """The feature columns of ``specs``, a row each: the closed forms counted per family on arrays
    (``analytic_frame``; a fit that chooses the core's parameters counts every row 18-27 times), or spec by spec
    (``spec_features``: the counter where the closed form does not know a spec) where any spec is one the
    closed forms refuse. A spec neither can count (an unknown family, a shape the block cannot have: a file edited
    by hand) is a DatasetError that names it."""
    from .analytic_features import analytic_frame
    from .features import spec_features

    try:
        return analytic_frame(specs, geometry=geometry)[FEATURE_COLUMNS]
    except (KeyError, ValueError, TypeError):
        pass
    rows = []
    for s in specs:
        try:
            rows.append(spec_features(s, geometry))
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            why = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise DatasetError(f"{where}: a row's block spec cannot be counted ({why}): {s.to_json()}; drop that row "
                               f"or measure the block again") from None
    return pd.DataFrame(rows, columns=FEATURE_COLUMNS)


def model_ref_record(ref: str, layers: bool = False) -> dict[str, Any]:
    """How a dataset's meta.json remembers a MODEL_REF its rows were measured from (``model_refs``),
    so that a later features version can count them again: its file made absolute, and whether
    it was split into layers (``measure --layers``)."""
    if ":" in ref and not ref.startswith("torchvision:"):
        path, _, attr = ref.rpartition(":")
        ref = f"{Path(path).resolve()}:{attr}"
    return {"ref": ref, "layers": bool(layers)}


def _recount_model_rows(rows: pd.DataFrame, refs: list[dict[str, Any]], geometry, where: str) -> pd.DataFrame:
    """Features of rows measured from model references, counted again from ``refs`` by row name."""
    from .errors import TvmlatError
    from .modelref import load_model_ref, recorded_ref
    from .op_counter import count_features
    from .split import split_entries

    names = list(dict.fromkeys(rows["name"].astype(str)))
    again = ("measure them again with `tvmlat measure MODEL_REF --out NEW.parquet` (`--layers` if they were "
             "layers), or leave this file out")
    if not refs:
        raise DatasetError(f"{where}: {len(names)} rows (e.g. {names[0]!r}) were measured from a model reference "
                           f"and counted with other features (an older tvmlat, or another cache), and it does not "
                           f"record which reference (written before tvmlat kept that); {again}")
    counted: dict[str, dict[str, int]] = {}
    for rec in refs:
        try:
            ref = recorded_ref(str(rec["ref"]), Path(where).parent)
            entries = load_model_ref(ref)
            if rec.get("layers"):
                entries = split_entries(entries, ref)
        except (TvmlatError, KeyError, TypeError) as e:
            raise DatasetError(f"{where}: recounting its rows' features needs the model reference they were "
                               f"measured from, which no longer loads ({e}); restore it, or {again}") from None
        for name, (module, inputs) in entries.items():
            if name in names and name not in counted:
                try:
                    counted[name] = count_features(module, inputs, geometry=geometry)
                except Exception:  # noqa: BLE001 - it did not build when measured either (a failed row)
                    counted[name] = None
    missing = [n for n in names if n not in counted]
    if missing:
        refs_s = ", ".join(str(r.get("ref")) for r in refs)
        raise DatasetError(f"{where}: rows {missing[:3]} are not entries of the model references it records "
                           f"({refs_s}) any more, so their features can't be counted again; {again}")
    # a module that no longer counts keeps its row's old values (such a row failed; fitting skips it)
    return pd.DataFrame([counted[n] or {c: (0 if pd.isna(r[c]) else r[c]) for c in FEATURE_COLUMNS}
                         for n, (_, r) in zip(rows["name"].astype(str), rows.iterrows())], index=rows.index)


def meta_geometry(path: str | Path, meta: dict[str, Any] | None = None):
    """The L1 geometry a dataset's loop features were counted with (its meta.json, or ``meta`` read
    from it already; default if none)."""
    from .loop_features import CacheGeometry

    try:
        return CacheGeometry.from_dict((read_meta(path) if meta is None else meta).get("cache_geometry"))
    except ValueError as e:
        raise DatasetError(f"{meta_path(path)}: {e}") from None


def load_for_fit(path: str | Path, geometry=None) -> pd.DataFrame:
    """A dataset with features as the current code defines them, counted for ``geometry`` (default: the
    dataset's own L1 geometry). Older datasets, or another geometry, get their features recounted."""
    from .features import FEATURES_VERSION

    df = read_dataset(path)
    meta = read_meta(path)
    own = meta_geometry(path, meta)
    want = geometry or own
    if (meta.get("features_version") != FEATURES_VERSION or want != own
            or any(c not in df for c in FEATURE_COLUMNS)):
        for c in FEATURE_COLUMNS:
            if c not in df:
                df[c] = pd.Series(0, index=df.index, dtype="Int64")
        df = refresh_features(df, want, meta.get("model_refs"), str(path))
    return df


def datasets_model_refs(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The model references (``model_ref_record``s) of several datasets' meta.json files, in order: what their rows
    measured from a model reference are counted again from."""
    return [r for p in paths for r in (read_meta(p).get("model_refs") or [])]


def datasets_geometry(paths: Iterable[str | Path]):
    """The one L1 geometry of several datasets; a one-line error where they differ."""
    paths = list(paths)
    geoms = {str(p): meta_geometry(p) for p in paths}
    if len(set(geoms.values())) > 1:
        listed = "; ".join(f"{p}: {g.describe()}" for p, g in geoms.items())
        l1s = {(g.sets, g.ways, g.line) for g in geoms.values()}
        if len(l1s) == 1 and 0 in {g.l2 for g in geoms.values()}:  # one from before the L2 was recorded
            raise DatasetError(f"these datasets record different caches ({listed}): the one without an L2 size was "
                               "measured before tvmlat recorded it; if it is the same CPU, add its \"l2_bytes\" to "
                               "\"cache_geometry\" in its meta.json, else fit a predictor per CPU")
        raise DatasetError(f"these datasets were measured on CPUs with different caches ({listed}); "
                           "fit a predictor per CPU")
    from .loop_features import DEFAULT_GEOMETRY

    return next(iter(geoms.values()), DEFAULT_GEOMETRY)


def concat_datasets(paths: Iterable[str | Path], geometry=None) -> pd.DataFrame:
    """Datasets as one frame, features counted for ``geometry`` (default: their common L1 geometry);
    column ``campaign`` names each row's file (its stem), for ``campaigns.campaign_speeds``."""
    paths = list(paths)
    seen: dict[Path, int] = {}
    for i, p in enumerate(paths):
        if (j := seen.setdefault(Path(p).resolve(), i)) != i:
            first = paths[j]
            raise DatasetError(f"dataset {p} is given twice" + (f" (also as {first})" if str(first) != str(p) else "")
                               + "; give each dataset once, or its blocks count double")
    g = geometry or datasets_geometry(paths)
    frames = [load_for_fit(p, g).assign(campaign=Path(p).stem) for p in paths]  # campaigns.CAMPAIGN
    if not frames:
        raise DatasetError("no dataset given")
    from .loop_features import stamp_geometry

    return stamp_geometry(pd.concat(frames, ignore_index=True), g)
