"""The ``tvmlat`` command line: one module per command, assembled here."""

from __future__ import annotations

import sys

import typer

from ..errors import TvmlatError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Predict neural-network block and network latency on a target, calibrated with TVM Relax.")


def _print_version(value: bool) -> None:
    if value:
        print(version_line())
        raise typer.Exit(0)


@app.callback()
def _options(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                          help="print tvmlat's version, its features version, and the TVM and "
                                               "torch it runs with, then exit")) -> None:
    pass  # options that apply before any command (the help text is the app's)


def version_line() -> str:
    """tvmlat's version and what its datasets and predictors depend on, read from the installed packages' metadata
    (importing TVM and torch would take seconds)."""
    from importlib import metadata

    from .. import __version__
    from ..features import FEATURES_VERSION

    def installed(*names: str) -> str:
        for name in names:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        return "not installed"

    return (f"tvmlat {__version__} (features version {FEATURES_VERSION}; TVM {installed('apache-tvm', 'tvm')}, "
            f"torch {installed('torch')}, Python {sys.version.split()[0]})")


def _register() -> None:
    from . import (ablation, analyze, bundle, calibrate, compare, devices, evaluate, fit, measure, memory,  # noqa: F401
                   network_correction, predict, rpc_serve, targets)  # (commands register themselves)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors are one line on stderr and exit code 2, Ctrl-C is 130."""
    import warnings

    # torch.export emits FutureWarnings about its own internals on every export; they are not the user's.
    warnings.filterwarnings("ignore", category=FutureWarning)
    _register()
    click_exc = _click_exceptions()
    try:
        rv = app(args=argv, standalone_mode=False)
    except TvmlatError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a path the user gave that can't be made, read or written (--out in /proc, a read-only folder)
        if e.filename is None:
            raise
        print(f"error: cannot use {e.filename}: {e.strerror or e}; give a path this user can read, or a folder it can "
              "create and write in", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        rv = 130
    except typer.Exit as e:
        rv = e.exit_code
    except click_exc.ClickException as e:  # usage errors: click prints usage and the problem
        e.show()
        sys.exit(e.exit_code)
    except typer.Abort:
        rv = 130
    if rv == 130:  # typer turns Ctrl-C into exit code 130
        print("interrupted: everything measured so far is saved; run the same command again to resume",
              file=sys.stderr)
    if isinstance(rv, int) and rv != 0:
        sys.exit(rv)


def _click_exceptions():
    """typer >= 0.29 vendors click as typer._click; older typer depends on click itself."""
    try:
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - older typer
        from click import exceptions
    return exceptions
