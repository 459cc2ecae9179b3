"""Time `analyze` (counting only, no compiling) on the reference networks.

    python benchmarks/analyze_speed.py

Prints, per network, layers, parameters, multiply-adds and the best of 3 wall times of
tvmlat.analysis.layer_table (a warm-up run first, since the first dispatch in a process pays
for torch's lazy initialisation).
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from tvmlat.analysis import layer_table, totals_row

NETS = Path(__file__).resolve().parent.parent / "examples" / "networks.py"


def main() -> None:
    spec = importlib.util.spec_from_file_location("nets", NETS)
    nets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nets)
    m, x = nets.small_cnn()
    layer_table(m, x)  # warm-up
    for name in ("mobilenet_v2", "resnet18", "resnet50", "vit_tiny", "small_cnn"):
        m, x = getattr(nets, name)()
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            df = layer_table(m, x)
            best = min(best, time.perf_counter() - t0)
        tot = totals_row(df)
        print(f"{name:14s} {len(df):4d} layers {tot['params']:>12,} params {tot['macs'] / 1e6:>10,.1f} M MACs  "
              f"{best:6.3f} s")


if __name__ == "__main__":
    main()
