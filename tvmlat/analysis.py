"""Whole-network analysis: split a network into layers, count each, predict each, find bottlenecks.

The network runs once on the meta device under the op counter, with forward hooks that tell
which module each aten op came from. Ops are grouped the way TVM's FuseOps groups them: each
*anchor* op (convolution, matmul, attention, pooling) starts a layer, and the elementwise and
normalisation ops after it (BN, activation, residual add) join that layer. A layer is named after
its anchor's module path; a conv that is the first child of a conv-norm-activation Sequential
(torchvision's ``Conv2dNormActivation``, a ``downsample``) takes its parent's name, e.g.
``features.3.conv.0`` or ``layer1.0.downsample``. Ops before the first anchor form a layer of
their own. The split depends only on the module tree and the forward order: it is stable.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from .features import FEATURE_COLUMNS
from .loop_features import DEFAULT_GEOMETRY, CacheGeometry, block_loops, geometry_of, stamp_geometry

ANCHORS = {"conv", "conv1x1", "dwconv", "matmul", "bmm", "attention", "pool"}
#: the most layers a calibration block splits into (the ten sampled families: 1-4; the example networks 14-56):
#: `predict` takes an entry of more layers as a network and predicts it as `analyze` does
BLOCK_LAYERS = 4
MB = 1e6
MIB = 2**20

if TYPE_CHECKING:  # torch (0.9 s to import) loads only where a torch network is traced: ONNX files go without it
    import torch


@dataclass
class Layer:
    name: str
    op: str
    module: str
    in_shape: str
    out_shape: str
    records: list[dict[str, Any]] = field(default_factory=list)


def _layer_name(path: str, modules: dict[str, torch.nn.Module]) -> str:
    """A conv that opens a conv-norm-act Sequential is named after that Sequential."""
    import torch

    if "." in path:
        parent, last = path.rsplit(".", 1)
        pm = modules.get(parent)
        if last == "0" and isinstance(pm, torch.nn.Sequential) and len(pm) <= 3:
            return parent
    return path


#: name of a layer whose anchor op is called in the root module's own forward (no submodule path)
ROOT_NAMES = {"conv": "conv", "conv1x1": "conv", "dwconv": "conv", "matmul": "matmul", "bmm": "matmul",
              "attention": "attention", "pool": "pool"}


def group_layers(records: list[dict[str, Any]], name_of, module_of) -> list[Layer]:
    """Group op records into layers: an anchor op starts a layer, the ops after it join it."""
    layers: list[Layer] = []
    for rec in records:
        kind = rec.get("kind", "")
        if kind in ANCHORS or not layers:
            path = rec["path"]
            name = (name_of(path) or ROOT_NAMES[kind]) if kind in ANCHORS else (path or "input")
            layers.append(Layer(name, op=kind,
                                module=module_of(path), in_shape=rec["in_shape"], out_shape=rec["out_shape"]))
        layers[-1].records.append(rec)
        layers[-1].out_shape = rec["out_shape"]
    seen: dict[str, int] = {}  # unique names (a module called twice gives two layers)
    for lay in layers:
        k = seen.get(lay.name, 0)
        seen[lay.name] = k + 1
        if k:
            lay.name = f"{lay.name}#{k + 1}"
    return layers


def trace_layers(module: torch.nn.Module, inputs: Sequence[torch.Tensor], *,
                 geometry: CacheGeometry = DEFAULT_GEOMETRY) -> tuple[list[Layer], dict[str, int]]:
    """Run ``module`` on meta tensors; return its layers (in execution order) and totals: the features
    ``count_features`` gives the whole module (loop features for the L1 ``geometry``)."""
    import torch

    from .op_counter import PathCounter, finish_counts

    module = copy.deepcopy(module).to("meta").eval()
    inputs = [torch.empty(t.shape, dtype=t.dtype, device="meta") for t in inputs]
    names = {m: n for n, m in module.named_modules()}
    modules = dict(module.named_modules())
    counter = PathCounter(geometry)

    def pre(m, _args):
        counter.stack.append(names.get(m, "?"))

    def post(m, _args, _out):
        if counter.stack:
            counter.stack.pop()

    hooks = [m.register_forward_pre_hook(pre) for m in modules.values()]
    hooks += [m.register_forward_hook(post) for m in modules.values()]
    try:
        with torch.no_grad(), counter:
            out = module(*inputs)
    finally:
        for h in hooks:
            h.remove()
    layers = group_layers(counter.records, lambda path: _layer_name(path, modules),
                          lambda path: type(modules.get(path, module)).__name__)
    return layers, finish_counts(counter.totals, module, inputs, out, geometry)


def layer_table(module: torch.nn.Module, inputs: Sequence[torch.Tensor], predictor=None,
                interval: float | None = None) -> pd.DataFrame:
    """One row per layer: shapes, params, MACs, FLOPs, memory, weights, activations and, with a
    predictor, predicted latency and its share. Sizes in MB (10^6 bytes). Loop features are counted
    for the predictor's L1 geometry. ``interval`` (a coverage, with a predictor): each layer's conformal
    interval (``low_ms``, ``high_ms``) and, in ``attrs["network_interval"]``, the whole network's
    (``coverage``, ``predicted_ms``, ``low_ms``, ``high_ms``, ``method``; ``LoadedPredictor.network_interval``)."""
    return table_of(traced(module, inputs, geometry_of(predictor)), predictor, interval)


def traced(module: torch.nn.Module, inputs: Sequence[torch.Tensor], geometry: CacheGeometry) -> tuple:
    """A network's layers, counted for the L1 ``geometry`` and not yet predicted: ``table_of``'s input, and (its
    last item) the whole module's features as ``count_features`` gives them. `predict` counts an entry with it
    once, and predicts the layers only of the entries that are networks."""
    layers, totals = trace_layers(module, inputs, geometry=geometry)
    return layers, _module_params(module), totals


def table_of(traced_layers: tuple, predictor=None, interval: float | None = None) -> pd.DataFrame:
    """``layer_table`` of layers ``traced`` (or ``onnx_traced``) for ``predictor``'s L1."""
    layers, params_of, totals = traced_layers
    return _table(layers, params_of, predictor, totals, interval)


