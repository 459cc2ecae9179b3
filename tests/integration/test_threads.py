"""Real torch.export and TVM compiles in one process, with blocks built in another thread (marker `tvm`)."""

from __future__ import annotations

import threading

import pytest

from tvmlat.blocks import build_block, sample_specs

pytestmark = pytest.mark.tvm


def test_blocks_built_while_another_thread_compiles_break_neither(tmp_path):
    """torch.fx keeps node metadata per process, and building a module touches it while torch.export
    reads it: a thread building blocks next to one compiling made both fail with KeyError: 'custom'
    (seen once in CI, in the RPC runner). ``build_in_turn`` builds between compiles."""
    from tvmlat.runners.ahead import build_in_turn, compile_to_library
    from tvmlat.targets import load_target

    target = load_target("llvm")
    specs = sample_specs(12, seed=31, max_flops=2e6)
    stop, errors = threading.Event(), []

    def builder() -> None:
        i = 0
        while not stop.is_set():
            try:
                build_in_turn(lambda s=specs[i % len(specs)]: build_block(s))
            except Exception as e:  # noqa: BLE001 - collected and asserted below
                errors.append(repr(e))
            i += 1

    t = threading.Thread(target=builder)
    t.start()
    try:
        arts = [compile_to_library(*build_in_turn(lambda s=s: build_block(s)), target, str(tmp_path), s.block_id,
                                   check=False) for s in specs[:8]]
    finally:
        stop.set()
        t.join()
    assert [a["status"] for a in arts] == ["ok"] * 8, [a.get("error") for a in arts]
    assert errors == []
