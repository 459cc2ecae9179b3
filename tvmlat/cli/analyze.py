"""`tvmlat analyze`: per-layer table of a whole network, bottlenecks, and predicted vs measured latency."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from ..errors import ModelRefError, TvmlatError
from . import app
from .common import NETWORK_CORRECTION_HELP, Format, console, emit, load_requested, warn_unpriced

COLUMNS = ["name", "op", "input_shape", "output_shape", "params", "macs", "flops", "read_mb", "write_mb",
           "weights_mb", "act_mb", "latency_ms", "low_ms", "high_ms", "share_%", "energy_mj", "power_w", "work_mib"]


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise TvmlatError(f"--input-shape {text!r} must look like 1x3x224x224") from None
    if not shape or any(d <= 0 for d in shape):
        raise TvmlatError(f"--input-shape {text!r}: every dimension must be a positive integer")
    return shape


@app.command("analyze")
def analyze_cmd(
    model_ref: str = typer.Argument(..., help="path/file.py:NAME or torchvision:NAME"),
    predictor: Optional[Path] = typer.Option(None, "--predictor", "-p", help="predictor JSON: adds predicted latency"),
    input_shape: Optional[str] = typer.Option(None, "--input-shape", help="replace the (single) example input, e.g. 1x3x224x224"),
    sort: Optional[str] = typer.Option(None, "--sort", help="sort by this column (descending for numbers)"),
    top: Optional[int] = typer.Option(None, "--top", help="show only the top K layers (after --sort; default sort: latency or FLOPs)"),
    fmt: str = typer.Option("table", "--format", "-f", help="table | csv | json | html"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="bar chart (PNG) of the top layers by predicted time (or FLOPs)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the csv/json/html output to this file instead of stdout"),
    compare_measured: bool = typer.Option(False, "--compare-measured", help="also compile and time the whole network"),
    target: str = typer.Option("llvm", "--target", "-t", help="target for --compare-measured"),
    profile: Optional[str] = typer.Option(None, "--profile", help="compile profile the prediction is for"),
    interval: Optional[float] = typer.Option(None, "--interval", help="with -p: a conformal interval of this coverage "
                                             "(e.g. 0.9) for each layer (low_ms, high_ms) and for the whole network"),
    network_correction: bool = typer.Option(True, "--network-correction/--no-network-correction",
                                            help=NETWORK_CORRECTION_HELP),
) -> None:
    """Split a network into layers (named by module path) and show where time, memory and compute go."""
    from ..analysis import layer_table
    from ..plots import check_plot

    if fmt not in ("table", "csv", "json", "html"):
        raise TvmlatError(f"--format {fmt!r}: choose table, csv, json or html")
    if top is not None and top < 1:
        raise TvmlatError(f"--top {top}: give how many layers to show, 1 or more (leave it out for all)")
    check_plot(plot)
    if interval is not None and not predictor:
        raise TvmlatError("--interval needs a predictor: add -p PREDICTOR.json")
    pred = load_requested(predictor, profile, interval, network_correction=network_correction) if predictor else None
    con = console()
    if model_ref.endswith(".onnx"):
        from ..analysis import onnx_layer_table
        from ..onnx_model import load_onnx

        if input_shape:
            raise TvmlatError("--input-shape does not apply to ONNX models: their shapes are fixed in the file")
        model = load_onnx(model_ref)
        total = _report(onnx_layer_table(model, pred, interval), model.name, pred, sort, top, fmt, plot, out, con)
        if compare_measured:
            from ..onnx_model import random_inputs, relax_from_onnx

            _compare(lambda r: r.run_relax(relax_from_onnx(model), random_inputs(model), key=model.name),
                     target, total, con, model.name, profile or (pred.profile if pred else None))
        return
    from ..modelref import load_model_ref  # torch: not for an ONNX file

    entries = load_model_ref(model_ref)
    for name, (module, inputs) in entries.items():
        if input_shape:
            if len(inputs) != 1:
                raise TvmlatError(f"--input-shape replaces a single input, but {name!r} takes {len(inputs)}")
            import torch  # here, not above: an ONNX file is analysed without torch (0.9 s to import)

            inputs = (torch.randn(_parse_shape(input_shape)),)
        try:
            df = layer_table(module, inputs, pred, interval)
        except TvmlatError:  # the predictor file's own one-line error (e.g. a damaged network correction)
            raise
        except Exception as e:  # noqa: BLE001 - the user's network does not run on its inputs
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ModelRefError(f"{model_ref}: {name!r} does not run on its example inputs: "
                                f"{type(e).__name__}: {first}") from None
        total = _report(df, name, pred, sort, top, fmt, plot, out, con)
        if compare_measured:
            _compare(lambda r, m=module, x=inputs, n=name: r.run(m, x, key=n), target, total, con, name,
                     profile or (pred.profile if pred else None))


def _report(df, name: str, pred, sort, top, fmt: str, plot, out, con) -> dict:
    """Sort, cut, print (or write) one network's layer table; return its totals row."""
    if not len(df):
        raise TvmlatError(f"{name}: no layers to show: it runs no op that tvmlat counts (a convolution, matmul, "
                          f"pooling, normalisation or elementwise op)")
    warn_unpriced(df["name"].tolist(), df.attrs.get("unpriced", []), f"layers of {name}")
    from ..analysis import totals_row

    net = df.attrs.get("network_interval")  # with --interval: the whole network's (analysis.layer_table)
    key = sort or ("latency_ms" if "latency_ms" in df else "flops" if top else None)
    if key is not None:
        if key == "work_mib" and key not in df.columns:
            raise TvmlatError("--sort work_mib: this predictor has no memory model; add one with `tvmlat memory "
                              "--dataset D.parquet --predictor P.json` (D: the dataset it was fitted on)")
        if key not in df.columns:
            raise TvmlatError(f"--sort {key!r}: no such column; columns: {', '.join(df.columns)}")
        df = df.sort_values(key, ascending=df[key].dtype == object, kind="stable")
    full = df
    if top is not None:
        df = df.head(top)
    total = totals_row(full)
    cols = [c for c in COLUMNS if c in df.columns]
    rows = df.to_dict("records") + [total]
    title = f"{name}: {len(full)} layers" + (f", predicted for {pred.describe()}"
                                              if pred else "")
    if fmt == "table":  # M-units keep the table narrow; csv/json/html carry the exact counts
        for r in rows:
            r["mmacs"], r["mflops"] = r["macs"] / 1e6, r["flops"] / 1e6
        tcols = [{"macs": "mmacs", "flops": "mflops"}.get(c, c) for c in cols]
        emit(rows, Format.table, tcols, title=title)
        con.print(f"totals: {total['params']:,} parameters, {total['macs'] / 1e6:,.2f} M multiply-adds "
                  f"(conv, matmul, attention), {total['flops'] / 1e6:,.2f} MFLOPs with elementwise ops, "
                  f"weights {total['weights_mb']:.2f} MB = {total['weights_mb'] * 1e6 / 2**20:.2f} MiB"
                  + (f", predicted {total['latency_ms']:.3f} ms" if pred else "")
                  + (f", {total['energy_mj']:.3f} mJ per inference at {total['power_w']:.1f} W" if "energy_mj" in total
                     else "") + _corrected(pred, total))
        if net is not None:
            con.print(_network_line(net))
        if "work_mib" in full:  # the predictor has a memory model
            con.print(_memory_line(full))
    else:
        text = (full.to_csv(index=False) if fmt == "csv" else full.to_json(orient="records", indent=2)
                if fmt == "json" else full.to_html(index=False))
        if out:
            out.write_text(text)
        else:
            print(text)
    if plot is not None:
        _bar_chart(df.head(top or 15), plot, title, net)
        con.print(f"chart: {plot}")
    return total


