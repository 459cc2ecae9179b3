"""Plots a person would rather look at than a table: predicted against measured latency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import TvmlatError

PLOT_EXTRA = "pip install 'tvmlat[plot]'"


def pyplot(what: str = "--plot"):
    """matplotlib's pyplot on the file-only Agg backend; a one-line TvmlatError naming the extra if missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TvmlatError(f"{what} needs matplotlib: {PLOT_EXTRA}") from None
    return plt


def check_plot(path: Path | None) -> None:
    """A ``--plot PATH`` option given without matplotlib, or naming a format matplotlib can't write (``x.txt``):
    the one-line error, before any work is done."""
    if path is None:
        return
    pyplot()
    from matplotlib.backend_bases import FigureCanvasBase

    kinds = FigureCanvasBase.get_supported_filetypes()
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix and suffix not in kinds:
        raise TvmlatError(f"--plot {path}: matplotlib can't write .{suffix} files; name a .png (or "
                          f"{', '.join('.' + k for k in sorted(kinds) if k in ('svg', 'pdf', 'jpg'))}) file")


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def accuracy_plot(panels: dict[str, pd.DataFrame], path: str | Path, title: str) -> Path:
    """One log-log panel per entry of ``panels`` (each a frame with ``measured``, ``predicted`` in ms and
    ``family``): a dot per block coloured by family, the diagonal, the ±10 % band, and the panel's
    median error and share within ±10 %. Written as PNG to ``path``."""
    plt = pyplot()
    path = Path(path)
    frames = [p for p in panels.values() if len(p)]
    if not frames:
        raise TvmlatError("nothing to plot: no measured block has a prediction")
    families = sorted(set().union(*(set(p["family"].astype(str)) for p in frames)))
    colours = {f: plt.get_cmap("tab10" if len(families) <= 10 else "tab20")(i) for i, f in enumerate(families)}
    allv = pd.concat([p[["measured", "predicted"]] for p in frames]).to_numpy(dtype=float)
    allv = allv[np.isfinite(allv) & (allv > 0)]
    lo, hi = allv.min() / 1.5, allv.max() * 1.5
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 1.8, 4.6), squeeze=False)
    for ax, (name, p) in zip(axes[0], panels.items()):
        ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="0.85", label="±10 %")
        ax.plot([lo, hi], [lo, hi], color="0.3", lw=0.8)
        for fam, g in p.groupby(p["family"].astype(str)):
            ax.scatter(g["measured"], g["predicted"], s=14, color=colours[fam], label=fam, alpha=0.85, lw=0)
        err = np.abs(p["predicted"].to_numpy(float) / p["measured"].to_numpy(float) - 1) * 100
        ax.text(0.03, 0.97, f"{len(p)} blocks\nmedian error {np.median(err):.1f} %\nwithin ±10 %: "
                f"{np.mean(err <= 10) * 100:.0f} %", transform=ax.transAxes, va="top", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="measured latency (ms)",
               ylabel="predicted latency (ms)")
        ax.set_title(name, fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.8 / (4.6 * len(panels) + 1.8), 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
