"""Test-wide settings: the compile cache lives in a temporary folder, never in ~/.cache; and a test
whose whole process freezes still ends the run."""

import faulthandler
import os

import pytest

#: seconds past a test's pytest-timeout limit after which faulthandler ends a frozen run
FROZEN_GRACE_S = float(os.environ.get("TVMLAT_FROZEN_GRACE_S", "60"))


@pytest.fixture(autouse=True, scope="session")
def _isolated_compile_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("TVMLAT_CACHE", str(tmp_path_factory.mktemp("compile-cache")))
    yield
    mp.undo()


def pytest_configure(config):
    # the real stderr, taken before any test captures it: a frozen run's stacks must reach the CI log
    config._tvmlat_stderr = os.dup(2)


def pytest_unconfigure(config):
    fd = getattr(config, "_tvmlat_stderr", None)
    if fd is not None:
        os.close(fd)


def _limit_s(item) -> float | None:
    """The test's pytest-timeout limit (its marker, else the ini's ``timeout``), or None for none."""
    marker = item.get_closest_marker("timeout")
    try:
        limit = float(marker.args[0]) if marker and marker.args else float(item.config.getini("timeout") or 0)
    except (ValueError, TypeError):  # pytest-timeout not installed, or a limit given another way
        return None
    return limit or None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """pytest-timeout's thread needs the GIL to end a stuck test; a process frozen with the GIL held
    (CI once sat 80 minutes in the RPC tests with no timeout firing) is ended here by faulthandler's
    C watchdog, which needs none: every thread's stack goes to stderr and the run exits with 1."""
    limit = _limit_s(item)
    fd = getattr(item.config, "_tvmlat_stderr", None)
    armed = limit is not None and fd is not None
    if armed:
        faulthandler.dump_traceback_later(limit + FROZEN_GRACE_S, exit=True, file=fd)
    try:
        yield
    finally:
        if armed:
            faulthandler.cancel_dump_traceback_later()
