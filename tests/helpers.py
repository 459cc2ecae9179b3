"""Helpers shared by the tests (a plain module: tests/conftest.py puts tests/ on sys.path)."""

from __future__ import annotations

import subprocess
import sys

from tvmlat.cli import main
from tvmlat.features import FEATURES_VERSION
from tvmlat.targets import target_from_dict


def make_target(name: str = "fake", profile: str = "default", mcpu: str = ""):
    """A TargetSpec that needs no TVM (no ``mcpu = "host"`` lookup)."""
    return target_from_dict({"name": name, "kind": "llvm", "cores": 1, "mcpu": mcpu, "profile": profile})


def campaign_meta(target, **extra) -> dict:
    return {"target_name": target.name, "target": target.to_dict(), "profile": target.profile,
            "features_version": FEATURES_VERSION, **extra}


def run_cli(args, capsys):
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(result, *needles):
    code, out, err = result
    assert code == 2, (code, out, err)
    assert "Traceback" not in out and "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:")
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def run_light(code: str, also: tuple[str, ...] = ()):
    """Run ``code`` in a fresh interpreter and check that it loaded neither torch (0.9 s) nor TVM, nor the modules
    ``also`` names: what a command's start-up, an ONNX file or a search loop's oracle must not pay for. Returns the
    finished process (``returncode`` 0: it ran and stayed light)."""
    check = ("\nimport sys as _sys\n"
             "_bad = sorted({m.split('.')[0] for m in _sys.modules if m.split('.')[0] in ('torch', 'tvm')}"
             f" | {{m for m in _sys.modules if m in {tuple(also)!r}}})\n"
             "assert not _bad, _bad\n")
    return subprocess.run([sys.executable, "-c", code + check], capture_output=True, text=True, timeout=120)


# a MODEL_REF file: good entries and every kind of wrong return value
MODELS = '''
import torch

def good():
    return {"a": (torch.nn.Linear(16, 8), (torch.randn(4, 16),)),
            "b": (torch.nn.Conv2d(3, 8, 3), torch.randn(1, 3, 16, 16))}

def single():
    return torch.nn.Linear(4, 2), torch.randn(2, 4)

def as_list():
    return [torch.nn.ReLU(), [torch.randn(3)]]

def returns_int():
    return 3

def not_a_tensor():
    return torch.nn.Linear(4, 2), "notatensor"

def not_a_module():
    return 5, torch.randn(2, 4)

def no_inputs():
    return torch.nn.Linear(4, 2), ()

def empty():
    return {}

def raises():
    raise RuntimeError("inside the callable")

def bad_entry():
    return {"fine": (torch.nn.Linear(4, 2), torch.randn(2, 4)), "broken": 7}

NOT_CALLABLE = 3
'''
