"""Whole-network analysis on the meta device (no TVM): reference totals, stable layer names, CLI."""

from __future__ import annotations

import importlib.util
import io
import json
import math
from pathlib import Path

import pytest
import torch

from tvmlat.analysis import explain_import_error, layer_features, layer_table, totals_row, trace_layers, traced
from helpers import assert_user_error, run_cli

NETS = Path(__file__).resolve().parents[2] / "examples" / "networks.py"


@pytest.fixture(scope="module")
def nets():
    spec = importlib.util.spec_from_file_location("tvmlat_example_networks", NETS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_trace_counts_the_whole_module_as_count_features_does(nets):
    """`predict` takes an entry's features from its trace instead of counting it a second time, so the trace's
    totals must be ``count_features``' row, key for key: sampled blocks of every family and two networks."""
    from tvmlat.blocks import FAMILIES, build_block, sample_specs
    from tvmlat.features import count_features
    from tvmlat.loop_features import DEFAULT_GEOMETRY

    entries = [build_block(s, device="meta") for s in sample_specs(2 * len(FAMILIES), seed=3)]
    entries += [nets.small_cnn(), nets.mobilenet_v2()]
    for m, x in entries:
        assert traced(m, x, DEFAULT_GEOMETRY)[2] == count_features(m, x, geometry=DEFAULT_GEOMETRY)


def test_mobilenet_v2_reference_totals(nets):
    """torchvision's MobileNetV2 (1000 classes, 224x224): 3,504,872 parameters, 300.77 M multiply-adds
    in convolutions and the linear layer, 13.37 MiB of float32 weights."""
    m, x = nets.mobilenet_v2()
    tot = totals_row(layer_table(m, x))
    assert tot["params"] == 3_504_872 == sum(p.numel() for p in m.parameters())
    assert round(tot["macs"] / 1e6, 2) == 300.77
    assert round(tot["weights_mb"] * 1e6 / 2**20, 2) == 13.37


def test_half_width_mobilenet_v2_reference_totals(nets):
    """torchvision's ``mobilenet_v2(width_mult=0.5)``: 1,968,680 parameters; 97 M multiply-adds (Sandler et al.)."""
    m, x = nets.mobilenet_v2_050()
    tot = totals_row(layer_table(m, x))
    assert tot["params"] == 1_968_680 == sum(p.numel() for p in m.parameters())
    assert round(tot["macs"] / 1e6) == 97


@pytest.mark.parametrize("name, params, gmacs", [("resnet18", 11_689_512, 1.81), ("resnet50", 25_557_032, 4.09),
                                                 ("resnet34", 21_797_672, 3.66)])
def test_resnet_reference_totals(nets, name, params, gmacs):
    m, x = getattr(nets, name)()
    df = layer_table(m, x)
    tot = totals_row(df)
    assert tot["params"] == params
    assert round(tot["macs"] / 1e9, 2) == gmacs
    assert tot["weights_mb"] == pytest.approx(params * 4 / 1e6)
    # every parameter is attributed to exactly one layer
    assert df["params"].sum() == params


def test_layer_names_follow_module_paths_and_are_stable(nets):
    m, x = nets.mobilenet_v2()
    names = [lay.name for lay in trace_layers(m, x)[0]]
    assert names[:4] == ["features.0", "features.1.conv.0", "features.1.conv.1", "features.2.conv.0"]
    assert "features.3.conv.2" in names and "classifier.1" in names
    assert len(set(names)) == len(names)
    m2, x2 = nets.mobilenet_v2()
    assert [lay.name for lay in trace_layers(m2, x2)[0]] == names
    r, xr = nets.resnet18()
    rnames = [lay.name for lay in trace_layers(r, xr)[0]]
    assert {"conv1", "maxpool", "layer1.0.conv1", "layer2.0.downsample", "fc"} <= set(rnames)


def test_layer_sums_match_whole_network_counts(nets):
    from tvmlat.features import count_features

    m, x = nets.resnet18()
    df = layer_table(m, x)
    whole = count_features(m, x)
    assert df["flops"].sum() == whole["flops"] and df["macs"].sum() == whole["macs"]


def test_predicted_latency_column(nets, predictor_path):
    from tvmlat.predictors import load_predictor

    m, x = nets.small_cnn()
    df = layer_table(m, x, load_predictor(predictor_path))
    assert (df["latency_ms"] > 0).all()
    assert df["share_%"].sum() == pytest.approx(100)


def test_layer_features_are_what_layer_table_predicts_and_carry_their_l1(nets, predictor_path):
    from tvmlat.errors import PredictorError
    from tvmlat.loop_features import CacheGeometry
    from tvmlat.predictors import load_predictor

    pred = load_predictor(predictor_path)
    m, x = nets.mobilenet_v2()
    rows = layer_features(m, x, geometry=pred.geometry)
    table = layer_table(m, x, pred)
    assert len(rows) == len(table) and rows["params"].sum() == table["params"].sum()
    assert pred.predict(rows).sum() == pytest.approx(table["latency_ms"].sum(), rel=1e-12)
    other = CacheGeometry(sets=pred.geometry.sets * 2, ways=pred.geometry.ways, line=pred.geometry.line)
    with pytest.raises(PredictorError, match="counted for"):
        pred.predict(layer_features(m, x, geometry=other))


def test_import_error_names_the_layer():
    class Spectrum(torch.nn.Module):
        def forward(self, x):
            return torch.fft.rfft(x).abs()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(16, 16)
            self.spectrum = Spectrum()

        def forward(self, x):
            return self.spectrum(self.fc(x))

    msg = explain_import_error(Net(), (torch.randn(2, 16),),
                               "import failed: AssertionError: Unsupported function types ['_fft_r2c.default']")
    assert "spectrum" in msg and "_fft_r2c" in msg


def test_analyze_cli_formats_sort_top_plot(tmp_path, predictor_path, capsys):
    ref = f"{NETS}:small_cnn"
    code, out, err = run_cli(["analyze", ref, "-p", predictor_path, "--format", "json", "--sort", "flops"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    flops = [r["flops"] for r in rows]
    assert flops == sorted(flops, reverse=True)
    assert all({"name", "latency_ms", "params", "read_mb", "weights_mb"} <= set(r) for r in rows)
    code, out, err = run_cli(["analyze", ref, "--format", "csv", "--top", "3"], capsys)
    assert code == 0 and out.splitlines()[0].startswith("name,")
    code, out, err = run_cli(["analyze", ref, "--top", "3", "--plot", tmp_path / "top.png"], capsys)
    assert code == 0 and "TOTAL" in out and (tmp_path / "top.png").stat().st_size > 0
    code, out, err = run_cli(["analyze", ref, "--format", "html", "--out", tmp_path / "t.html"], capsys)
    assert code == 0 and "<table" in (tmp_path / "t.html").read_text()
    code, out, err = run_cli(["analyze", ref, "--input-shape", "1x3x32x32", "--format", "json"], capsys)
    assert code == 0 and json.loads(out)[0]["input_shape"] == "1x3x32x32"


@pytest.mark.parametrize("args, needle", [
    (["--sort", "nosuch"], "nosuch"),
    (["--input-shape", "1xAx3"], "input-shape"),
    (["--format", "pdf"], "format"),
])
def test_analyze_bad_options(args, needle, capsys):
    assert_user_error(run_cli(["analyze", f"{NETS}:small_cnn", *args], capsys), needle)


def test_analyze_bad_model_refs(tmp_path, capsys):
    assert_user_error(run_cli(["analyze", f"{NETS}:nosuch"], capsys), "mobilenet_v2")
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\ndef net():\n    return torch.nn.Linear(4, 2), (torch.randn(2, 5),)\n")
    assert_user_error(run_cli(["analyze", f"{bad}:net"], capsys), "does not run")
    # torchvision either is missing here (clear message) or builds the model without weights
    code, out, err = run_cli(["analyze", "torchvision:resnet18", "--format", "json"], capsys)
    if code:
        assert_user_error((code, out, err), "torchvision")
    else:
        assert json.loads(out)


def test_loo_factors_leave_each_network_out():
    import numpy as np

    from tvmlat.anchors import loo_factors

    m = np.array([2.0, 4.0, 8.0])
    p = np.array([1.0, 2.0, 4.0])  # a constant factor of 2: every leave-one-out factor is 2
    np.testing.assert_allclose(loo_factors(m, p), [2.0, 2.0, 2.0])
    f = loo_factors(np.array([1.0, 1.0, 4.0]), np.ones(3))
    assert f[2] == 1.0 and f[0] == pytest.approx(2.0)


def test_network_correction_cli_with_fake_runner(tmp_path, predictor_path, monkeypatch, capsys):
    import shutil

    from tvmlat.predictors import load_predictor
    from tvmlat.runners.fake import FakeRunner

    monkeypatch.setattr("tvmlat.runners.local.LocalRunner", lambda target, check=True, **_: FakeRunner())
    pred = tmp_path / "p.json"
    shutil.copy(predictor_path, pred)
    target = tmp_path / "fake.toml"  # the fixture predictor was fitted for target "fake"
    target.write_text('name = "fake"\nkind = "llvm"\ncores = 1\n')
    code, out, err = run_cli(["network-correction", f"{NETS}:small_cnn", f"{NETS}:vit_tiny", f"{NETS}:resnet18",
                              "-p", pred, "--target", target], capsys)
    assert code == 0, err
    corr = load_predictor(pred).doc["network_correction"]
    assert corr["factor"] > 0 and corr["networks"] == ["small_cnn", "vit_tiny", "resnet18"]
    res = corr["loo_log_residuals"]  # each network against the factor of the other two: they size network intervals
    assert len(res) == 3 and all(math.isfinite(r) for r in res) and any(r != 0 for r in res)
    assert "corrected_error_%" in out
    code, out, err = run_cli(["analyze", f"{NETS}:small_cnn", "-p", pred], capsys)
    assert code == 0 and "with the network correction" in out
    assert "no calibration block had" not in err
    # layers with work the calibration never priced are named, as `analyze` and `predict` name them
    doc = json.loads(pred.read_text())
    doc.setdefault("training", {})["feature_max"] = {"n_ops": 0}
    pred.write_text(json.dumps(doc))
    code, out, err = run_cli(["network-correction", f"{NETS}:small_cnn", f"{NETS}:vit_tiny", f"{NETS}:resnet18",
                              "-p", pred, "--target", target], capsys)
    assert code == 0, err
    assert "layers of small_cnn have work of a kind no calibration block had" in err and "(n_ops)" in err
    # a predictor for another target is refused
    assert_user_error(run_cli(["network-correction", f"{NETS}:small_cnn", "-p", pred, "--target", "llvm"], capsys),
                      "fake")


def test_network_correction_anchors_divide_out_the_hosts_drift(tmp_path, predictor_path, fake_dataset, monkeypatch,
                                                               capsys):
    """A host twice as slow as at calibration: the anchor blocks see it, and the stored factor is
    the one a host at calibration speed gives; without anchors the drift lands in the factor."""
    import shutil

    from tvmlat.predictors import load_predictor
    from tvmlat.runners.fake import FakeRunner

    target = tmp_path / "fake.toml"
    target.write_text('name = "fake"\nkind = "llvm"\ncores = 1\n')
    nets = [f"{NETS}:small_cnn", f"{NETS}:vit_tiny", f"{NETS}:resnet18"]

    def correction(slowdown, *extra):
        monkeypatch.setattr("tvmlat.runners.local.LocalRunner",
                            lambda target, check=True, **_: FakeRunner(slowdown=slowdown))
        pred = tmp_path / f"p{slowdown}{len(extra)}.json"
        shutil.copy(predictor_path, pred)
        code, out, err = run_cli(["network-correction", *nets, "-p", pred, "--target", target, *extra], capsys)
        assert code == 0, err
        return load_predictor(pred).doc["network_correction"], out

    anchors = ["--anchors", str(fake_dataset[0]), "--anchor-blocks", "12"]
    calm, _ = correction(1.0, *anchors)
    slow, out = correction(2.0, *anchors)
    assert slow["host_factor"] == pytest.approx(calm["host_factor"] / 2, rel=1e-6)
    assert slow["fitted_factor"] == pytest.approx(calm["fitted_factor"], rel=1e-6) and slow["anchor_blocks"] == 12
    assert slow["factor"] == calm["factor"]
    assert "anchor blocks" in out and "host_adjusted_ms" in out
    plain, _ = correction(2.0)
    assert plain["fitted_factor"] == pytest.approx(2 * calm["fitted_factor"] / calm["host_factor"], rel=1e-6)
    assert plain["applied"] and plain["factor"] == plain["fitted_factor"]  # without anchors the drift is in it: kept
    assert calm["applied"] == (calm["median_abs_error_%_loo_corrected"] < calm["median_abs_error_%_before"])
    assert "host_factor" not in plain
    code, out, err = run_cli(["network-correction", *nets, "-p", predictor_path, "--target", target,
                              "--anchors", str(fake_dataset[0]), "--anchor-blocks", "2"], capsys)
    assert_user_error((code, out, err), "at least 3 anchor blocks")


def test_network_correction_refits_from_stored_timings(tmp_path, predictor_path, fake_dataset, monkeypatch, capsys):
    """The networks and anchor blocks a run timed are stored, and --timings-from fits a refitted predictor's
    correction from them without measuring: a predictor twice as slow everywhere sees the host twice as slow
    against it and keeps the same factor with anchors; without anchors its factor halves."""
    import shutil

    from tvmlat.predictors import load_predictor
    from tvmlat.runners.fake import FakeRunner

    target = tmp_path / "fake.toml"
    target.write_text('name = "fake"\nkind = "llvm"\ncores = 1\n')
    nets = [f"{NETS}:small_cnn", f"{NETS}:vit_tiny", f"{NETS}:resnet18"]
    monkeypatch.setattr("tvmlat.runners.local.LocalRunner", lambda target, check=True, **_: FakeRunner())

    def doubled(src, dest):  # the same predictor, every term twice the cost
        doc = json.loads(Path(src).read_text())
        doc["model"]["coefficients"] = {k: 2 * v for k, v in doc["model"]["coefficients"].items()}
        doc["model"]["intercept_ms"] *= 2
        doc.pop("network_correction", None)
        Path(dest).write_text(json.dumps(doc))
        return dest

    for extra in (["--anchors", str(fake_dataset[0]), "--anchor-blocks", "12"], []):
        first = tmp_path / f"first{len(extra)}.json"
        shutil.copy(predictor_path, first)
        code, out, err = run_cli(["network-correction", *nets, "-p", first, "--target", target, *extra], capsys)
        assert code == 0, err
        corr = load_predictor(first).doc["network_correction"]
        timed = corr["timings"]
        assert timed["target"] == "fake" and timed["model_refs"] == nets
        assert sorted(timed["networks"]) == sorted(["small_cnn", "vit_tiny", "resnet18"])
        assert (timed["anchors"] is None) == (not extra) and (not extra or len(timed["anchors"]["blocks"]) == 12)
        # nothing is measured from here on
        monkeypatch.setattr("tvmlat.runners.local.LocalRunner", lambda *a, **k: pytest.fail("measured again"))
        again = doubled(first, tmp_path / f"again{len(extra)}.json")
        code, out, err = run_cli(["network-correction", "-p", again, "--timings-from", first], capsys)
        assert code == 0, err
        new = load_predictor(again).doc["network_correction"]
        assert new["timings"]["networks"] == timed["networks"] and new["timings_reused_from"] == first.name  # beside it
        if extra:
            assert new["host_factor"] == pytest.approx(2 * corr["host_factor"], rel=1e-9)
            # a stored anchor dataset that is not where it was (a relative path, run from elsewhere) is looked
            # for beside the file that stores the timings
            moved = tmp_path / "moved"
            moved.mkdir()
            src = Path(fake_dataset[0])
            for f in (src, src.with_name(src.stem + ".meta.json")):
                shutil.copy(f, moved / f.name)
            doc = json.loads(first.read_text())
            doc["network_correction"]["timings"]["anchors"]["dataset"] = f"nowhere/{src.name}"
            (moved / "first.json").write_text(json.dumps(doc))
            code, out, err = run_cli(["network-correction", "-p", again, "--timings-from", moved / "first.json"], capsys)
            assert code == 0, err
            assert load_predictor(again).doc["network_correction"]["anchor_dataset"] == str(moved / src.name)
            assert new["fitted_factor"] == pytest.approx(corr["fitted_factor"], rel=1e-9)
            assert new["loo_log_residuals"] == pytest.approx(corr["loo_log_residuals"], abs=1e-9)
        else:
            assert new["fitted_factor"] == pytest.approx(corr["fitted_factor"] / 2, rel=1e-9)
        monkeypatch.setattr("tvmlat.runners.local.LocalRunner", lambda target, check=True, **_: FakeRunner())
    # bad input: nothing to reuse, both ways at once, neither
    assert_user_error(run_cli(["network-correction", "-p", again, "--timings-from", predictor_path], capsys),
                      "stores no network timings")
    elsewhere = json.loads(first.read_text())
    elsewhere["network_correction"]["timings"]["model_refs"] = ["no/such/nets.py:all"]
    (tmp_path / "elsewhere.json").write_text(json.dumps(elsewhere))
    assert_user_error(run_cli(["network-correction", "-p", again, "--timings-from", tmp_path / "elsewhere.json"],
                              capsys), "nor from", "the folder it was timed in")
    # --target with stored timings: nothing is measured on it, so it must be the target they were timed on
    assert_user_error(run_cli(["network-correction", "-p", again, "--timings-from", first, "--target", "cuda"],
                              capsys), "--target cuda: the networks in", "were timed on 'fake'")
    code, out, err = run_cli(["network-correction", "-p", again, "--timings-from", first, "--target", target], capsys)
    assert code == 0, err
    # relative MODEL_REFs: the file records the folder they are relative to, so a refit finds them from anywhere
    for d in ("models", "sub/deep", "far"):
        (tmp_path / d).mkdir(parents=True)
    shutil.copy(NETS, tmp_path / "models" / "nets.py")
    shutil.copy(predictor_path, tmp_path / "sub" / "deep" / "rel.json")
    monkeypatch.chdir(tmp_path)
    rel = [f"models/nets.py:{n}" for n in ("small_cnn", "vit_tiny", "resnet18")]
    code, out, err = run_cli(["network-correction", *rel, "-p", "sub/deep/rel.json", "--target", target], capsys)
    assert code == 0, err
    timed = json.loads((tmp_path / "sub" / "deep" / "rel.json").read_text())["network_correction"]["timings"]
    assert timed["model_refs"] == rel and timed["folder"] == "../.."
    monkeypatch.chdir(tmp_path / "far")
    monkeypatch.setattr("tvmlat.runners.local.LocalRunner", lambda *a, **k: pytest.fail("measured again"))
    code, out, err = run_cli(["network-correction", "-p", "../sub/deep/rel.json", "--timings-from",
                              "../sub/deep/rel.json", "--out", "here.json"], capsys)
    assert code == 0, err
    moved = json.loads((tmp_path / "far" / "here.json").read_text())["network_correction"]
    assert moved["timings"]["model_refs"] == rel and moved["timings"]["folder"] == ".."
    assert moved["timings"]["networks"] == timed["networks"]
    (tmp_path / "models" / "nets.py").unlink()  # gone from its folder too: the line names that folder
    assert_user_error(run_cli(["network-correction", "-p", "here.json", "--timings-from", "here.json"], capsys),
                      "models/nets.py:small_cnn", f"nor from {tmp_path.resolve()}, the folder it was timed in")
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({**json.loads(Path(predictor_path).read_text()), "network_correction": [1, 2]}))
    assert_user_error(run_cli(["network-correction", "-p", again, "--timings-from", odd], capsys),
                      "stores no network timings")
    assert_user_error(run_cli(["network-correction", *nets, "-p", again, "--timings-from", first], capsys), "not both")
    assert_user_error(run_cli(["network-correction", "-p", again, "--timings-from", first, "--anchors",
                               str(fake_dataset[0])], capsys), "--anchors to measure")
    assert_user_error(run_cli(["network-correction", "-p", again], capsys), "MODEL_REF")
    assert_user_error(run_cli(["network-correction", "-p", again, "--timings-from", tmp_path / "no.json"], capsys),
                      "no such file")
    # timings of one CPU do not correct a predictor calibrated on another, nor does measuring this host
    doc = json.loads(first.read_text())
    doc["network_correction"]["timings"]["chip"] = "cpu-a"
    first.write_text(json.dumps(doc))
    other = json.loads(again.read_text())
    other["target"]["mcpu"] = "cpu-b"
    again.write_text(json.dumps(other))
    assert_user_error(run_cli(["network-correction", "-p", again, "--timings-from", first], capsys),
                      "calibrated on 'cpu-b', but the networks in")
    target.write_text('name = "fake"\nkind = "llvm"\ncores = 1\nmcpu = "cpu-a"\n')
    assert_user_error(run_cli(["network-correction", *nets, "-p", again, "--target", target], capsys),
                      "would be timed on 'cpu-a' (this host)")
    doc["network_correction"]["timings"]["networks"]["small_cnn"] = -1
    first.write_text(json.dumps(doc))
    assert_user_error(run_cli(["network-correction", "-p", again, "--timings-from", first], capsys), "damaged")


def test_a_refit_keeps_the_network_correction_and_memory_model_of_the_file_it_replaces(
        tmp_path, predictor_path, fake_dataset, monkeypatch, capsys):
    """`tvmlat fit --out P.json` over a predictor that a network correction and a memory model were added to: the
    correction is fitted again from its stored timings (nothing measured), the memory model kept; a correction
    without timings is kept and marked; another target's sections are dropped with a line that says so."""
    import shutil

    from tvmlat.runners.fake import FakeRunner

    target = tmp_path / "fake.toml"
    target.write_text('name = "fake"\nkind = "llvm"\ncores = 1\n')
    nets = [f"{NETS}:small_cnn", f"{NETS}:vit_tiny", f"{NETS}:resnet18"]
    monkeypatch.setattr("tvmlat.runners.local.LocalRunner", lambda target, check=True, **_: FakeRunner())
    pred = tmp_path / "p.json"
    shutil.copy(predictor_path, pred)
    code, out, err = run_cli(["network-correction", *nets, "-p", pred, "--target", target], capsys)
    assert code == 0, err
    memory = {"kind": "memory-linear", "features": ["inp"], "coefficients": {"inp": 4.0, "intercept_kib": 1.0}}
    doc = json.loads(pred.read_text())
    doc["memory"] = memory
    doc["network_correction"]["factor"] = 9.0  # a stale factor, to see it fitted again
    pred.write_text(json.dumps(doc))
    monkeypatch.setattr("tvmlat.runners.local.LocalRunner", lambda *a, **k: pytest.fail("measured again"))
    code, out, err = run_cli(["fit", "-d", str(fake_dataset[0]), "--out", pred], capsys)
    assert code == 0, err
    new = json.loads(pred.read_text())
    assert new["memory"] == memory and "kept the memory model" in out
    nc = new["network_correction"]
    assert "refitted from its 3 networks' stored timings" in out and nc["timings_reused_from"] == pred.name
    assert nc["factor"] != 9.0 and nc["timings"] == doc["network_correction"]["timings"]
    # stopped while the correction is refitted: the new model was saved with the timings in the same write
    import tvmlat.cli.network_correction as ncmod

    refit = ncmod.refit_correction

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(ncmod, "refit_correction", interrupted)
    code, out, err = run_cli(["fit", "-d", str(fake_dataset[0]), "--features", "ops", "--out", pred], capsys)
    assert code != 0
    cut = json.loads(pred.read_text())
    assert cut["features"] != new["features"] and cut["memory"] == memory
    assert cut["network_correction"]["timings"] == nc["timings"] and cut["network_correction"]["note"].startswith(
        "fitted with the model this file held before")
    monkeypatch.setattr(ncmod, "refit_correction", refit)
    # timings that can't be refitted from here (a MODEL_REF that does not load): kept as it was, and said
    broken = json.loads(pred.read_text())
    broken["network_correction"]["timings"]["model_refs"] = ["nowhere/[x].py:nets"]
    pred.write_text(json.dumps(broken))
    code, out, err = run_cli(["fit", "-d", str(fake_dataset[0]), "--out", pred], capsys)
    assert code == 0, err
    assert "refitting it from its stored timings failed" in out and "nowhere/[x].py" in out
    assert json.loads(pred.read_text())["network_correction"]["factor"] == nc["factor"]
    # no timings (a correction made before they were stored): kept; the same model refitted leaves it as it was
    del new["network_correction"]["timings"], new["network_correction"]["timings_reused_from"]
    pred.write_text(json.dumps(new))
    code, out, err = run_cli(["fit", "-d", str(fake_dataset[0]), "--out", pred], capsys)
    assert code == 0, err
    kept = json.loads(pred.read_text())["network_correction"]
    assert "the model it was fitted with is unchanged" in out and kept == new["network_correction"]
    # ... and another model marks it
    code, out, err = run_cli(["fit", "-d", str(fake_dataset[0]), "--features", "ops", "--out", pred], capsys)
    assert code == 0, err
    kept = json.loads(pred.read_text())["network_correction"]
    assert "stores no timings to refit it from" in out and kept["factor"] == nc["factor"]
    assert "fitted with the model this file held before" in kept["note"]
    # marked once, it stays marked even when the next refit's model is the one it was marked with
    code, out, err = run_cli(["fit", "-d", str(fake_dataset[0]), "--features", "ops", "--out", pred], capsys)
    assert code == 0, err
    assert "stores no timings" in out and "fitted with the model this file held before" in json.loads(
        pred.read_text())["network_correction"]["note"]
    # another target's sections: dropped, and said
    other = json.loads(pred.read_text())
    other["target"]["name"] = "other"
    pred.write_text(json.dumps(other))
    code, out, err = run_cli(["fit", "-d", str(fake_dataset[0]), "--out", pred], capsys)
    assert code == 0, err
    assert "of another target, profile or chip" in out
    assert not {"network_correction", "memory"} & set(json.loads(pred.read_text()))
    # a damaged file in the way (its target not a table) is replaced like one of another target
    pred.write_text(json.dumps({"target": "llvm", "memory": memory}))
    code, out, err = run_cli(["fit", "-d", str(fake_dataset[0]), "--out", pred], capsys)
    assert code == 0, err
    assert "of another target, profile or chip" in out and "memory" not in json.loads(pred.read_text())


def test_network_correction_needs_three_networks(tmp_path, predictor_path, monkeypatch, capsys):
    from tvmlat.runners.fake import FakeRunner

    monkeypatch.setattr("tvmlat.runners.local.LocalRunner", lambda target, check=True, **_: FakeRunner())
    target = tmp_path / "fake.toml"
    target.write_text('name = "fake"\nkind = "llvm"\ncores = 1\n')
    assert_user_error(run_cli(["network-correction", f"{NETS}:small_cnn", "-p", predictor_path, "-t", target],
                              capsys), "at least 3")


@pytest.mark.parametrize("net", ["resnet18", "small_cnn"])
def test_split_layers_match_analyze_layers_and_run(nets, net):
    from tvmlat.split import split_layers

    m, x = getattr(nets, net)()
    pieces = split_layers(m, x)
    assert list(pieces) == [lay.name for lay in trace_layers(m, x)[0]]
    for name, (piece, args) in pieces.items():
        out = piece(*args)
        assert isinstance(out, (torch.Tensor, tuple, list)), name
        assert not any(p.requires_grad for p in piece.parameters())  # weights are bound buffers


def test_analyze_refuses_a_predictor_of_another_profile(predictor_path, capsys):
    assert_user_error(run_cli(["analyze", f"{NETS}:small_cnn", "-p", predictor_path, "--profile", "tuned"], capsys),
                      "profile")


def test_analyze_and_predict_give_a_network_the_same_peak_memory(capsys):
    """With a predictor that carries a memory model (the shipped Intel 200-block one), `analyze` prints the
    network's peak as `predict` gives it, and names the layer whose working set sets it."""
    import re

    import pandas as pd

    from tvmlat.memory import MemoryModel, network_peak, working_sets
    from tvmlat.predictors import load_predictor

    p = Path(__file__).resolve().parents[2] / "datasets" / "llvm" / "calib-emeraldrapids-n200-s0.predictor.json"
    loaded = load_predictor(p)
    model = MemoryModel.from_dict(loaded.doc["memory"])
    ref = f"{NETS}:small_cnn"
    code, out, _ = run_cli(["analyze", ref, "-p", p], capsys)
    assert code == 0
    line = re.search(r"peak memory ([\d,.]+) MiB predicted.*?([\d,.]+) MiB in (\S+)", out)
    assert line, out
    code, out, _ = run_cli(["predict", ref, "-p", p, "-f", "json"], capsys)
    assert code == 0
    assert float(line.group(1).replace(",", "")) == pytest.approx(json.loads(out)[0]["peak_memory_mib"], abs=0.006)
    spec = importlib.util.spec_from_file_location("tvmlat_example_networks_peak", NETS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    m, x = mod.small_cnn()
    rows = layer_features(m, x, geometry=loaded.geometry)
    work = working_sets(model, rows)
    names = [lay.name for lay in trace_layers(m, x)[0]]
    assert line.group(3) == names[int(work.argmax())]
    assert float(line.group(2).replace(",", "")) == pytest.approx(work.max() / 2**20, abs=0.006)
    whole = pd.Series(trace_layers(m, x, geometry=loaded.geometry)[1])
    assert network_peak(model, whole, rows) < float(model.predict(pd.DataFrame([whole]))[0])  # not one block
    # each layer's working set is a column (csv/json too), sortable like the others
    code, out, _ = run_cli(["analyze", ref, "-p", p, "-f", "csv", "--sort", "work_mib"], capsys)
    table = pd.read_csv(io.StringIO(out))
    assert code == 0 and table["work_mib"].is_monotonic_decreasing
    assert table.set_index("name").loc[names, "work_mib"].to_numpy() == pytest.approx(work / 2**20)


def test_analyze_sort_by_working_set_without_a_memory_model_says_how_to_get_one(predictor_path, capsys):
    assert_user_error(run_cli(["analyze", f"{NETS}:small_cnn", "-p", predictor_path, "--sort", "work_mib"], capsys),
                      "no memory model; add one with `tvmlat memory")


def test_analyze_a_network_with_no_counted_op_says_so(tmp_path, capsys):
    """A module that runs no op tvmlat counts (an Identity) has no layer table: one line, not a KeyError."""
    ref = tmp_path / "ident.py"
    ref.write_text("import torch\n\ndef ident():\n    return {'id': (torch.nn.Identity(), (torch.randn(1, 8),))}\n")
    assert_user_error(run_cli(["analyze", f"{ref}:ident"], capsys), "no layers to show")


def test_anchor_blocks_from_a_row_that_is_no_block_spec_are_one_line(tmp_path, fake_dataset):
    """A hand-edited spec among the anchor rows is a DatasetError naming the file and the text, not a JSON traceback."""
    from tvmlat.anchors import draw_anchor_specs
    from tvmlat.errors import DatasetError

    path, df = fake_dataset
    bad = df.copy()
    bad["spec"] = bad["spec"].where(bad["status"] != "ok", "{not json")
    p = tmp_path / "edited.parquet"
    bad.to_parquet(p, index=False)
    with pytest.raises(DatasetError, match=r"edited\.parquet: a row's spec column is not a block spec .*\{not json"):
        draw_anchor_specs(p, 5)
    assert len(draw_anchor_specs(path, 5)) == 5
