"""`tvmlat bundle`, `run-bundle`, `ingest`, `runtime-pack`: measure where TVM can't be built.

Compile a bundle here (any machine, no GPU needed), measure it there with only TVM's runtime,
bring the results back as a dataset.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import TvmlatError
from . import app
from .common import check_seed, console


@app.command("bundle")
def bundle_cmd(
    model_ref: Optional[str] = typer.Argument(None, help="file.py:NAME to bundle instead of sampled blocks"),
    target: str = typer.Option("cuda", "--target", "-t", help="target name or .toml path"),
    arch: Optional[str] = typer.Option(None, "--arch", help="CUDA architecture, e.g. sm_90 [the GPU here]"),
    profile: Optional[str] = typer.Option(None, "--profile", help="compile profile [the target file's]"),
    samples: int = typer.Option(100, "--samples", "-n", help="number of sampled blocks (without MODEL_REF)"),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(..., "--out", "-o", help="bundle folder (resumes if it exists)"),
) -> None:
    """Compile blocks (or a MODEL_REF's entries) for TARGET into a self-contained folder to measure elsewhere."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..blocks import sample_specs
    from ..bundle import build_bundle
    from ..dataset import host_info, versions
    from ..measure import module_workloads, spec_workloads
    from ..targets import load_target

    if not model_ref and samples < 1:
        raise TvmlatError(f"--samples {samples} bundles no blocks; give 1 or more, or a MODEL_REF to bundle")
    check_seed(seed)
    t = load_target(target).with_profile(profile).with_arch(arch)
    if model_ref:
        from ..modelref import load_model_ref

        from ..dataset import model_ref_record

        workloads = module_workloads(load_model_ref(model_ref))
        source = {"model_ref": model_ref, "model_refs": [model_ref_record(model_ref)]}  # ingest can recount them
    else:
        workloads = spec_workloads(sample_specs(samples, seed=seed))
        source = {"sampler": {"seed": seed, "samples": samples}}
    con = console()
    con.print(f"[bold]bundling[/] {len(workloads)} workloads for {t.name} "
              f"({t.arch or t.mcpu or t.kind}, profile {t.profile}) -> {out}")
    with Progress(TextColumn("[bold]compiling"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[last]}"), console=con) as progress:
        task = progress.add_task("", total=len(workloads), last="")
        bw = build_bundle(workloads, t, out, {"versions": versions(), "host": host_info(), **source},
                          on_done=lambda w, art: progress.update(task, advance=1, last=f"{w.name[:50]} {art['status']}"))
        progress.update(task, completed=len(workloads))
    m = bw.manifest
    size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    con.print(f"{len(m['entries'])} compiled, {len(m['failed'])} failed; bundle {size / 2**20:.1f} MiB. On the "
              f"measuring machine: TVM_USE_RUNTIME_LIB=1 PYTHONPATH={out}:RUNTIME python -m tvmlat.bundle_run {out}")


@app.command("run-bundle")
def run_bundle_cmd(
    bundle: Path = typer.Argument(..., help="bundle folder from `tvmlat bundle`"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="results (.jsonl) [BUNDLE/results.jsonl]"),
    check: bool = typer.Option(True, "--check/--no-check", help="compare outputs with torch's reference"),
    power: bool = typer.Option(False, "--power", help="also measure power and energy (NVIDIA, nvidia-ml-py)"),
    allow_version_mismatch: bool = typer.Option(False, "--allow-version-mismatch"),
) -> None:
    """Measure a bundle here (resumable). Same as `python -m tvmlat.bundle_run` inside the bundle."""
    from ..bundle_run import run_bundle

    counts = run_bundle(bundle, out or bundle / "results.jsonl", check=check, power=power,
                        allow_version_mismatch=allow_version_mismatch, log=console().print)
    console().print(f"done: {counts['measured']} measured ({counts['failed']} failed), "
                    f"{counts['skipped']} already there")


@app.command("ingest")
def ingest_cmd(
    results: Path = typer.Argument(..., help="results.jsonl from run-bundle"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="dataset .parquet [datasets/<target>/<bundle>.parquet]"),
) -> None:
    """Add a bundle's measurements to a dataset (rows already there are kept, not duplicated)."""
    from ..dataset import CampaignWriter
    from ..features import FEATURES_VERSION

    header, rows = read_results(results)
    t = header["target"]
    out = out or Path("datasets") / _dataset_dir(header) / f"{Path(header['bundle']).name}.parquet"
    meta = {"target_name": t["name"], "target": t, "profile": t.get("profile", "default"), "command": "ingest",
            "versions": header.get("compile_versions", {}), "runtime": header.get("runtime", {}),
            "device": {"name": header.get("runtime", {}).get("device", "")}, "evaluator": t.get("evaluator", {}),
            "compile_host": header.get("compile_host", {}), "source": str(results), "features_version": FEATURES_VERSION,
            "cache_geometry": header.get("cache_geometry"),  # the L1 the bundle's features were counted for
            "model_refs": header.get("model_refs") or []}  # where model rows came from (a later version recounts)
    writer = CampaignWriter(out, meta)
    done = writer.done_ids()
    added = 0
    for r in rows:
        if r["key"] in done:
            continue
        feats = r.get("features") or {}
        writer.append({**{k: v for k, v in r.items() if k not in ("type", "features", "key")}, **feats,
                       "block_id": r["key"], "target": t["name"], "profile": t.get("profile", "default")})
        added += 1
    writer.finish()
    console().print(f"ingested {added} rows ({len(rows) - added} already there) into {out}")


def _dataset_dir(header: dict) -> str:
    t = header["target"]
    dev = header.get("runtime", {}).get("device", "")
    tag = "".join(c if c.isalnum() else "-" for c in dev.lower()).strip("-") if dev else ""
    return f"{t['name']}-{tag}" if tag and t.get("kind") == "cuda" else t["name"]


def read_results(path: Path) -> tuple[dict, list[dict]]:
    """(header, rows) of a run-bundle results file; a torn last line (crash) is skipped."""
    if not path.is_file():
        raise TvmlatError(f"results file {path} does not exist; `tvmlat run-bundle B --out FILE` writes one")
    header, rows = None, []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("type") == "header" and header is None:
            header = rec
        elif rec.get("type") == "row":
            if "key" not in rec:
                raise TvmlatError(f"{path}:{n}: a row without a key; this is not a run-bundle results file")
            rows.append(rec)
    if header is None:
        raise TvmlatError(f"{path} has no header line; it is not a run-bundle results file")
    return header, rows


@app.command("runtime-pack")
def runtime_pack_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="folder to write the runtime into"),
    python: Optional[str] = typer.Option(None, "--python", help="Python version there, e.g. 3.12 [this one's]"),
) -> None:
    """Write TVM's runtime (no compiler) as a folder to put on PYTHONPATH where a bundle is measured."""
    import tvm
    import tvm_ffi

    if out.exists() and not out.is_dir():
        raise TvmlatError(f"--out {out} is a file; runtime-pack writes a folder (tvm, tvm_ffi): give a new or "
                          "existing folder")
    out.mkdir(parents=True, exist_ok=True)
    tvm_dir = Path(tvm.__file__).parent
    skip = shutil.ignore_patterns("libtvm_compiler.so", "3rdparty", "__pycache__", "*.pyc")
    shutil.copytree(tvm_dir, out / "tvm", ignore=skip, dirs_exist_ok=True)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if python is None or python == here:
        shutil.copytree(Path(tvm_ffi.__file__).parent, out / "tvm_ffi",
                        ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    else:  # tvm_ffi has a compiled extension per Python version: fetch the matching wheel
        import importlib.metadata as md
        import tempfile
        import zipfile

        ver = md.version("apache-tvm-ffi")
        with tempfile.TemporaryDirectory() as d:
            r = subprocess.run([sys.executable, "-m", "pip", "download", f"apache-tvm-ffi=={ver}", "--no-deps",
                                "--only-binary=:all:", "--python-version", python, "-d", d, "-q"],
                               capture_output=True, text=True)
            wheels = list(Path(d).glob("*.whl"))
            if r.returncode != 0 or not wheels:
                raise TvmlatError(f"could not fetch apache-tvm-ffi {ver} for Python {python}: "
                                  f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
            with zipfile.ZipFile(wheels[0]) as z:
                for n in z.namelist():
                    if n.startswith("tvm_ffi/"):
                        z.extract(n, out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    console().print(f"TVM runtime for Python {python or here} in {out}: {size / 2**20:.1f} MiB (libtvm_compiler.so, "
                    f"{(tvm_dir / 'lib' / 'libtvm_compiler.so').stat().st_size / 2**20:.0f} MiB, left out). "
                    f"There: TVM_USE_RUNTIME_LIB=1 PYTHONPATH=BUNDLE:{out} python -m tvmlat.bundle_run BUNDLE")
