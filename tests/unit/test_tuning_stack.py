"""Tuning helpers that need no TVM: the light inspect.stack, deferred Ctrl-C."""

from __future__ import annotations

import inspect

from tvmlat.tuning import _light_stack, light_inspect_stack


def _outer():
    return _inner()


def _inner():
    return _light_stack(), inspect.stack()


def test_light_stack_gives_the_frames_files_lines_and_source_line_tvmscript_reads():
    light, full = _outer()
    assert len(light) == len(full)
    for a, b in zip(light, full):
        assert (a.frame, a.filename, a.lineno, a.function) == (b.frame, b.filename, b.lineno, b.function)
        if b.code_context:  # TVMScript's parser looks at the decorator line of frame 2
            assert a.code_context == b.code_context


def test_light_stack_is_installed_only_inside_the_block():
    saved = inspect.stack
    with light_inspect_stack():
        assert inspect.stack is _light_stack
    assert inspect.stack is saved
    try:
        with light_inspect_stack():
            raise KeyError("x")
    except KeyError:
        pass
    assert inspect.stack is saved


def test_first_ctrl_c_during_tuning_is_deferred_and_a_second_one_interrupts():
    import os
    import signal

    import pytest

    from tvmlat.tuning import DeferredInterrupts

    before = signal.getsignal(signal.SIGINT)
    d = DeferredInterrupts()
    try:
        os.kill(os.getpid(), signal.SIGINT)  # delivered to this (main) thread at the next bytecode
        for _ in range(1000):
            if d.pending:
                break
        assert d.pending == 1  # no KeyboardInterrupt yet: the caller stops at the next chunk
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10_000):
                pass
    finally:
        d.restore()
    assert signal.getsignal(signal.SIGINT) is before


def test_a_shipped_gzipped_database_is_unpacked_once(tmp_path):
    import gzip

    from tvmlat.tuning import DATABASE_FILES, unpack_database

    for name in DATABASE_FILES:
        with gzip.open(tmp_path / (name + ".gz"), "wt") as f:
            f.write(f'["{name}"]\n')
    assert unpack_database(tmp_path)
    assert [(tmp_path / n).read_text() for n in DATABASE_FILES] == [f'["{n}"]\n' for n in DATABASE_FILES]
    (tmp_path / DATABASE_FILES[1]).write_text("tuned since\n")
    assert not unpack_database(tmp_path)  # the working copy wins over the shipped one
    assert (tmp_path / DATABASE_FILES[1]).read_text() == "tuned since\n"
