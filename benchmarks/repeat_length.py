"""Does a longer repeat measure a block differently, or more precisely? Same blocks, same minutes.

    python benchmarks/repeat_length.py                 # 2 blocks per family of seed 3's 60, 12 rounds
    python benchmarks/repeat_length.py --rounds 20 --short-ms 10 --long-ms 40

Two campaigns with different ``min_repeat_ms`` run minutes apart, so a difference between them can be
the host's state. Here every block is compiled once and, round after round, timed with one short repeat,
one long repeat, and one short repeat right after an untimed run (is the short repeat's first run cold?),
the order of the three rotating per round. Prints, per block, the median per-run time of the long and
the warmed short repeats over the short ones, and the CoV of each kind over the rounds.
"""

from __future__ import annotations

import argparse
import math

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--short-ms", type=float, default=10.0)
    ap.add_argument("--long-ms", type=float, default=40.0)
    ap.add_argument("--per-family", type=int, default=2)
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args()

    import tvm
    from tvm import relax

    from tvmlat.blocks import build_block, sample_specs
    from tvmlat.compile import compile_module
    from tvmlat.targets import load_target

    target = load_target("llvm")
    by_family: dict[str, list] = {}
    for s in sample_specs(60, seed=a.seed):
        by_family.setdefault(s.family, []).append(s)
    dev = tvm.cpu(0)
    blocks = []
    for specs in by_family.values():
        for s in specs[:a.per_family]:
            module, inputs = build_block(s)
            c = compile_module(module, inputs, target, reference=False)
            vm = relax.VirtualMachine(c.executable, dev)
            vm.set_input("main", *[tvm.runtime.tensor(x, dev) for x in c.inputs])
            ms = 1e3 * min(vm.time_evaluator("invoke_stateful", dev, number=1, repeat=5)("main").results)

            def repeat(length_ms: float, vm=vm, ms=ms):
                return vm.time_evaluator("invoke_stateful", dev, number=max(1, math.ceil(length_ms / ms)), repeat=1)

            short, long_ = repeat(a.short_ms), repeat(a.long_ms)

            def warmed(vm=vm, short=short):
                vm.invoke_stateful("main")  # one untimed run right before the timed repeat
                return short("main").results[0]

            blocks.append((s.family, ms, {"short": lambda f=short: f("main").results[0],
                                          "long": lambda f=long_: f("main").results[0], "warmed": warmed}))
    kinds = ["short", "long", "warmed"]
    got = {k: [[] for _ in blocks] for k in kinds}
    for r in range(a.rounds):
        for kind in kinds[r % 3:] + kinds[:r % 3]:
            for i, (_, _, timers) in enumerate(blocks):
                got[kind][i].append(timers[kind]())
    print(f"{'family':20s} {'ms':>8s} {'long/short':>10s} {'warmed/short':>12s} {'CoV short %':>11s} {'CoV long %':>10s}")
    ratios = {"long": [], "warmed": []}
    cov = {"short": [], "long": []}
    for i, (family, ms, _) in enumerate(blocks):
        med = {k: float(np.median(got[k][i])) for k in kinds}
        for k in ratios:
            ratios[k].append(med[k] / med["short"])
        for k in cov:
            cov[k].append(100 * float(np.std(got[k][i]) / np.mean(got[k][i])))
        print(f"{family:20s} {ms:8.3f} {ratios['long'][-1]:10.3f} {ratios['warmed'][-1]:12.3f} "
              f"{cov['short'][-1]:11.2f} {cov['long'][-1]:10.2f}")
    print(f"median over {len(blocks)} blocks: long/short {np.median(ratios['long']):.3f}, warmed/short "
          f"{np.median(ratios['warmed']):.3f}, CoV short {np.median(cov['short']):.2f} %, long {np.median(cov['long']):.2f} %"
          f" ({a.short_ms:g} / {a.long_ms:g} ms repeats, {a.rounds} rounds)")


if __name__ == "__main__":
    main()
