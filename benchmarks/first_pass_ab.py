"""Does the short back-to-back first pass change what the interleaved rounds measure?

In one process, over the same compiled blocks (compile cache, no compile workers), campaigns with
the full adaptive first pass (L) and the short one that calibrate uses when rounds follow (S)
alternate; each prints its rounds' odd/even agreement and CoV, then every pair of campaigns how
well their per-block medians agree (median |log ratio| less the common shift).

    python benchmarks/first_pass_ab.py [--blocks 50] [--seed 4] [--reps 3]     # ~2.5 min

The first run compiles the blocks into the compile cache ($TVMLAT_CACHE); later ones load them.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=50)
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()

    from tvmlat.blocks import sample_specs
    from tvmlat.cache import cache_root
    from tvmlat.measure import run_campaign, spec_workloads
    from tvmlat.runners.local import LocalRunner
    from tvmlat.targets import load_target

    t = load_target("llvm")
    specs = sample_specs(a.blocks, seed=a.seed)
    short = LocalRunner._first_pass_config
    full = lambda self: self.target.evaluator  # noqa: E731
    root = cache_root()
    runs = []
    for rep, cond in itertools.product(range(a.reps), "LS"):
        LocalRunner._first_pass_config = full if cond == "L" else short
        r = LocalRunner(t, cache_dir=str(root) if root else None)
        t0 = time.perf_counter()
        try:
            rows = run_campaign(spec_workloads(specs), r, t, None, show_progress=False)
        finally:
            r.close()
        df = pd.DataFrame(rows).set_index("block_id")
        runs.append((f"{cond}{rep}", df))
        print(f"{cond}{rep}: {time.perf_counter() - t0:.0f} s, odd/even rounds agree {100 * df.half_diff_rel.median():.1f} %, "
              f"CoV {100 * df.latency_cov.median():.1f} %", flush=True)
    LocalRunner._first_pass_config = short
    for (n1, x), (n2, y) in itertools.combinations(runs, 2):
        lr = np.log(x.latency_ms_median / y.latency_ms_median.reindex(x.index))
        print(f"{n1} vs {n2}: per-block medians agree to {100 * np.median(np.abs(lr - np.median(lr))):.2f} %")


if __name__ == "__main__":
    main()
