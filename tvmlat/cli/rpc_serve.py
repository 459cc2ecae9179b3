"""`tvmlat tracker` and `tvmlat server`: TVM's RPC tracker and server, bound to 127.0.0.1 unless told.

TVM's own `python -m tvm.exec.rpc_tracker` listens on 0.0.0.0 by default, and TVM RPC has no
authentication: whoever reaches a server runs code on it. These wrappers start the same programs
on the loopback interface; another address needs `--host ADDR` and gets a warning.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from ..targets import DEFAULT_TRACKER, TRACKER_ENV, parse_tracker, valid_key
from ..errors import TvmlatError
from . import app

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _warn_if_public(host: str) -> None:
    if host not in LOOPBACK:
        print(f"warning: listening on {host}: TVM RPC has no authentication or encryption; anyone who reaches "
              f"this port can run code here. Use a private network only.", file=sys.stderr)


def _exec(args: list[str]) -> None:
    os.execv(sys.executable, [sys.executable, "-m", *args])


@app.command("tracker")
def tracker_cmd(
    port: int = typer.Option(9190, "--port", help="port to listen on"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (other than 127.0.0.1: boards "
                                                          "elsewhere can reach it, and so can anyone else)"),
) -> None:
    """Start TVM's RPC tracker (on 127.0.0.1 unless --host says otherwise)."""
    _check_port(port)
    _warn_if_public(host)
    _exec(["tvm.exec.rpc_tracker", "--host", host, "--port", str(port), "--port-end", str(port + 1)])


def _check_port(port: int, tries: int = 1) -> None:
    """``port`` and the ``tries`` - 1 after it (where TVM looks for a free one) are port numbers."""
    last = 65535 - (tries - 1)
    if not 0 < port <= last:
        raise TvmlatError(f"--port {port} is not a port number (1..{last}"
                          + (f": the server tries it and the {tries - 1} after it)" if tries > 1 else ")"))


@app.command("server")
def server_cmd(
    key: str = typer.Option(..., "--key", help="the device key this server registers under (e.g. rpi4)"),
    tracker: Optional[str] = typer.Option(None, "--tracker", help=f"HOST:PORT [${TRACKER_ENV} or {DEFAULT_TRACKER}]"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (other than 127.0.0.1: see tracker)"),
    port: int = typer.Option(9090, "--port", help="first port to try"),
) -> None:
    """Start TVM's RPC server for this machine under KEY, registered with the tracker."""
    addr = tracker or os.environ.get(TRACKER_ENV) or DEFAULT_TRACKER
    h, p = parse_tracker(addr)
    if not valid_key(key):
        raise TvmlatError(f"--key {key!r} is not a valid key (one word without ':' or spaces)")
    _check_port(port, tries=100)
    _warn_if_public(host)
    _exec(["tvm.exec.rpc_server", "--tracker", f"{h}:{p}", "--key", key, "--host", host,
           "--port", str(port), "--port-end", str(port + 100)])
