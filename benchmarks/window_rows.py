"""What a window step of a pool or a depthwise conv costs, by the width of its output rows (features version 11).

Times max pools (kernel 2 and 3, padding k // 2) and depthwise convs (kernel 1, 3, 5, 7) on (1, 32, H, W)
float32 tensors of ~2048 rows, at stride 1 and 2, for a sweep of widths W, compiled with the target's
default profile, and prints the time per window step next to what the features count (``win_slow``,
``ew_slow`` before version 13: the row runs as scalar code LLVM unrolled whole,
``loop_features.window_slow``). On the AMD EPYC host (znver4):

* a strided row of fewer than 16 outputs costs 0.4-0.55 ns per step (pools and depthwise k >= 3
  alike), a row of 17 or more 0.07-0.16 ns; except short depthwise rows: 3 x 3 rows of 4-7 outputs
  and 5 x 5 / 7 x 7 rows of 4 cost 0.13-0.25 ns (version 13 counts a row of at most 8 outputs with
  kw * out_w <= 28 as short work), while a max pool's 4-7-wide strided rows cost 0.32-0.48 ns
  (``--square``: depthwise rows of exactly 8 outputs cost 0.12-0.13 ns for k 3, 5 and 7 alike, but
  5 x 5 and 7 x 7 ones are counted slow: no sampled block has such rows);
* a stride-1 pool row costs 0.4-0.5 ns per step up to out_w * (k * k + 8) <= 136 (11 outputs for
  k 2, 8 for k 3), 0.04-0.09 ns beyond, tail included;
* a stride-1 depthwise window (k >= 3) is vectorised at every width (0.03-0.1 ns);
* a depthwise 1 x 1 conv runs like an elementwise nest (0.85-0.94 ns per step at 9-28 wide, 0.18
  at 5-8 and 56; ~1 ns strided at any width), which version 11 does not count (it did not help).

* a stride-1 depthwise window costs more per step from 6 x 6 on (``--dw-kernels``: 0.033-0.062 ns for
  5 x 5, 0.042-0.081 for 6 x 6, 0.046-0.10 for 7 x 7 at 14-112 wide): more weights than vector registers.
  Counting the steps past 24-32 twice moved the held-out share by 0.1 point (docs/accuracy-log.md, "Tried").
  On the AMD Zen 5 host (1 min): each step a 7 x 7 window adds to a 5 x 5 one costs 0.028-0.086 ns, each step a
  5 x 5 adds to a 3 x 3 0.016-0.048 (14-112 wide; 0.086 / 0.048 at 28). Features version 28 counts the vector
  steps of 6 x 6 and 7 x 7 depthwise windows as ``short_scal``.

* an avg pool costs what the max pool of its shape costs plus its division, a nest over the output
  (``--avg``; square inputs C x H x H, C * H * H ~ 200k; 1 min 40 s with the whole script, compile cache
  filled): 0.6-1.3 ns more per output at most widths, what ``ew_slow`` prices such a nest at, but 2.1-7.5 ns
  at a few: stride 1, k 2 at 15 outputs wide (2.1 ns; 3.5 at 12 wide in a scratch run), k 3 at 9 and 10
  (7.5 and 6.4 ns); and a 2 x 2 stride-2 avg pool 9 wide runs 5x faster than the max pool of that shape
  (0.18 against 0.96 ns per step). These are LLVM's code-generation choices at single widths, not a rule of
  the loop nest: the sampled blocks' avg pools at 14 x 14 (k 2, stride 1, 15 outputs wide) are predicted
  0.48x of their time in-sample on this host.

* a stride-1 pool row of one 16-output vector step and a tail of 4-15 outputs costs more per step (``--tails``;
  features version 27; AMD Zen 5 host, 1 min): a 2 x 2 max pool 0.081-0.094 ns per step at 21, 23, 29 and 31 outputs
  wide against 0.047-0.058 at 13-19 and 0.048-0.066 from 33 up; 3 x 3 windows 0.050-0.057 at 20, 22, 28 and 30
  against 0.026-0.037 at 12-18 and 0.029-0.045 from 32 up. Version 27 counts those tails' steps as ``short_scal``.

    python benchmarks/window_rows.py [--target llvm] [--pad] [--square] [--dw-kernels] [--avg] [--tails]

``--pad`` also times a pool's and a depthwise conv's padded copy against the same op on an input
padded beforehand (version 11 counts none for pools on AVX-512 code). ``--square`` times stride-2
depthwise convs (3, 5, 7) and 3 x 3 max pools on square inputs 7 x 7 to 18 x 18 (~100k elements each),
the shapes of the sampled blocks' stride-2 stages, behind version 13's short-row rule.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SWEEPS = {1: (5, 7, 8, 9, 10, 11, 12, 14, 16, 28, 56), 2: (8, 10, 12, 14, 22, 28, 30, 32, 34, 40, 56)}


def main() -> None:
    import torch
    from _bench import time_ms

    from tvmlat.features import count_features
    from tvmlat.runners.local import LocalRunner
    from tvmlat.targets import load_target

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="llvm")
    ap.add_argument("--pad", action="store_true", help="also time the padded copies")
    ap.add_argument("--square", action="store_true", help="also time stride-2 windows on square 7x7-18x18 inputs")
    ap.add_argument("--dw-kernels", action="store_true",
                    help="also time stride-1 depthwise convs of kernel 3-7 on pre-padded 14x14-112x112 inputs")
    ap.add_argument("--avg", action="store_true", help="also time avg against max pools on square inputs")
    ap.add_argument("--tails", action="store_true",
                    help="also time stride-1 max pools on square inputs 12x12-64x64 (rows of 13-65 outputs)")
    args = ap.parse_args()
    t = load_target(args.target)
    geometry, runner = t.geometry(), LocalRunner(t, check=False)

    def time_us(m: torch.nn.Module, x: torch.Tensor) -> float:
        return time_ms(runner, m, [x], f"{type(m).__name__} on {tuple(x.shape)}") * 1e3

    def window(m: torch.nn.Module, x: torch.Tensor, k: int):
        """Time a k x k window op: (us, its output, ns per window step, "yes" where the features count it slow)."""
        us = time_us(m, x)
        with torch.no_grad():
            out = m(x)
        slow = count_features(m, (x,), geometry=geometry)["win_slow"] > 0
        return us, out, us * 1e3 / (out.numel() * k * k), "yes" if slow else "no"

    c = 32
    ops = [("max pool", k, lambda k, s: torch.nn.MaxPool2d(k, s, k // 2)) for k in (2, 3)]
    ops += [("dw conv", k, lambda k, s: torch.nn.Conv2d(c, c, k, s, k // 2, groups=c, bias=False)) for k in (1, 3, 5, 7)]
    print(f"target {t.name} ({geometry.describe()}); (1, {c}, H, W), H*W ~ 2048")
    print(f"{'op':9s} {'k':>2s} {'s':>2s} {'W':>4s} {'out_w':>5s} {'us':>8s} {'ns/step':>8s}  counted slow")
    for s, widths in SWEEPS.items():
        for name, k, make in ops:
            for w in widths:
                us, out, ns, slow = window(make(k, s), torch.randn(1, c, max(1, 2048 // w), w), k)
                print(f"{name:9s} {k:2d} {s:2d} {w:4d} {out.shape[-1]:5d} {us:8.1f} {ns:8.3f}  {slow}", flush=True)
    if args.square:
        print("stride 2 on square inputs (C, H, H), C * H * H ~ 100k")
        sq = [("max pool", 3, lambda k, c: torch.nn.MaxPool2d(3, 2, 1))]
        sq += [("dw conv", k, lambda k, c: torch.nn.Conv2d(c, c, k, 2, k // 2, groups=c, bias=False)) for k in (3, 5, 7)]
        for name, k, make in sq:
            for h in (7, 8, 10, 12, 14, 16, 18):
                ch = max(8, 100352 // (h * h))
                us, out, ns, slow = window(make(k, ch), torch.randn(1, ch, h, h), k)
                o = out.shape[-1]
                print(f"{name:9s} {k:2d}  H {h:3d} out {o:3d}x{o:<3d} {us:8.1f} us {ns:6.3f} ns/step  {slow}", flush=True)
    if args.dw_kernels:
        print("stride-1 depthwise convs on inputs padded beforehand (C, H + k - 1, H + k - 1), C * H * H ~ 400k")
        for h in (14, 28, 56, 112):
            ch = max(8, 401408 // (h * h))
            for k in (3, 4, 5, 6, 7):
                x = torch.randn(1, ch, h + k - 1, h + k - 1)
                us, out, ns, slow = window(torch.nn.Conv2d(ch, ch, k, 1, 0, groups=ch, bias=False), x, k)
                print(f"dw conv   {k:2d}  H {h:3d} C {ch:4d} {us:8.1f} us {ns:6.3f} ns/step  {slow}", flush=True)
    if args.avg:
        print("avg against max pools on square inputs (C, H, H), C * H * H ~ 200k: ns per window step, and what the "
              "avg pool costs more per output")
        for s in (1, 2):
            for k in (2, 3):
                for h in (7, 9, 10, 12, 14, 16, 20, 28):
                    ch = max(8, 200704 // (h * h))
                    x = torch.randn(1, ch, h, h)
                    mx, out, ns_max, _ = window(torch.nn.MaxPool2d(k, s, k // 2), x, k)
                    av, _, ns_avg, _ = window(torch.nn.AvgPool2d(k, s, k // 2), x, k)
                    print(f"k {k} s {s} H {h:3d} out_w {out.shape[-1]:3d}: max {ns_max:6.3f}, avg {ns_avg:6.3f} ns/step; "
                          f"avg {(av - mx) * 1e3 / out.numel():+6.2f} ns per output", flush=True)
    if args.tails:
        print("stride-1 max pools on square inputs (C, H, H), C * H * H ~ 200k: ns per window step, and the steps of "
              "the row's tail past 16 outputs that version 27 counts short_scal (0: none)")
        for k in (2, 3):
            for h in (12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 36, 40, 44, 48, 56, 60, 64):
                ch = max(8, round(200000 / (h * h)))
                x = torch.randn(1, ch, h, h)
                m = torch.nn.MaxPool2d(k, 1, k // 2)
                _, out, ns, _ = window(m, x, k)
                scal = count_features(m, (x,), geometry=geometry)["short_scal"]
                print(f"k {k} H {h:3d} out_w {out.shape[-1]:3d}: {ns:6.3f} ns/step  tail steps {scal}", flush=True)
    if args.pad:
        print("padded copy: the op with padding k // 2 against the same op, unpadded, on an input padded beforehand")
        for name, make in (("max pool", lambda p: torch.nn.MaxPool2d(3, 1, p)),
                           ("dw conv", lambda p: torch.nn.Conv2d(c, c, 3, 1, p, groups=c, bias=False))):
            for w in (7, 14, 28, 56):
                a = time_us(make(1), torch.randn(1, c, w, w))
                b = time_us(make(0), torch.randn(1, c, w + 2, w + 2))
                print(f"{name:9s} W {w:3d}: {a:7.1f} us padded inside, {b:7.1f} us prepadded: "
                      f"{(a - b) * 1e3 / (c * (w + 2) ** 2):+.2f} ns per padded element", flush=True)


if __name__ == "__main__":
    main()
