"""`tvmlat targets`: list the target files tvmlat can find."""

from __future__ import annotations

import typer

from ..errors import TvmlatError
from ..targets import available_targets, load_target
from . import app
from .common import Format, emit


@app.command("targets")
def targets_cmd(fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """List targets (targets/*.toml): name, kind, compile profile, cores, CPU and file."""
    rows = []
    for name, path in sorted(available_targets().items()):
        try:
            t = load_target(str(path))
            rows.append({"name": name, "kind": t.kind, "profile": t.profile, "cores": t.cores,
                         "cpu/arch": t.arch if t.kind == "cuda" else t.mcpu, "rpc key": t.rpc.key,
                         "description": t.description, "file": str(path)})
        except TvmlatError as e:
            rows.append({"name": name, "kind": "?", "profile": "?", "description": f"invalid: {e}", "file": str(path)})
    emit(rows, fmt, ["name", "kind", "profile", "cores", "cpu/arch", "rpc key", "description", "file"], title="targets")
