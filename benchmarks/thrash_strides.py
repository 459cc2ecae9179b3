"""What a linear layer's multiply-add costs by its column count: the column walk that L1 thrashes (features version 19).

Times linear layers of 196 tokens (a ViT's MLP at 224 px), reduction 384 and 768, over column counts whose
4-byte stride L1 holds 8 lines of (one set: 1024, 2048, 3072 columns on a 64-set 8-way L1), 16 lines (two
sets: 512, 1536, 2560) and 32 or more (640, 768, 1280, 1792), compiled with the target's default profile,
and prints ns per multiply-add next to the lines (``loop_features.l1_lines``) and what ``mac_l1thrash`` counts.
On the AMD EPYC host (``znver4``, 32 KiB 8-way L1), 2026-12-06:

* one set (8 lines): 2.87-2.89 ns per multiply-add at reduction 384, 3.18-3.59 at 768;
* two sets (16 lines): 2.28-2.35 and 2.67-2.86 ns;
* 32 lines or more: 0.94-0.95 and 1.06-1.17 ns.

So a two-set walk pays 0.70-0.72 of a one-set walk's excess: version 19 counts 0.7 of its multiply-adds
(``loop_features.THRASH_PARTIAL``). 3 min 19 s for the fourteen layers of the first two groups there.

Checked later the same day at other shapes (``--tokens 49 --reductions 128,1024`` and ``--tokens 16 --reductions
384``, columns 512, 768, 1024, 1536, 2048), ns per multiply-add for one set / two sets / 32 lines:

* 49 tokens, reduction 128: 2.83-2.86 / 2.31-2.41 / 0.85, so the two-set walk pays 0.73-0.78 of the excess;
* 49 tokens, reduction 1024: 3.22-3.76 / 2.73-2.92 / 1.21: 0.67-0.76;
* 16 tokens, reduction 384: 2.90-2.92 / 2.35 / 1.00: 0.71.

The share holds at 0.67-0.78 from 16 to 196 tokens and reductions 128 to 1024 (one L1 shape, 8-way).

    python benchmarks/thrash_strides.py [--target llvm] [--tokens N] [--reductions R,...] [--columns C,...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOKENS = 196
REDUCTIONS = (384, 768)
COLUMNS = (512, 640, 768, 1024, 1280, 1536, 1792, 2048, 2560, 3072)


def main() -> None:
    import torch
    from _bench import time_ms

    from tvmlat.features import count_features
    from tvmlat.loop_features import l1_lines
    from tvmlat.runners.local import LocalRunner
    from tvmlat.targets import load_target

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ints = lambda text: tuple(int(v) for v in text.split(","))  # noqa: E731
    ap.add_argument("--target", default="llvm")
    ap.add_argument("--tokens", type=int, default=TOKENS, help=f"rows of the input [{TOKENS}]")
    ap.add_argument("--reductions", type=ints, default=REDUCTIONS, help="comma-separated input widths [384,768]")
    ap.add_argument("--columns", type=ints, default=COLUMNS, help="comma-separated output widths [512,...,3072]")
    args = ap.parse_args()
    tokens = args.tokens
    t = load_target(args.target)
    geometry, runner = t.geometry(), LocalRunner(t, check=False)
    print(f"target {t.name} ({geometry.describe()}); linear layers of {tokens} tokens")
    print(f"{'red':>4s} {'cols':>5s} {'lines':>5s} {'ms':>9s} {'ns/MAC':>7s}  counted mac_l1thrash / MACs")
    for red in args.reductions:
        for cols in args.columns:
            m, x = torch.nn.Linear(red, cols), torch.randn(1, tokens, red)
            ms = time_ms(runner, m, [x], f"linear {red} -> {cols}")
            macs = tokens * red * cols
            counted = count_features(m, (x,), geometry=geometry)["mac_l1thrash"] / macs
            print(f"{red:4d} {cols:5d} {int(l1_lines(4 * cols, geometry)):5d} {ms:9.2f} {ms * 1e6 / macs:7.3f}  "
                  f"{counted:.2f}", flush=True)


if __name__ == "__main__":
    main()
