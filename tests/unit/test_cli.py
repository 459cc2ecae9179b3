"""The command line, driven through tvmlat.cli.main(argv): user errors are one `error:` line and exit 2."""

import json
import shutil
from pathlib import Path

import pytest

from helpers import MODELS, assert_user_error, run_cli, run_light
from tvmlat.dataset import meta_path
from tvmlat.predictors import FEATURE_SETS, load_predictor
from tvmlat.predictors.linear import DEFAULT_FEATURES
from tvmlat.runners.fake import FakeRunner


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    # nothing a command writes by default may land in the repository
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TVMLAT_TARGETS", raising=False)


@pytest.fixture
def models(tmp_path):
    p = tmp_path / "models.py"
    p.write_text(MODELS)
    return p


@pytest.fixture
def fake_local(monkeypatch):
    """Replace LocalRunner (what measure/calibrate construct) by a FakeRunner factory."""
    made: list[FakeRunner] = []

    def factory(target, check=True, **_):
        r = FakeRunner()
        r.target = target
        made.append(r)
        return r

    monkeypatch.setattr("tvmlat.runners.local.LocalRunner", factory)
    return made


# ------------------------------------------------------------------ targets


def test_targets_json(capsys):
    code, out, err = run_cli(["targets", "--format", "json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert isinstance(rows, list)
    llvm = [r for r in rows if r["name"] == "llvm"]
    assert len(llvm) == 1
    assert llvm[0]["kind"] == "llvm" and llvm[0]["profile"] == "default"


def test_targets_lists_invalid_files(tmp_path, capsys, monkeypatch):
    d = tmp_path / "mytargets"
    d.mkdir()
    (d / "broken.toml").write_text("kind = = 1\n")
    monkeypatch.setenv("TVMLAT_TARGETS", str(d))
    code, out, err = run_cli(["targets", "--format", "json"], capsys)
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert "llvm" in rows
    assert rows["broken"]["description"].startswith("invalid:")


def test_targets_takes_format_like_the_other_commands(capsys):
    code, out, err = run_cli(["targets", "--format", "json"], capsys)
    assert code == 0
    assert any(r["name"] == "llvm" for r in json.loads(out))


# ------------------------------------------------------------------ usage errors (click)


@pytest.mark.parametrize("args", [["nosuchcommand"], ["predict", "m.py:f"], ["calibrate", "--samples", "many"]],
                         ids=["unknown-command", "missing-option", "bad-int"])
def test_usage_errors_exit_2_without_traceback(capsys, args):
    code, out, err = run_cli(args, capsys)
    assert code == 2
    assert "Traceback" not in out + err
    assert err.strip()


def test_an_output_path_that_cannot_be_made_is_one_line(tmp_path, fake_dataset, capsys, fake_local):
    """--out under a regular file (or in /proc, a read-only folder): it ended in a FileNotFoundError traceback."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    path, _ = fake_dataset
    assert_user_error(run_cli(["fit", "-d", path, "--out", blocker / "sub" / "p.json"], capsys),
                      f"cannot use {blocker}")
    assert_user_error(run_cli(["calibrate", "--samples", "20", "--out", blocker / "runs", "--no-progress"], capsys),
                      "cannot use", "a folder it can create")
    assert all(r.calls == 0 for r in fake_local)  # nothing was measured


def test_a_dataset_given_twice_is_an_error(tmp_path, fake_dataset, capsys):
    path, _ = fake_dataset
    for cmd in (["fit", "--out", tmp_path / "p.json"], ["ablation"]):  # its blocks counted double, as two campaigns
        assert_user_error(run_cli([*cmd, "-d", path, "-d", path], capsys), "given twice")
    assert not (tmp_path / "p.json").exists()
    from tvmlat.dataset import concat_datasets
    from tvmlat.errors import DatasetError

    with pytest.raises(DatasetError, match="given twice"):  # the same object twice, as a script might pass it
        concat_datasets([path, path])


# ------------------------------------------------------------------ calibrate: bad input (no measuring)


def test_calibrate_unknown_target(capsys, fake_local):
    line = assert_user_error(run_cli(["calibrate", "--target", "nosuch", "--no-progress"], capsys),
                             "nosuch", "unknown target")
    assert "llvm" in line
    assert not fake_local  # nothing was measured


def test_calibrate_target_file_missing(tmp_path, capsys, fake_local):
    path = tmp_path / "nope.toml"
    assert_user_error(run_cli(["calibrate", "--target", path], capsys), str(path), "does not exist")


def test_calibrate_target_file_bad_toml(tmp_path, capsys, fake_local):
    path = tmp_path / "bad.toml"
    path.write_text('kind = "llvm"\n[evaluator\n')
    assert_user_error(run_cli(["calibrate", "--target", path], capsys), "not valid TOML")
    assert not fake_local


def test_calibrate_target_file_bad_values(tmp_path, capsys, fake_local):
    path = tmp_path / "bad.toml"
    path.write_text('kind = "llvm"\ncores = 0\n')
    assert_user_error(run_cli(["calibrate", "--target", path], capsys), "cores")


def test_calibrate_too_few_samples(capsys, fake_local):
    assert_user_error(run_cli(["calibrate", "--samples", "5"], capsys), "--samples 5")


def test_calibrate_unknown_family(capsys, fake_local):
    assert_user_error(run_cli(["calibrate", "--families", "linear,nosuch"], capsys), "nosuch")


# ------------------------------------------------------------------ predict


def test_predict_happy_path_json(models, predictor_path, capsys):
    code, out, err = run_cli(["predict", "--predictor", predictor_path, f"{models}:good", "--format", "json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["a", "b"]
    for r in rows:
        assert r["latency_ms"] > 0
        assert r["flops"] > 0
    assert sum(r["share_%"] for r in rows) == pytest.approx(100.0)
    # the prediction is the predictor's, from the entry's features
    assert rows[0]["inp"] == 4 * 16
    assert rows[1]["params"] == 8 * 3 * 3 * 3 + 8


def test_predict_names_work_no_calibration_block_had(models, tmp_path, fake_dataset, capsys):
    """A feature that is 0 in every training row has no price: an entry that has it is predicted too low, and
    predict says which entry and which feature (fit records each feature's largest training value)."""
    src, df = fake_dataset
    for zeroed, warned in (("n_ops", True), (None, False)):
        d = _copy_with_meta(src, tmp_path / f"z{zeroed}.parquet")
        if zeroed:
            df.assign(**{zeroed: 0}).to_parquet(d, index=False)
        p = tmp_path / f"z{zeroed}.predictor.json"
        code, _, err = run_cli(["fit", "-d", d, "-o", p], capsys)
        assert code == 0, err
        assert load_predictor(p).doc["training"]["feature_max"]["n_ops"] == (0 if zeroed else df["n_ops"].max())
        code, out, err = run_cli(["predict", "-p", p, f"{models}:good", "--format", "json"], capsys)
        assert code == 0, err
        json.loads(out)  # the warning goes to stderr
        assert ("warning: 2 of 2 entries" in err and "a (n_ops)" in err) is warned
        code, out, err = run_cli(["analyze", "-p", p, f"{models}:good", "--format", "json"], capsys)
        assert code == 0, err
        assert ("layers of a have work of a kind no calibration block had" in err and "(n_ops)" in err) is warned


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_predict_other_formats(models, predictor_path, capsys, fmt):
    code, out, err = run_cli(["predict", "-p", predictor_path, f"{models}:single", "--format", fmt], capsys)
    assert code == 0, err
    assert "single" in out
    if fmt == "csv":
        assert out.splitlines()[0].startswith("name,latency_ms")


def test_predict_profile_matches(models, predictor_path, capsys):
    code, out, err = run_cli(["predict", "-p", predictor_path, f"{models}:single", "--profile", "default",
                              "--format", "json"], capsys)
    assert code == 0, err
    assert json.loads(out)[0]["name"] == "single"


def test_predict_wrong_profile(models, predictor_path, capsys):
    assert_user_error(run_cli(["predict", "-p", predictor_path, f"{models}:good", "--profile", "tuned"], capsys),
                      "'default'", "'tuned'", "profile")


def test_predict_missing_predictor(models, tmp_path, capsys):
    p = tmp_path / "none.json"
    assert_user_error(run_cli(["predict", "--predictor", p, f"{models}:good"], capsys), str(p), "does not exist")


def test_predict_predictor_not_json(models, tmp_path, capsys):
    p = tmp_path / "p.json"
    p.write_text("<html>")
    assert_user_error(run_cli(["predict", "--predictor", p, f"{models}:good"], capsys), "not a JSON predictor")


@pytest.mark.parametrize("ref,needles", [
    ("models.py", ["must look like path/file.py:NAME"]),
    ("{d}/missing.py:good", ["missing.py", "does not exist"]),
    ("{m}:nosuch", ["no callable 'nosuch'", "good", "single", "returns_int"]),
    ("{m}:returns_int", ["returns_int", "(module, example_inputs)", "int"]),
    ("{m}:not_a_tensor", ["not_a_tensor", "example_inputs"]),
    ("{m}:not_a_module", ["torch.nn.Module"]),
    ("{m}:raises", ["inside the callable"]),
    ("{m}:empty", ["empty"]),
])
def test_predict_bad_model_ref(models, tmp_path, predictor_path, capsys, ref, needles):
    ref = ref.format(m=models, d=tmp_path)
    assert_user_error(run_cli(["predict", "-p", predictor_path, ref], capsys), ref, *needles)


def test_predict_model_ref_import_raises(tmp_path, predictor_path, capsys):
    p = tmp_path / "broken.py"
    p.write_text("import torch\nraise RuntimeError('cannot import this model')\n")
    assert_user_error(run_cli(["predict", "-p", predictor_path, f"{p}:model"], capsys),
                      "importing", "cannot import this model")


def test_predict_inputs_that_do_not_fit_the_module(tmp_path, predictor_path, capsys):
    p = tmp_path / "mismatch.py"
    p.write_text("import torch\ndef model():\n    return torch.nn.Linear(4, 2), torch.randn(2, 5)\n")
    assert_user_error(run_cli(["predict", "-p", predictor_path, f"{p}:model"], capsys))


# ------------------------------------------------------------------ evaluate


def test_evaluate_happy_path(predictor_path, fake_dataset, capsys):
    path, _ = fake_dataset
    code, out, err = run_cli(["evaluate", "-p", predictor_path, "-d", path, "--format", "json"], capsys)
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == {"this predictor", "held-out families", "5-fold"}
    assert rows["this predictor"]["n"] == rows["5-fold"]["n"] > 0
    assert 0 <= rows["this predictor"]["within10"] <= 1


def test_evaluate_says_when_the_rows_are_the_predictors_own(tmp_path, predictor_path, fake_dataset, capsys):
    """Evaluated on the dataset it was fitted on, 'this predictor' is in-sample: a note says so; on other rows none."""
    path, _ = fake_dataset
    own = tmp_path / "own.json"
    assert run_cli(["fit", "-d", path, "-o", own], capsys)[0] == 0
    code, _, err = run_cli(["evaluate", "-p", own, "-d", path], capsys)
    assert code == 0 and "is in-sample" in err and path.name in err
    code, _, err = run_cli(["evaluate", "-p", predictor_path, "-d", path], capsys)  # fitted on rows named "test"
    assert code == 0 and "in-sample" not in err


def test_evaluate_missing_predictor(tmp_path, fake_dataset, capsys):
    path, _ = fake_dataset
    p = tmp_path / "missing.json"
    assert_user_error(run_cli(["evaluate", "-p", p, "-d", path], capsys), str(p), "does not exist")


def test_evaluate_missing_dataset(tmp_path, predictor_path, capsys):
    d = tmp_path / "missing.parquet"
    assert_user_error(run_cli(["evaluate", "-p", predictor_path, "-d", d], capsys), str(d), "does not exist")


def test_evaluate_dataset_not_parquet(tmp_path, predictor_path, capsys):
    d = tmp_path / "d.parquet"
    d.write_text("a,b\n1,2\n")
    assert_user_error(run_cli(["evaluate", "-p", predictor_path, "-d", d], capsys), "parquet")


def _copy_with_meta(src, dst, **changes):
    """Copy a dataset and its meta.json, changing some meta fields."""
    shutil.copy(src, dst)
    meta = json.loads(meta_path(src).read_text())
    meta.update(changes)
    meta_path(dst).write_text(json.dumps(meta))
    return dst


def test_evaluate_profile_mismatch(tmp_path, predictor_path, fake_dataset, capsys):
    src, _ = fake_dataset
    d = _copy_with_meta(src, tmp_path / "tuned.parquet", profile="tuned")
    assert_user_error(run_cli(["evaluate", "-p", predictor_path, "-d", d], capsys), "'tuned'", "'default'")


def test_evaluate_on_another_chips_dataset_says_it_measures_transfer(tmp_path, predictor_path, fake_dataset, capsys):
    src, _ = fake_dataset
    pdoc = json.loads(Path(predictor_path).read_text())
    pdoc["target"]["mcpu"] = "znver4"
    pfile = tmp_path / "amd.predictor.json"
    pfile.write_text(json.dumps(pdoc))
    meta = json.loads(meta_path(src).read_text())
    for chip, noted in (("emeraldrapids", True), ("znver4", False)):
        d = _copy_with_meta(src, tmp_path / f"{chip}.parquet", target={**meta.get("target", {}), "mcpu": chip})
        code, out, err = run_cli(["evaluate", "-p", pfile, "-d", d, "--format", "json"], capsys)
        assert code == 0, err
        json.loads(out)  # the note goes to stderr: the JSON stays whole
        assert ("measured on emeraldrapids" in err and "calibrated on znver4" in err) is noted


# ------------------------------------------------------------------ fit


def test_fit_writes_a_loadable_predictor(tmp_path, fake_dataset, capsys):
    path, df = fake_dataset
    out_p = tmp_path / "fitted.json"
    code, out, err = run_cli(["fit", "-d", path, "-o", out_p], capsys)
    assert code == 0, err
    loaded = load_predictor(out_p)
    assert loaded.model.feature_names_in_ == sum(FEATURE_SETS[DEFAULT_FEATURES], [])  # the default feature set
    assert loaded.doc["training"]["n"] == int((df["status"] == "ok").sum())
    assert "predictor saved to" in out


def test_fit_unknown_features(tmp_path, fake_dataset, capsys):
    path, _ = fake_dataset
    assert_user_error(run_cli(["fit", "-d", path, "-o", tmp_path / "x.json", "--features", "magic"], capsys),
                      "magic")


def test_fit_mixed_targets(tmp_path, fake_dataset, capsys):
    src, _ = fake_dataset
    other = _copy_with_meta(src, tmp_path / "other.parquet", target_name="another-board")
    assert_user_error(run_cli(["fit", "-d", src, "-d", other, "-o", tmp_path / "x.json"], capsys), "mix")


def test_fit_single_family_dataset(tmp_path, capsys):
    from helpers import campaign_meta, make_target
    from tvmlat.blocks import sample_specs
    from tvmlat.dataset import CampaignWriter
    from tvmlat.measure import run_campaign, spec_workloads

    t = make_target()
    one = tmp_path / "one.parquet"
    writer = CampaignWriter(one, campaign_meta(t))
    run_campaign(spec_workloads(sample_specs(14, seed=0, families=["linear"])), FakeRunner(), t, writer,
                 show_progress=False)
    writer.finish()
    code, out, err = run_cli(["fit", "-d", one, "-o", tmp_path / "x.json"], capsys)
    assert code in (0, 2)
    assert "Traceback" not in out + err


# ------------------------------------------------------------------ measure, with the fake runner


def test_measure_with_fake_runner(models, tmp_path, capsys, fake_local):
    out_p = tmp_path / "m.parquet"
    code, out, err = run_cli(["measure", f"{models}:good", "--format", "json", "--no-progress", "--out", out_p],
                             capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["a", "b"]
    assert all(r["status"] == "ok" and r["latency_ms"] > 0 for r in rows)
    assert len(fake_local) == 1 and fake_local[0].calls == 2
    assert fake_local[0].target.name == "llvm"
    from tvmlat.dataset import read_dataset

    assert list(read_dataset(out_p)["name"]) == ["a", "b"]


def test_measure_failed_entry_is_an_error(models, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("tvmlat.runners.local.LocalRunner", lambda target, check=True, **_: FakeRunner(fail_keys={"b"}))
    out_p = tmp_path / "m.parquet"
    result = run_cli(["measure", f"{models}:good", "--format", "json", "--no-progress", "--out", out_p], capsys)
    assert_user_error(result, "1 of 2 entries failed", "b:", str(out_p))
    rows = json.loads(result[1])  # the table is still printed
    assert [r["status"] for r in rows] == ["ok", "compile_error"]


def test_measure_bad_model_ref_measures_nothing(tmp_path, capsys, fake_local):
    assert_user_error(run_cli(["measure", "no_colon_here", "--no-progress"], capsys), "MODEL_REF")
    assert all(r.calls == 0 for r in fake_local)


def test_commands_register_and_specs_predict_without_torch_or_scipy_fits():
    # `tvmlat --help` and a search loop's spec -> latency oracle load neither torch (0.8 s), TVM, nor the scipy
    # modules only fitting and scoring need (0.3 + 0.5 s); the command that needs one imports it when it runs
    shipped = Path(__file__).resolve().parents[2] / "datasets" / "llvm" / "calib-emeraldrapids-n100-s17"
    r = run_light("import pandas as pd\n"
                  "from tvmlat.cli import _register\n"
                  "_register()\n"
                  "from tvmlat.predictors import load_predictor, predict_specs\n"
                  "from tvmlat.specs import BlockSpec\n"
                  f"p = load_predictor({str(shipped) + '.predictor.json'!r})\n"
                  f"specs = [BlockSpec.from_json(s) for s in pd.read_parquet({str(shipped) + '.parquet'!r})['spec'][:20]]\n"
                  "assert min(predict_specs(p, specs)) > 0\n", also=("scipy.stats", "scipy.optimize"))
    assert r.returncode == 0, r.stderr


def test_version_names_the_features_version_and_the_stack(capsys):
    from importlib import metadata

    import tvmlat
    from tvmlat.features import FEATURES_VERSION

    code, out, err = run_cli(["--version"], capsys)
    assert code == 0, err
    assert out.strip().startswith(f"tvmlat {tvmlat.__version__} (features version {FEATURES_VERSION};")
    assert f"TVM {metadata.version('apache-tvm')}," in out and f"torch {metadata.version('torch')}," in out
