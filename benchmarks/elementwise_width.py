"""How an elementwise loop nest's cost depends on the innermost extent of its tensor (features version 10).

Times a ReLU, a multiply-add (`x * 1.5 + 0.5`, two nests) and an inference BatchNorm (four nests) on
(1, 32, H, W) float32 tensors of ~4096 rows for a sweep of widths W, compiled with the target's
default profile, and prints the time per element next to what the features count as slow
(`ew_slow`: nests whose innermost extent is EW_MIN..EW_UNROLL). On the AMD EPYC host (znver4) a
width of 9-42 (49 for the longer bodies) costs ~9x the time per element of a width <= 8 or >= 56.

    python benchmarks/elementwise_width.py [--target llvm] [--widths 4,8,9,16,...] [--mcpu haswell]
    python benchmarks/elementwise_width.py --planes    # narrow nests over small planes (version 12)

``--planes`` times the same ops over (1, C, H, W) tensors of ~16,384 elements with W under 9 and few
rows H: there the nest is unrolled whole over its rows as well, and planes of 9-56 elements (7 x 7,
4 x 4, 8 x 7, 2 x 16) cost what a 9-48-wide nest does; 8 x 8 (a ReLU), 16 x 4 and 100 x 7 do not.

``--mcpu`` compiles for another CPU's instruction set (and runs here, where that CPU's code runs):
the slow range is LLVM's code for AVX-512 CPUs (znver4, emeraldrapids, skylake-avx512 alike); for
haswell (AVX2) or a generic x86-64 every width costs the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WIDTHS = (4, 7, 8, 9, 14, 16, 24, 28, 32, 40, 42, 43, 48, 49, 56, 64, 112)
PLANES = ((7, 7), (8, 7), (12, 7), (16, 7), (100, 7), (4, 4), (12, 4), (14, 4), (16, 4), (7, 8), (8, 8), (16, 8),
          (2, 2), (8, 2), (32, 2), (64, 2), (8, 1), (16, 1), (64, 1))


def main() -> None:
    import dataclasses

    import torch
    from _bench import time_ms

    from tvmlat.features import count_features
    from tvmlat.runners.local import LocalRunner
    from tvmlat.targets import load_target

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="llvm")
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    ap.add_argument("--mcpu", default="", help="compile for this -mcpu instead of the target's")
    ap.add_argument("--planes", action="store_true", help="sweep small planes H x W (W < 9) instead of widths")
    args = ap.parse_args()
    t = load_target(args.target)
    if args.mcpu:
        t = dataclasses.replace(t, mcpu=args.mcpu)
    runner = LocalRunner(t, check=False)

    class MulAdd(torch.nn.Module):
        def forward(self, x):
            return x * 1.5 + 0.5

    ops = {"relu": lambda c: torch.nn.ReLU(), "mul-add": lambda c: MulAdd(), "batchnorm": lambda c: torch.nn.BatchNorm2d(c)}
    geometry = t.geometry()  # for --mcpu, that CPU's: its AVX-512 rules only where it has AVX-512
    shapes = [(32, max(1, 4096 // w), w) for w in (int(v) for v in args.widths.split(","))]
    if args.planes:
        shapes = [(max(8, 16384 // (h * w)), h, w) for h, w in PLANES]
    print(f"target {t.name}, compiled for {t.mcpu or 'a generic CPU'} ({geometry.describe()}); (1, C, H, W)")
    print(f"{'W':>4s} {'H':>4s} {'C':>5s} " + " ".join(f"{n + ' ns/el':>16s}" for n in ops) + "  counted slow")
    for c, h, w in shapes:
        x = torch.randn(1, c, h, w)
        cells, slow = [], []
        for name, make in ops.items():
            m = make(c).eval()
            ms = time_ms(runner, m, [x], f"{name} on {tuple(x.shape)}")
            cells.append(f"{ms * 1e6 / x.numel():16.3f}")
            slow.append(count_features(m, (x,), geometry=geometry)["ew_slow"] > 0)
        print(f"{w:4d} {h:4d} {c:5d} " + " ".join(cells) + f"  {'yes' if all(slow) else 'no' if not any(slow) else 'partly'}",
              flush=True)


if __name__ == "__main__":
    main()
