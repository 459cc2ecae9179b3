"""`tvmlat devices`: what an RPC tracker holds (keys, free and busy servers, waiting requests)."""

from __future__ import annotations

import os
from typing import Optional

import typer

from ..targets import DEFAULT_TRACKER, TRACKER_ENV, parse_tracker
from . import app
from .common import Format, emit

COLUMNS = ["key", "servers", "free", "busy", "pending", "addresses"]


@app.command("devices")
def devices_cmd(
    tracker: Optional[str] = typer.Option(None, "--tracker", help=f"HOST:PORT [${TRACKER_ENV} or {DEFAULT_TRACKER}]"),
    fmt: Format = typer.Option(Format.table, "--format", "-f"),
) -> None:
    """List the device keys registered with an RPC tracker: servers, free, busy, requests waiting."""
    from ..runners.rpc import devices, tracker_summary

    addr_s = tracker or os.environ.get(TRACKER_ENV) or DEFAULT_TRACKER
    rows = devices(tracker_summary(parse_tracker(addr_s)))
    if not rows and fmt == Format.table:
        print(f"the tracker at {addr_s} holds no servers; start one with "
              f"`python -m tvm.exec.rpc_server --tracker {addr_s} --key KEY`")
        return
    emit(rows, fmt, COLUMNS, title=f"RPC tracker {addr_s}")
