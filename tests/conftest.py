"""Test-wide settings: the compile cache lives in a temporary folder, never in ~/.cache."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_compile_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("TVMLAT_CACHE", str(tmp_path_factory.mktemp("compile-cache")))
    yield
    mp.undo()