def layer_features(module: torch.nn.Module, inputs: Sequence[torch.Tensor], *,
                   geometry: CacheGeometry = DEFAULT_GEOMETRY) -> pd.DataFrame:
    """The feature rows ``layer_table`` predicts, one per layer, counted once for the L1 ``geometry``: to
    predict one network with many predictors of that L1 (``predictor.predict(rows).sum()`` is the
    network's sum of layers)."""
    layers, _ = trace_layers(module, inputs, geometry=geometry)
    params_of = _module_params(module)
    rows = pd.DataFrame([_layer_features(lay, params_of(lay)[0], geometry) for lay in layers])
    return stamp_geometry(rows, geometry)


def _module_params(module: torch.nn.Module):
    """(parameter elements, bytes) of the modules a layer's ops ran in."""
    modules = dict(module.named_modules())

    def params_of(lay: Layer) -> tuple[int, int]:
        paths = dict.fromkeys(r["path"] for r in lay.records)
        ps = [p for path in paths if path in modules for p in modules[path].parameters(recurse=False)]
        return sum(p.numel() for p in ps), sum(p.numel() * p.element_size() for p in ps)

    return params_of


def _layer_features(lay: Layer, n_params: int, geometry: CacheGeometry) -> dict[str, int]:
    """A layer's features: its ops' increments summed, its input and output, its footprint as a block."""
    f = dict.fromkeys(FEATURE_COLUMNS, 0)
    for r in lay.records:
        for k, v in r["feat"].items():
            f[k] += v
    f.update(inp=_elems(lay.in_shape) or lay.records[0]["in_bytes"] // 4, params=n_params,
             out=_elems(lay.out_shape))
    f.update(block_loops(f["acts"], f["inp"], f["out"], geometry=geometry))
    return f


def onnx_layer_table(model, predictor=None, interval: float | None = None) -> pd.DataFrame:
    """layer_table for an ONNX model (tvmlat.onnx_model.OnnxModel), counted from its graph."""
    return table_of(onnx_traced(model, geometry_of(predictor)), predictor, interval)


def onnx_traced(model, geometry: CacheGeometry) -> tuple:
    """``traced`` for an ONNX model, from its graph (its last item: the whole model's ``onnx_features``)."""
    from .onnx_model import onnx_features, onnx_records

    recs = onnx_records(model, geometry)
    op_of = {r["path"]: r["op"] for r in recs}
    layers = group_layers(recs, lambda path: path, op_of.get)
    totals = onnx_features(model, geometry=geometry, recs=recs)

    def params_of(lay: Layer) -> tuple[int, int]:
        n = sum(r["params"] for r in lay.records)
        return n, 4 * n

    return layers, params_of, totals


