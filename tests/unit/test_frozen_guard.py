"""The test suite's guard against a frozen process (tests/conftest.py): CI once sat 80 minutes in the
RPC tests with pytest-timeout's thread never firing, since it needs the GIL to act."""

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

FREEZER = textwrap.dedent("""
    import ctypes

    import pytest


    @pytest.mark.timeout(1)
    def test_freeze():
        ctypes.PyDLL(None).sleep(120)  # libc's sleep with the GIL held: no Python thread can run
""")


def test_a_test_that_freezes_the_process_ends_the_run_with_every_stack(tmp_path):
    (tmp_path / "tests").mkdir()
    shutil.copy(Path(__file__).parents[1] / "conftest.py", tmp_path / "tests" / "conftest.py")
    (tmp_path / "tests" / "test_freeze.py").write_text(FREEZER)
    (tmp_path / "pytest.ini").write_text("[pytest]\ntimeout = 600\ntimeout_method = thread\n")
    env = {**os.environ, "TVMLAT_FROZEN_GRACE_S": "2"}
    # without the guard the run would sleep its 120 s and overrun this timeout (pytest-timeout can't act)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=90)
    assert r.returncode == 1
    assert "Timeout (0:00:03)!" in r.stderr  # faulthandler's: the test's 1 s limit plus the 2 s grace
    assert re.search(r'test_freeze.py", line \d+ in test_freeze', r.stderr)  # where the frozen thread stood
