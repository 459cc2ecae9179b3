"""Where a block's time goes, kernel by kernel: the entries of a MODEL_REF built as `tvmlat measure` builds them for
the host CPU (the untuned ``default`` profile), each kernel the VM calls timed with ``vm.set_instrument`` (the
median of 40 calls after 5), beside the whole block's time from the time evaluator.

    python benchmarks/kernel_breakdown.py examples/own_blocks.py:convnext "convnext(c=16,hw=56)" ...

(no entries: all of them). What it showed for ConvNeXt is in docs/accuracy-log.md, "Transcendental elements".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def breakdown(module, inputs, target) -> tuple[float, list[tuple[str, float]]]:
    """(the block's median latency in ms, [(kernel, median ms per call)] in call order)."""
    import tvm
    from tvm import relax

    from kernel_level import kernel_calls, kernel_table
    from tvmlat.compile import to_relax
    from tvmlat.runners.vmtime import time_vm

    tt = target.tvm_target()
    with tt:  # what tvm.compile runs for a CPU target ("default"), done here to see the kernels it makes
        lowered = relax.get_pipeline("default")(to_relax(module, inputs))
    kernels = kernel_table(lowered)
    dev = tvm.cpu()
    vm = relax.VirtualMachine(tvm.compile(lowered, tt, relax_pipeline=None), dev)
    host = [t.detach().numpy() for t in inputs]
    block = time_vm(vm, dev, host, None, target.evaluator)
    return block.latency_ms_median, kernel_calls(vm, dev, host, kernels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_ref", help="path/file.py:NAME (a mapping of blocks) or one block")
    ap.add_argument("entries", nargs="*", help="entry names (default: all)")
    a = ap.parse_args()
    from tvmlat.errors import TvmlatError
    from tvmlat.modelref import load_model_ref
    from tvmlat.targets import load_target

    try:
        loaded = load_model_ref(a.model_ref)
    except TvmlatError as e:
        raise SystemExit(f"error: {e}") from None
    entries = loaded if isinstance(loaded, dict) else {a.model_ref: loaded}
    missing = [e for e in a.entries if e not in entries]
    if missing:
        raise SystemExit(f"error: {a.model_ref} has no entries {missing}; it has {list(entries)[:8]}")
    target = load_target("llvm")
    for name in a.entries or list(entries):
        module, inputs = entries[name]
        block_ms, calls = breakdown(module, inputs, target)
        total = sum(ms for _, ms in calls)
        print(f"\n{name}: block {block_ms:.4f} ms, its {len(calls)} kernels {total:.4f} ms")
        for sym, ms in calls:
            print(f"  {sym:32s} {ms:9.4f} ms {100 * ms / total:5.1f} %")


if __name__ == "__main__":
    main()