def _table(layers: list[Layer], params_of, predictor, totals: dict[str, int],
           interval: float | None = None) -> pd.DataFrame:
    rows, feats = [], []
    geometry = geometry_of(predictor)
    for lay in layers:
        n_params, weight_bytes = params_of(lay)
        f = _layer_features(lay, n_params, geometry)
        last = lay.records[-1]
        feats.append(f)
        rows.append({
            "name": lay.name, "op": "+".join(dict.fromkeys(r["kind"] for r in lay.records)), "module": lay.module,
            "input_shape": lay.in_shape, "output_shape": lay.out_shape, "params": n_params,
            "macs": f["macs"], "flops": f["flops"],
            "read_mb": sum(r["in_bytes"] for r in lay.records) / MB,
            "write_mb": sum(r["out_bytes"] for r in lay.records) / MB,
            "weights_mb": weight_bytes / MB,
            "act_mb": last["out_bytes"] / MB,
        })
    df = pd.DataFrame(rows)
    if predictor is not None and len(df):
        X = pd.DataFrame(feats)
        if interval is not None:  # the layers predicted once, with their intervals
            lat, df["low_ms"], df["high_ms"] = predictor.interval(X, interval)
        else:
            lat = predictor.predict(X)
        if hasattr(predictor, "unpriced"):  # layers with work no calibration block had (priced 0)
            df.attrs["unpriced"] = predictor.unpriced(X)
        df["latency_ms"] = lat
        df["share_%"] = 100 * lat / lat.sum() if lat.sum() > 0 else 0.0
        if interval is not None:
            mid, lo, hi, how = predictor.network_interval(lat, interval)
            df.attrs["network_interval"] = {"coverage": interval, "predicted_ms": mid, "low_ms": lo, "high_ms": hi,
                                            "method": how}
        from .energy import predict_energy

        en = predict_energy(predictor, X, lat)
        if en is not None:
            df["energy_mj"], df["power_w"] = en
        memory = getattr(predictor, "doc", {}).get("memory")
        if memory:  # a memory model (`tvmlat memory --predictor`): each layer's working set, the network's peak
            from .memory import MemoryModel, network_memory

            peak, work = network_memory(MemoryModel.from_dict(memory), totals, X)
            df["work_mib"] = work / 2**20
            df.attrs["peak_memory_bytes"] = peak
    # acts_l2out is counted per layer (what predictions sum), so the table's total is theirs, not the footprint
    # of the network as one block
    df.attrs["totals"] = {**totals, "acts_l2out": sum(f["acts_l2out"] for f in feats)}
    return df


def _elems(shape: str) -> int:
    if not shape:
        return 0
    n = 1
    for d in shape.split("x"):
        n *= int(d)
    return n


def totals_row(df: pd.DataFrame) -> dict[str, Any]:
    row: dict[str, Any] = {"name": "TOTAL", "op": f"{len(df)} layers"}
    for c in ("params", "macs", "flops", "read_mb", "write_mb", "weights_mb", "latency_ms", "share_%"):
        if c in df:
            row[c] = df[c].sum()
    if "act_mb" in df:
        row["act_mb"] = df["act_mb"].max()  # the largest activation alive at a layer boundary
    if "work_mib" in df:
        row["work_mib"] = df["work_mib"].max()  # the largest working set (the peak adds weights, input, output)
    if "energy_mj" in df:
        row["energy_mj"] = df["energy_mj"].sum()
        row["power_w"] = row["energy_mj"] / row["latency_ms"] if row.get("latency_ms", 0) > 0 else float("nan")
    return row


def locate_ops(module: torch.nn.Module, inputs: Sequence[torch.Tensor], op_names: Sequence[str]) -> dict[str, list[str]]:
    """Module paths (layers) where each aten op in ``op_names`` (e.g. ``_fft_r2c``) runs."""
    wanted = {o.split(".")[0] for o in op_names}
    layers, _ = trace_layers(module, inputs)
    found: dict[str, list[str]] = {}
    for lay in layers:
        for r in lay.records:
            if r["op"] in wanted:
                found.setdefault(r["op"], [])
                if r["path"] not in found[r["op"]]:
                    found[r["op"]].append(r["path"] or "<top level>")
    return found


def explain_import_error(module: torch.nn.Module, inputs: Sequence[torch.Tensor], error: str) -> str:
    """Add the layers that use the unsupported ops named in a Relax import error, if any."""
    import re

    m = re.search(r"Unsupported function types \[([^\]]*)\]", error)
    if not m:
        return error
    ops = [o.strip().strip("'\"") for o in m.group(1).split(",") if o.strip()]
    try:
        where = locate_ops(module, inputs, ops)
    except Exception:  # noqa: BLE001 - best effort; the original error stands
        return error
    parts = [f"{op} in {', '.join(paths[:5])}" for op, paths in where.items()]
    return error + (f" (used by: {'; '.join(parts)})" if parts else "")
