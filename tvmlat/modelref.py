"""MODEL_REF: ``path/file.py:NAME`` names a callable returning ``(module, example_inputs)`` or a
mapping ``{name: (module, example_inputs)}``; each entry becomes one output row."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch

from .errors import ModelRefError

Entry = tuple[torch.nn.Module, tuple[torch.Tensor, ...]]


def _check_entry(name: str, value: Any, ref: str) -> Entry:
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ModelRefError(f"{ref}: entry {name!r} must be a (module, example_inputs) pair, "
                            f"got {type(value).__name__}")
    module, inputs = value
    if not isinstance(module, torch.nn.Module):
        raise ModelRefError(f"{ref}: entry {name!r}: first item must be a torch.nn.Module, got {type(module).__name__}")
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if not (isinstance(inputs, (tuple, list)) and inputs and all(isinstance(t, torch.Tensor) for t in inputs)):
        raise ModelRefError(f"{ref}: entry {name!r}: example_inputs must be a tensor or a tuple of tensors")
    return module.eval(), tuple(inputs)


def _torchvision(name: str, ref: str) -> dict[str, Entry]:
    try:
        import torchvision
    except Exception as e:  # noqa: BLE001 - ImportError, or a torchvision built for another torch
        raise ModelRefError(f"MODEL_REF {ref!r} needs torchvision, which does not import here "
                            f"({type(e).__name__}); install the torchvision release that matches your torch") from None
    try:
        model = torchvision.models.get_model(name, weights=None)
    except Exception as e:  # noqa: BLE001
        known = ", ".join(sorted(torchvision.models.list_models())[:20])
        raise ModelRefError(f"MODEL_REF {ref!r}: torchvision has no model {name!r} ({e}); e.g. {known}") from None
    size = 299 if name.startswith("inception") else 224
    return {name: (model.eval(), (torch.randn(1, 3, size, size),))}


def recorded_ref(ref: str, *folders: Path) -> str:
    """A MODEL_REF that a file recorded (a dataset's meta.json, a predictor's stored network timings), made
    loadable from here. Unchanged where its file is found from the current folder, or it names no file
    (``torchvision:``); else its file relative to each of ``folders`` in turn (the folder it was recorded
    from); else the same file found by its trailing path, longest first, under those folders, the four
    above the first, or the current folder (a checkout or files that moved, as with files shipped from
    another machine). Unchanged where none is: loading it then says which file is missing."""
    path, _, attr = ref.rpartition(":")
    if not path or ref.startswith("torchvision:") or Path(path).is_file():
        return ref
    given = Path(path)
    here = [Path(f).resolve() for f in folders]
    if not given.is_absolute():
        for base in here:
            if (base / given).is_file():
                return f"{base / given}:{attr}"
    parts = given.parts[1:] if given.is_absolute() else given.parts
    bases = [*here, *(list(here[0].parents)[:4] if here else []), Path.cwd()]
    for i in range(len(parts)):
        for base in bases:
            if (base / Path(*parts[i:])).is_file():
                return f"{base / Path(*parts[i:])}:{attr}"
    return ref


def load_model_ref(ref: str) -> dict[str, Entry]:
    """Load a MODEL_REF into ``{name: (module, inputs)}``; every problem is one ModelRefError line.

    Forms: ``path/file.py:NAME`` and ``torchvision:NAME`` (weights are never downloaded: latency
    does not depend on them)."""
    if ref.startswith("torchvision:"):
        return _torchvision(ref.split(":", 1)[1], ref)
    if ":" not in ref:
        raise ModelRefError(f"MODEL_REF {ref!r} must look like path/file.py:NAME")
    path_s, _, attr = ref.rpartition(":")
    path = Path(path_s)
    if not path.is_file():
        raise ModelRefError(f"MODEL_REF {ref!r}: file {path} does not exist")
    if path.suffix != ".py":
        raise ModelRefError(f"MODEL_REF {ref!r}: {path} is not a .py file")
    mod_name = f"_tvmlat_modelref_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's file failed to import
        raise ModelRefError(f"MODEL_REF {ref!r}: importing {path} failed: {type(e).__name__}: {e}") from None
    if not hasattr(module, attr):
        names = sorted(n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n)))
        raise ModelRefError(f"MODEL_REF {ref!r}: {path} has no callable {attr!r}; callables there: "
                            f"{', '.join(names[:12]) or 'none'}")
    fn = getattr(module, attr)
    if not callable(fn):
        raise ModelRefError(f"MODEL_REF {ref!r}: {attr!r} is not callable")
    try:
        value = fn()
    except Exception as e:  # noqa: BLE001
        raise ModelRefError(f"MODEL_REF {ref!r}: calling {attr}() failed: {type(e).__name__}: {e}") from None
    if isinstance(value, dict):
        if not value:
            raise ModelRefError(f"MODEL_REF {ref!r}: {attr}() returned an empty mapping")
        return {str(k): _check_entry(str(k), v, ref) for k, v in value.items()}
    return {attr: _check_entry(attr, value, ref)}
