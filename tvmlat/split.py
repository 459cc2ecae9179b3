"""Split a network into runnable layer modules, to measure each layer on its own.

The network is exported (`torch.export`), and its graph is cut with `torch.fx`'s `split_module`
before every anchor op (convolution, matmul/linear, pooling, attention) — the grouping `analyze`
uses. Each piece is a GraphModule whose inputs are the tensors that cross the cut; running the
split network once captures example inputs for every piece. A piece is named after its anchor's
module path (from the export's ``nn_module_stack``).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .errors import TvmlatError

_ANCHOR_OPS = ("conv", "linear", "matmul", "mm", "bmm", "addmm", "pool", "scaled_dot_product", "mean")


def _is_anchor(node) -> bool:
    name = getattr(node.target, "__name__", str(node.target))
    return node.op == "call_function" and any(a in name for a in _ANCHOR_OPS)


def _module_path(node) -> str:
    """The innermost module's path; for an op in the root's own forward, the name analyze uses."""
    from .analysis import ROOT_NAMES

    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    if path:
        return path
    name = getattr(node.target, "__name__", str(node.target))
    kind = ("attention" if "scaled_dot_product" in name else "pool" if ("pool" in name or "mean" in name)
            else "conv" if "conv" in name else "matmul")
    return ROOT_NAMES[kind]


def split_layers(module: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> dict[str, tuple[torch.nn.Module, tuple]]:
    """``{layer name: (piece, example inputs)}`` in execution order; the pieces chained give the network."""
    from torch.fx.passes.split_module import split_module

    from .compile import export_module

    gm = export_module(module, inputs).module()
    part: dict = {}
    names: list[str] = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if _is_anchor(node) or not names:
            stack = node.meta.get("nn_module_stack") or {}
            plain = list(stack.values())[-1][0] if stack else ""
            names.append(_module_path(node) if _is_anchor(node) else (plain or "input"))
        part[node] = len(names) - 1
    split = split_module(gm, module, lambda n: part.get(n, 0))
    captured: dict[str, tuple] = {}
    pieces = [(k, sub) for k, sub in split.named_children() if k.startswith("submod_")]
    hooks = [sub.register_forward_pre_hook(lambda _m, args, k=k: captured.setdefault(k, args)) for k, sub in pieces]
    try:
        with torch.no_grad():
            split(*inputs)
    finally:
        for h in hooks:
            h.remove()
    from .analysis import _layer_name

    modules = dict(module.named_modules())
    consts = {id(t) for t in gm.state_dict(keep_vars=True).values()}
    out: dict[str, tuple[torch.nn.Module, tuple]] = {}
    seen: dict[str, int] = {}
    for k, sub in pieces:
        idx = int(k.split("_")[-1])
        name = _layer_name(names[idx], modules) if idx < len(names) else k
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}#{seen[name]}"
        args = captured.get(k, ())
        if not any(isinstance(a, torch.Tensor) and id(a) not in consts for a in args):
            continue
        piece = _Bound(sub, args, consts)
        out[name] = (piece, piece.activations(args))
    return out


class _Bound(torch.nn.Module):
    """A split piece with its weights bound as buffers, so it compiles with constant weights (as
    inside the whole network) and takes only the activations that cross the cut."""

    def __init__(self, piece: torch.nn.Module, args: tuple, consts: set[int]):
        super().__init__()
        self.piece = piece
        self.slots: list[tuple[str, int]] = []  # ("c", buffer index) or ("a", activation index)
        n_act = 0
        for i, a in enumerate(args):
            if isinstance(a, torch.Tensor) and id(a) in consts:
                self.register_buffer(f"c{i}", a.detach().clone())
                self.slots.append(("c", i))
            else:
                self.slots.append(("a", n_act))
                n_act += 1

    def activations(self, args: tuple) -> tuple:
        return tuple(a for (kind, _), a in zip(self.slots, args) if kind == "a")

    def forward(self, *acts):
        return self.piece(*[getattr(self, f"c{i}") if kind == "c" else acts[i] for kind, i in self.slots])


def split_entries(entries: dict, model_ref: str) -> dict:
    """Each entry's layers (as `analyze` shows them), named ``entry/layer`` when there are several entries."""
    split = {}
    for name, (module, inputs) in entries.items():
        try:
            layers = split_layers(module, inputs)
        except Exception as e:  # noqa: BLE001 - export of the whole network failed
            raise TvmlatError(f"{model_ref}: can't split {name!r} into layers: {type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
        prefix = f"{name}/" if len(entries) > 1 else ""
        split.update({prefix + k: v for k, v in layers.items()})
    return split
