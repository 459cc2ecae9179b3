"""Helpers shared by the commands: output formats and tables."""

from __future__ import annotations

import json
import math
import numbers
import sys
from enum import Enum
from typing import Any, Sequence

import pandas as pd
from rich.console import Console
from rich.table import Table

from ..errors import TvmlatError
from ..metrics import MS_SPLIT, TABLE_LABELS


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


#: help of --chain-overlap (fit, calibrate)
CHAIN_OVERLAP_HELP = ("steps of a multiply-add chain the core hides (features version 23): auto chooses it by the fit "
                      "of the loops features, or give a number [auto]; the fit chooses the thrash reach (version 24) "
                      "either way")


def console(stderr: bool = False) -> Console:
    c = Console(stderr=stderr, highlight=False)
    if not c.is_terminal:  # piped or logged: don't squeeze tables into 80 columns
        c = Console(stderr=stderr, highlight=False, width=200, soft_wrap=True)
    return c


def check_seed(seed: int) -> None:
    """A sampler seed is 0 or more (it names the campaign: ``-s<seed>``)."""
    if seed < 0:
        raise TvmlatError(f"--seed {seed} is negative; give 0 or more (the same seed samples the same blocks)")


def load_requested(path, profile: str | None, interval: float | None, *, network_correction: bool = True):
    """The predictor file ``path`` as `predict` and `analyze` use it, after the one-line errors they give before
    any counting: a predictor fitted for another compile ``profile``; with ``interval``, a file without interval
    data or a coverage outside (0, 1). Without ``network_correction`` (``--no-network-correction``) the predictor
    leaves a stored network correction out."""
    from ..predictors import load_predictor

    pred = load_predictor(path)
    if profile is not None and profile != pred.profile:
        raise TvmlatError(f"{path} was fitted for compile profile {pred.profile!r}, not {profile!r}; "
                          f"calibrate a predictor with that profile")
    if interval is not None:
        from ..predictors.conformal import conformal_quantile

        pred.interval_calibration()
        conformal_quantile([0.0], interval)  # raises the coverage's one-line error
    if not network_correction:
        pred.without_network_correction()
    return pred


def warn_unpriced(names, unpriced, what: str = "entries") -> None:
    """One warning line on stderr naming the ``names`` whose ``unpriced`` features (``LoadedPredictor.unpriced``)
    no calibration block had: their predictions leave that work out."""
    bad = [(n, u) for n, u in zip(names, unpriced) if u]
    if not bad:
        return
    shown = "; ".join(f"{n} ({', '.join(u)})" for n, u in bad[:3]) + (f"; {len(bad) - 3} more" if len(bad) > 3 else "")
    console(stderr=True).print(
        f"[yellow]warning: {len(bad)} of {len(names)} {what} have work of a kind no calibration block had, which "
        f"the predictor prices at 0 (so predicts too low): {shown}; calibrate with blocks that have it (all families)[/]")


def _fmt(v: Any) -> str:
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        v = int(v)
    elif isinstance(v, numbers.Real) and not isinstance(v, bool):
        v = float(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3e}"
        return f"{v:.4g}" if abs(v) < 1 else f"{v:,.3f}".rstrip("0").rstrip(".")
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


#: dataset columns holding a JSON list (each round's ms, the drift divided out)
JSON_LIST_COLUMNS = ("rounds_ms", "round_drift")


def emit(rows: Sequence[dict[str, Any]], fmt: Format, columns: Sequence[str], title: str = "") -> None:
    """Print rows as a rich table, CSV or JSON (a list of objects) on stdout."""
    if fmt == Format.json:
        def clean(k, v):
            if isinstance(v, str) and k in JSON_LIST_COLUMNS:
                try:
                    return json.loads(v)  # stored as JSON text in the dataset; a list here
                except ValueError:
                    return v  # not tvmlat's writing (an edited file): passed on as it is
            return None if isinstance(v, float) and math.isnan(v) else v
        print(json.dumps([{k: clean(k, r.get(k)) for k in r} for r in rows], indent=2, default=str))
    elif fmt == Format.csv:
        pd.DataFrame(list(rows), columns=list(columns)).to_csv(sys.stdout, index=False)
    else:
        t = Table(title=title or None)
        for c in columns:
            left = c in ("name", "family", "status", "error", "split", "target", "model", "op", "as")
            t.add_column(c, justify="left" if left else "right", no_wrap=c in ("name", "model"))
        for r in rows:
            t.add_row(*[_fmt(r.get(c, "")) for c in columns])
        console().print(t)


