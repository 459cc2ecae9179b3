"""A file of block specs, one JSON object a line: what `tvmlat predict` takes from a search that has block
parameters, not torch modules.

    {"family": "conv_bn_relu", "cin": 32, "cout": 64, "hw": 56, "k": 3, "stride": 1, "groups": 1}
    {"name": "stage2.attn", "family": "attention", "tokens": 197, "dim": 384, "heads": 6}

A line's ``name`` (optional) names its row; without one the row is named by the spec (``BlockSpec.short``).
Blank lines and lines starting with ``#`` are skipped. Features come from the closed forms
(``analytic_features``: no torch, no TVM), so a file of 10^5 specs is predicted in about a second. Every
line is checked first, and the first bad one is a one-line error that gives its number and what to change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .analytic_features import FAMILIES, family_parameters  # numpy only
from .errors import ModelRefError
from .specs import POOL_KINDS, BlockSpec

#: the file ending that makes a MODEL_REF a spec file
SUFFIX = ".jsonl"
#: what a spec line looks like (in error messages)
EXAMPLE = '{"family": "conv_bn_relu", "cin": 32, "cout": 64, "hw": 56, "k": 3, "stride": 1, "groups": 1}'


def is_spec_file(ref: str) -> bool:
    return ref.endswith(SUFFIX)


def read_specs(path: str | Path) -> tuple[list[str], list[BlockSpec], list[int]]:
    """(names, specs, line numbers) of the spec file ``path``, every line checked (``check_spec``)."""
    p = Path(path)
    if not p.is_file():
        raise ModelRefError(f"{p} does not exist; give a file of block specs, one JSON object a line, e.g. {EXAMPLE}")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ModelRefError(f"{p} cannot be read as text ({type(e).__name__}: {e}); give a UTF-8 file of block "
                            "specs, one JSON object a line") from None
    names, specs, lines = [], [], []
    for i, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise ModelRefError(f"{p} line {i}: not JSON ({e.msg}); write one block spec a line, e.g. {EXAMPLE}") from None
        name, spec = _spec_of(d, f"{p} line {i}")
        names.append(name)
        specs.append(spec)
        lines.append(i)
    if not specs:
        raise ModelRefError(f"{p} holds no block spec; write one a line, e.g. {EXAMPLE}")
    return names, specs, lines


def _spec_of(d: Any, where: str) -> tuple[str, BlockSpec]:
    if not isinstance(d, dict):
        raise ModelRefError(f"{where}: a {type(d).__name__}, not a JSON object; write one block spec a line, "
                            f"e.g. {EXAMPLE}")
    d = dict(d)
    name = d.pop("name", None)
    family = d.pop("family", None)
    if family not in FAMILIES:
        said = "no family" if family is None else f"family {family!r}"
        raise ModelRefError(f"{where}: {said}; give \"family\": one of {', '.join(FAMILIES)}")
    params = family_parameters(family)
    unknown = [k for k in d if k not in params]
    missing = [k for k, required in params.items() if required and k not in d]
    if unknown or missing:
        what = "; ".join(s for s in (f"unknown {', '.join(unknown)}" if unknown else "",
                                     f"missing {', '.join(missing)}" if missing else "") if s)
        raise ModelRefError(f"{where}: {family} parameters: {what}; a {family} takes "
                            + ", ".join(k + ("" if required else " (optional)") for k, required in params.items()))
    for k, v in d.items():
        if (family, k) == ("pool", "kind"):
            if v not in POOL_KINDS:
                raise ModelRefError(f"{where}: pool kind {v!r}; give one of {', '.join(POOL_KINDS)}")
        elif (family, k) == ("conv_bn_relu", "groups") and v == "dw":
            continue
        elif (family, k) == ("linear", "bias"):
            if not isinstance(v, bool):
                raise ModelRefError(f"{where}: linear bias {v!r}; give true or false")
        elif isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ModelRefError(f"{where}: {family} {k} {v!r}; give a whole number, 1 or more"
                                + (' (or "dw": depthwise)' if k == "groups" else ""))
    spec = BlockSpec.make(family, **d)
    return (str(name) if name is not None else spec.short()), spec


def spec_frame(path: str | Path, geometry):
    """A DataFrame with one row per spec of the file ``path``: its name, family, and features counted for
    ``geometry`` in closed form (recording ``geometry``, as every features table does)."""
    from .analytic_features import analytic_features, analytic_frame
    from .features import FEATURE_COLUMNS

    names, specs, lines = read_specs(path)
    try:
        frame = analytic_frame(specs, geometry=geometry)
    except (KeyError, ValueError, TypeError, ZeroDivisionError):
        for spec, i in zip(specs, lines):  # the first spec the closed forms refuse, by its line
            try:
                analytic_features(spec, geometry=geometry)
            except (KeyError, ValueError, TypeError, ZeroDivisionError) as e:
                why = e.args[0] if e.args else type(e).__name__
                raise ModelRefError(f"{path} line {i}: {spec.short()} is not a block the {spec.family} family can "
                                    f"build ({why}); change its parameters") from None
        raise
    frame = frame[["family", *FEATURE_COLUMNS]]
    frame.insert(0, "name", names)
    return frame