def _memory_line(df) -> str:
    """The network's predicted peak memory (the predictor's memory model, `memory.network_peak`) and the layer
    whose working set sets it."""
    top = df.loc[df["work_mib"].idxmax()]
    return (f"peak memory {df.attrs['peak_memory_bytes'] / 2**20:,.2f} MiB predicted: weights, "
            f"input and output held whole, plus the largest layer's working set, {top['work_mib']:,.2f} MiB in "
            f"{top['name']}")


def _corrected(pred, total: dict) -> str:
    """The whole-network prediction, if the predictor carries a fitted network correction."""
    factor = pred.network_factor() if pred else None
    if factor is None or "latency_ms" not in total:
        return ""
    if factor == 1.0:  # network-correction fitted one that did not pay leave-one-out
        return "; no network correction (the one fitted did not pay in leave-one-out)"
    return (f"; whole network {total['latency_ms'] * factor:.3f} ms with the network correction "
            f"x{factor:.3f} (fitted on {len(pred.doc['network_correction'].get('networks', []))} networks)")


def _network_line(net: dict) -> str:
    """The whole network's interval, as `analyze --interval` prints it under the table."""
    cov = f"{100 * net['coverage']:g} %"
    if not math.isfinite(net["high_ms"]):
        return (f"whole network: no {cov} interval: sized from {net['method']}, too few for that coverage; "
                f"ask for a lower --interval")
    return (f"whole network: {cov} interval {net['low_ms']:,.3f}-{net['high_ms']:,.3f} ms around "
            f"{net['predicted_ms']:,.3f} ms (sized from {net['method']})")


def _bar_chart(df, path: Path, title: str, net: dict | None = None) -> None:
    from ..plots import pyplot

    plt = pyplot()
    col = "latency_ms" if "latency_ms" in df else "flops"
    d = df.sort_values(col).tail(15)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(d) + 1.2))
    ranged = col == "latency_ms" and {"low_ms", "high_ms"} <= set(d.columns)  # --interval: each layer's as a bar
    ax.barh(d["name"], d[col], xerr=[d[col] - d["low_ms"], d["high_ms"] - d[col]] if ranged else None,
            error_kw={"ecolor": "0.3", "capsize": 3, "lw": 1})
    cov = f"{100 * net['coverage']:g} %" if net else ""
    ax.set_xlabel("predicted latency (ms)" + (f", with each layer's {cov} interval" if ranged else "")
                  if col == "latency_ms" else "FLOPs")
    if net and math.isfinite(net["high_ms"]):
        title += f"\nwhole network {net['predicted_ms']:,.1f} ms, {cov} interval {net['low_ms']:,.1f}-{net['high_ms']:,.1f} ms"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _compare(measure, target: str, total: dict, con, name: str, profile: str | None = None) -> None:
    """Time the whole network (``measure(runner)`` returns its RunResult) and print it next to the
    predicted sum of layers."""
    from ..runners.local import LocalRunner
    from ..targets import load_target

    t = load_target(target).with_profile(profile)
    res = measure(LocalRunner(t))
    if res.status != "ok":
        raise TvmlatError(f"measuring {name!r} on {t.name} failed: {res.error}")
    measured = res.latency_ms_median
    predicted = total.get("latency_ms", math.nan)
    con.print(f"[bold]{name}[/] on {t.name}: measured whole network {measured:.3f} ms (CoV "
              f"{100 * res.latency_cov:.1f} %)" + ("" if math.isnan(predicted) else
              f", predicted sum of layers {predicted:.3f} ms, ratio predicted/measured {predicted / measured:.2f}"))