def metrics_table(results: dict[str, dict[str, float]], title: str, quantity: str | None = None) -> Table:
    """One column per evaluation (e.g. in-sample, held-out families, 5-fold), one row per metric. ``quantity``
    (e.g. "peak bytes"): the table is of something other than latency, so it has no rows split at 1 ms, none
    that no evaluation filled, and its R2 is of that quantity's log."""
    t = Table(title=title)
    t.add_column("metric")
    for name in results:
        t.add_column(name, justify="right")
    for key, label in TABLE_LABELS.items():
        if quantity is not None:
            if key in MS_SPLIT or all(
                    math.isnan(m.get(key, math.nan)) for m in results.values()):
                continue
            label = f"R2 (log {quantity})" if key == "r2_log" else label
        vals = []
        for m in results.values():
            v = m.get(key, math.nan)
            if key.startswith("within") or key == "cov90":
                vals.append("-" if math.isnan(v) else f"{100 * v:.0f} %")
            elif key == "n":
                vals.append(str(v))
            else:
                vals.append("-" if math.isnan(v) else f"{v:.3g}" if key in ("spearman", "r2_log")
                            else f"{v:.2f}" if key == "width90" else f"{v:.1f}")  # a width of 0.29 is not 0.3
        t.add_row(label, *vals)
    return t


TRACKER_HELP = "RPC tracker HOST:PORT [the target's [rpc] tracker, or $TVMLAT_TRACKER]"
RPC_KEY_HELP = "RPC key of the devices to measure on [the target's [rpc] key]; makes any target remote"


def resolve_target(name: str, profile: str | None, tracker: str | None = None, rpc_key: str | None = None,
                   arch: str | None = None):
    """``--target`` with ``--profile``, ``--arch`` (CUDA: "auto" asks the GPU here), ``--tracker`` and
    ``--rpc-key`` applied."""
    from ..targets import load_target

    t = load_target(name).with_profile(profile).with_arch(arch)
    return t.with_rpc(tracker, rpc_key) if (tracker or rpc_key or t.remote) else t


def make_runner(t, overlap: bool = False, power: bool = False, cache: bool = False, workers: int | None = None):
    """The runner for a target: RPC when it names an RPC key, else local (with compile-ahead);
    ``cache``: reuse compiled blocks from the compile cache (tvmlat.cache); ``workers``: compile
    worker processes of the local runner (None: ``runners.local.compile_workers``' default)."""
    from ..cache import cache_root

    cache_dir = cache_root() if cache else None
    if t.kind.startswith("torch-"):
        if t.remote or power:
            raise TvmlatError(f"{t.name}: PyTorch back-ends run on this machine, without --power")
        from ..runners.torch_runner import TorchRunner

        return TorchRunner(t)
    if t.remote:
        from ..runners.rpc import RPCRunner

        if power:
            raise TvmlatError("--power works on a local NVIDIA GPU (or in run-bundle), not over RPC")
        return RPCRunner(t, cache_dir=cache_dir)
    from ..runners.local import LocalRunner

    sampler = None
    if power and t.kind == "llvm":
        from ..power import RAPLSampler

        try:
            sampler = RAPLSampler()
        except RuntimeError as e:
            raise TvmlatError(f"--power: this CPU's energy can't be read: {e}; measure without --power "
                              f"(latency only)") from None
    elif power:
        from ..power import NVMLSampler

        try:
            sampler = NVMLSampler()
        except Exception as e:  # noqa: BLE001 - no binding, no driver, no GPU
            raise TvmlatError(f"--power: NVML is not usable here ({e}); pip install nvidia-ml-py on a GPU machine")
    return LocalRunner(t, ahead=overlap, sampler=sampler, cache_dir=cache_dir, workers=workers)


def provenance(t) -> dict[str, Any]:
    """Where a campaign was measured: this host, or a device behind a tracker (compiled on this host)."""
    from ..dataset import host_info

    if t.remote:
        return {"device": {"rpc_key": t.rpc.key, "tracker": t.rpc.tracker, "triple": t.triple or "host"},
                "compile_host": host_info()}
    return {"host": host_info()}


#: `predict` and `analyze`: whether a network gets the whole-network correction its predictor file carries
NETWORK_CORRECTION_HELP = ("with a predictor that carries a whole-network correction (`tvmlat network-correction`): "
                           "--no-network-correction predicts each network as the plain sum of its layers, with the "
                           "calibration's interval, leaving the file as it is")
