"""`tvmlat calibrate` end to end, with LocalRunner replaced by the FakeRunner (no TVM compilation)."""

import json

import numpy as np
import pytest

from helpers import assert_user_error, run_cli
from tvmlat.blocks import sample_specs
from tvmlat.dataset import meta_path, read_dataset
from tvmlat.features import FEATURES_VERSION
from tvmlat.predictors import load_predictor
from tvmlat.runners.fake import FakeRunner


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    """Each LocalRunner(target) the command builds is a FakeRunner, kept here for inspection."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TVMLAT_TARGETS", raising=False)
    made: list[FakeRunner] = []
    opts: dict = {}

    def factory(target, check=True, **_):
        r = FakeRunner(**opts)
        r.target = target
        made.append(r)
        return r

    monkeypatch.setattr("tvmlat.runners.local.LocalRunner", factory)
    return made, opts


def _files(out):
    return (sorted(out.glob("*.parquet")), sorted(out.glob("*.meta.json")), sorted(out.glob("*.predictor.json")))


def test_calibrate_end_to_end_and_resume(tmp_path, capsys, fakes):
    made, _ = fakes
    out = tmp_path / "cal"
    args = ["calibrate", "--samples", "20", "--out", out, "--no-progress"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert "Traceback" not in stdout + err
    parquets, metas, preds = _files(out)
    assert len(parquets) == len(metas) == len(preds) == 1
    assert len(made) == 1 and made[0].calls == 20
    assert made[0].target.name == "llvm"

    df = read_dataset(parquets[0])
    specs = sample_specs(20, seed=0)
    assert len(df) == 20
    assert set(df["block_id"]) == {s.block_id for s in specs}
    assert (df["status"] == "ok").all()

    meta = json.loads(metas[0].read_text())
    assert "wall_s_last_run" in meta
    assert meta_path(parquets[0]) == metas[0]
    assert meta["target_name"] == "llvm" and meta["profile"] == "default"
    assert meta["sampler"]["seed"] == 0 and meta["sampler"]["samples"] == 20
    assert meta["features_version"] == FEATURES_VERSION
    assert meta["rows"] == 20

    loaded = load_predictor(preds[0])
    assert loaded.profile == "default"
    assert loaded.target["name"] == "llvm"
    assert loaded.doc["training"]["n"] == 20
    p = loaded.predict(df)
    assert np.all(np.isfinite(p)) and np.all(p > 0)
    assert "predictor saved to" in stdout

    # the same command again: everything is on disk, nothing new is measured, and the measuring run's record
    # (a marker here, not a timing) stays
    metas[0].write_text(json.dumps({**meta, "wall_s_last_run": 123.0}))
    code, stdout2, err2 = run_cli(args, capsys)
    assert code == 0, err2
    assert len(made) == 2 and made[1].calls == 0
    assert "resuming: 20 already measured" in stdout2
    assert len(read_dataset(parquets[0])) == 20
    assert _files(out) == (parquets, metas, preds)
    assert json.loads(metas[0].read_text())["wall_s_last_run"] == 123.0


def test_calibrate_interrupt_keeps_rows_and_resumes(tmp_path, capsys, fakes):
    made, opts = fakes
    out = tmp_path / "cal"
    args = ["calibrate", "--samples", "12", "--out", out, "--no-progress", "--campaign", "c"]
    opts["interrupt_after"] = 5
    code, stdout, err = run_cli(args, capsys)
    assert "Traceback" not in err
    assert len(read_dataset(out / "c.parquet")) == 5
    assert not (out / "c.predictor.json").exists()  # stopped before fitting

    opts.clear()
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert made[-1].calls == 12 - 5
    assert "12 blocks measured (7 of them this run" in stdout  # not "measured 12 blocks ... this run"
    df = read_dataset(out / "c.parquet")
    assert len(df) == 12 and df["block_id"].is_unique
    assert set(df["block_id"]) == {s.block_id for s in sample_specs(12, seed=0)}
    assert (out / "c.predictor.json").is_file()


def test_calibrate_interrupt_exits_130(tmp_path, capsys, fakes):
    _, opts = fakes
    opts["interrupt_after"] = 2
    code, stdout, err = run_cli(["calibrate", "--samples", "12", "--out", tmp_path / "cal", "--no-progress"], capsys)
    assert code == 130
    assert "interrupted" in err


def test_calibrate_refuses_to_mix_profiles(tmp_path, capsys, fakes):
    out = tmp_path / "cal"
    args = ["calibrate", "--samples", "12", "--out", out, "--no-progress", "--campaign", "c"]
    assert run_cli(args, capsys)[0] == 0
    mp = out / "c.meta.json"
    meta = json.loads(mp.read_text())
    meta["profile"] = "tuned"
    mp.write_text(json.dumps(meta))
    code, stdout, err = run_cli(args, capsys)
    assert code == 2
    assert err.startswith("error:") and "profile" in err and "Traceback" not in err


def test_calibrate_draws_its_accuracy_plot_when_it_can(tmp_path, capsys, fakes, monkeypatch):
    out = tmp_path / "cal"
    code, stdout, err = run_cli(["calibrate", "--samples", "12", "--out", out, "--no-progress"], capsys)
    assert code == 0, err
    (png,) = out.glob("*.accuracy.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot: {png}" in stdout.replace("\n", "")
    # without matplotlib (the [plot] extra) the calibration still ends with its predictor, and no plot
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out2 = tmp_path / "cal2"
    code, stdout, err = run_cli(["calibrate", "--samples", "12", "--out", out2, "--no-progress"], capsys)
    assert code == 0, err
    assert len(list(out2.glob("*.predictor.json"))) == 1 and not list(out2.glob("*.png"))


def test_calibrate_with_own_blocks_measures_them_in_the_campaign_and_fits_them_as_their_family(tmp_path, capsys,
                                                                                                fakes):
    """`calibrate --with path.py:NAME`: the entries are measured with the sampled blocks (one campaign, its own
    file), fitted as family NAME, recorded in meta.json for a later recount; a bad reference measures nothing."""
    from pathlib import Path

    from helpers import assert_user_error
    from tvmlat.dataset import meta_geometry, refresh_features

    made, _ = fakes
    own = Path(__file__).resolve().parents[2] / "examples" / "own_blocks.py"
    out = tmp_path / "cal"
    args = ["calibrate", "--samples", "20", "--out", out, "--no-progress", "--with", f"{own}:convnext"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    parquets, metas, preds = _files(out)
    assert len(parquets) == 1 and parquets[0].name.endswith("-n20-s0-with-convnext.parquet")
    df = read_dataset(parquets[0])
    mine = df[df["family"] == "convnext"]
    assert len(df) == 32 and len(mine) == 12 and made[0].calls == 32 and (mine["spec"] == "").all()
    assert "and 12 of your own (convnext, counted 3 times in the fit)" in stdout
    assert "your own blocks count 3 times each (convnext, 12 blocks) in every fit" in stdout
    meta = json.loads(metas[0].read_text())
    assert meta["model_refs"] == [{"ref": f"{own}:convnext", "layers": False}]
    assert meta["own_families"] == {"convnext": 3}
    # their rows count again from the reference (a later features version), as measured rows do
    again = refresh_features(df, meta_geometry(parquets[0]), meta["model_refs"])
    assert (again.loc[mine.index, "flops"] == mine["flops"]).all()
    loaded = load_predictor(preds[0])
    assert "convnext" in loaded.doc["training"]["families"] and loaded.doc["training"]["n"] == 32
    assert loaded.doc["training"]["counted"] == {"convnext": 3}
    assert "convnext" in stdout  # the fit's per-family table: the family held out, predicted from the others
    # the same command again resumes (nothing measured); bad --with values measure nothing at all
    code, stdout, err = run_cli(args, capsys)
    assert code == 0 and made[-1].calls == 0 and "resuming: 32 already measured" in stdout
    n = len(made)
    copy = tmp_path / "copy.py"
    copy.write_text(own.read_text())
    (tmp_path / "mine.py").write_text("def pool():\n    return {}\n")
    for bad, needle in (([f"{own}:nothing"], "has no callable 'nothing'"),
                        (["torchvision:resnet18"], "give your blocks as path/file.py:NAME"),
                        ([f"{tmp_path / 'mine.py'}:pool"], "'pool' is a family the sampler already draws"),
                        ([f"{own}:convnext", f"{copy}:convnext"], "comes from both")):
        assert_user_error(run_cli(["calibrate", "--samples", "20", "--out", tmp_path / "bad", "--no-progress",
                                   *[a for r in bad for a in ("--with", r)]], capsys), needle)
    for extra, needle in ((["--with-weight", "0", "--with", f"{own}:convnext"], "--with-weight 0: give how many times"),
                          (["--with-weight", "101", "--with", f"{own}:convnext"], "an integer from 1"),
                          (["--with-weight", "2"], "--with-weight counts your --with blocks")):
        assert_user_error(run_cli(["calibrate", "--samples", "20", "--out", tmp_path / "bad", "--no-progress",
                                   *extra], capsys), needle)
    assert len(made) == n and not (tmp_path / "bad").exists()


def test_own_blocks_count_towards_the_blocks_a_fit_needs(tmp_path, capsys, fakes):
    """`--samples 0 --with ...`: a campaign of your own blocks only, when they are enough to fit (12); too few in
    all (sampled + yours) is a one-line error that says how many to sample, before anything is measured."""
    from pathlib import Path

    from helpers import assert_user_error

    made, _ = fakes
    own = Path(__file__).resolve().parents[2] / "examples" / "own_blocks.py"
    out = tmp_path / "cal"
    code, stdout, err = run_cli(["calibrate", "--samples", "0", "--out", out, "--no-progress", "--with",
                                 f"{own}:convnext"], capsys)
    assert code == 0, err
    parquets, _, preds = _files(out)
    assert len(parquets) == 1 and parquets[0].name.endswith("-n0-s0-with-convnext.parquet")
    df = read_dataset(parquets[0])
    assert len(df) == 12 and set(df["family"]) == {"convnext"} and made[-1].calls == 12
    assert load_predictor(preds[0]).doc["training"]["n"] == 12
    n = len(made)
    for args, needle in ((["--samples", "1", "--with", f"{own}:mbconv"], "(--samples 2 or more)"),  # 10 of its own
                         (["--samples", "-1", "--with", f"{own}:mbconv"], "--samples -1 is negative"),
                         (["--samples", "0", "--families", "pool", "--with", f"{own}:convnext"], "samples none"),
                         (["--samples", "20", "--seed", "-5"], "--seed -5 is negative"),
                         # a name that climbed out of --out wrote the campaign's four files two folders up
                         (["--samples", "20", "--campaign", "../../x"], "--campaign '../../x'"),
                         (["--samples", "20", "--campaign", ""], "--campaign ''"),
                         (["--samples", "5"], "--samples 5 is too few")):
        assert_user_error(run_cli(["calibrate", "--out", tmp_path / "bad", "--no-progress", *args], capsys), needle)
    assert len(made) == n and not (tmp_path / "bad").exists()


def test_own_blocks_count_as_calibrated_when_refitted_and_as_told_with_own_weight(tmp_path, capsys, fakes):
    """`calibrate --with-weight 1` records it; `tvmlat fit` over that campaign counts them as recorded, `--own-weight`
    overrides; a weight for datasets without own blocks, or two campaigns that disagree, are one-line errors."""
    from pathlib import Path

    from helpers import assert_user_error

    own = Path(__file__).resolve().parents[2] / "examples" / "own_blocks.py"
    out = tmp_path / "cal"
    code, stdout, err = run_cli(["calibrate", "--samples", "20", "--out", out, "--no-progress", "--with",
                                 f"{own}:convnext", "--with-weight", "1"], capsys)
    assert code == 0, err
    assert "counted once in the fit" in stdout
    parquet = _files(out)[0][0]
    assert json.loads(meta_path(parquet).read_text())["own_families"] == {"convnext": 1}
    once = load_predictor(_files(out)[2][0])
    assert once.doc["training"]["counted"] == {"convnext": 1}
    code, stdout, err = run_cli(["fit", "-d", parquet, "--out", tmp_path / "refit.json"], capsys)
    assert code == 0, err
    refit = load_predictor(tmp_path / "refit.json")
    assert refit.doc["training"]["counted"] == {"convnext": 1}
    assert refit.doc["model"] == once.doc["model"]  # as calibrated: the same fit
    code, stdout, err = run_cli(["fit", "-d", parquet, "--out", tmp_path / "w4.json", "--own-weight", "4"], capsys)
    assert code == 0, err
    w4 = load_predictor(tmp_path / "w4.json")
    assert w4.doc["training"]["counted"] == {"convnext": 4} and w4.doc["model"] != once.doc["model"]
    assert "your own blocks count 4 times each (convnext, 12 blocks)" in stdout
    # the ablation fits every model counting each block once, and says so where the predictor counted them more
    meta = json.loads(meta_path(parquet).read_text())
    meta_path(parquet).write_text(json.dumps({**meta, "own_families": {"convnext": 3}}))
    code, stdout, err = run_cli(["ablation", "-d", parquet, "--no-xgb", "--no-family-shots", "--draws", "1"], capsys)
    assert code == 0, err
    assert "your own (convnext) too; the predictor `calibrate --with` fitted counts them 3 times" in " ".join(
        stdout.split())
    meta_path(parquet).write_text(json.dumps(meta))
    # another campaign of the same own family counted otherwise, and one without own blocks
    meta = json.loads(meta_path(parquet).read_text())
    other = tmp_path / "other.parquet"
    other.write_bytes(parquet.read_bytes())
    meta_path(other).write_text(json.dumps({**meta, "own_families": {"convnext": 3}}))
    plain = tmp_path / "plain.parquet"
    plain.write_bytes(parquet.read_bytes())
    meta_path(plain).write_text(json.dumps({k: v for k, v in meta.items() if k not in ("own_families", "model_refs")}))
    # a campaign calibrated before the weight was recorded counted its own blocks once, and still does
    legacy = tmp_path / "legacy.parquet"
    legacy.write_bytes(parquet.read_bytes())
    meta_path(legacy).write_text(json.dumps({k: v for k, v in meta.items() if k != "own_families"}))
    code, stdout, err = run_cli(["fit", "-d", legacy, "--out", tmp_path / "legacy.json", "--own-weight", "4"], capsys)
    assert code == 0, err
    assert load_predictor(tmp_path / "legacy.json").doc["model"] == w4.doc["model"]
    code, stdout, err = run_cli(["fit", "-d", legacy, "--out", tmp_path / "legacy.json"], capsys)
    assert code == 0 and load_predictor(tmp_path / "legacy.json").doc["model"] == once.doc["model"]
    for args, needle in ((["-d", parquet, "-d", other], "counts your own family 'convnext' 1 times"),
                         (["-d", plain, "--own-weight", "3"], "none of these datasets holds blocks of your own"),
                         (["-d", parquet, "--own-weight", "0"], "--own-weight 0")):
        assert_user_error(run_cli(["fit", *args, "--out", tmp_path / "bad.json"], capsys), needle)
    assert not (tmp_path / "bad.json").exists()


def test_own_blocks_added_to_a_campaign_measured_without_them_get_a_note(tmp_path, capsys, fakes):
    """`--campaign NAME --with …` naming a campaign measured before without those blocks: they are timed in another
    host state than its earlier blocks, and calibrate says so; resuming a campaign started with them does not."""
    from pathlib import Path

    own = Path(__file__).resolve().parents[2] / "examples" / "own_blocks.py"
    base = ["calibrate", "--samples", "20", "--out", tmp_path / "cal", "--no-progress", "--campaign", "mine"]
    assert run_cli(base, capsys)[0] == 0
    code, stdout, err = run_cli([*base, "--with", f"{own}:convnext"], capsys)
    assert code == 0, err
    text = " ".join(stdout.split())
    assert "mine.parquet was measured before without your convnext blocks" in text and "20 earlier blocks" in text
    code, stdout, err = run_cli([*base, "--with", f"{own}:convnext"], capsys)
    assert code == 0 and "measured before without" not in " ".join(stdout.split())
    # a campaign calibrated --with before the weight was recorded had them too: no note either
    meta_file = tmp_path / "cal" / "mine.meta.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({k: v for k, v in meta.items() if k != "own_families"}))
    code, stdout, err = run_cli([*base, "--with", f"{own}:convnext"], capsys)
    assert code == 0 and "measured before without" not in " ".join(stdout.split())


def test_a_family_named_twice_samples_as_if_named_once(tmp_path, capsys, fakes):
    made, _ = fakes
    twice, once = tmp_path / "twice", tmp_path / "once"
    for out, fams in ((twice, "pool,linear,pool"), (once, "pool,linear")):
        code, _, err = run_cli(["calibrate", "--samples", "24", "--families", fams, "--out", out, "--no-progress",
                                "--campaign", "c"], capsys)
        assert code == 0, err
    assert json.loads((twice / "c.meta.json").read_text())["sampler"]["families"] == ["pool", "linear"]
    a, b = read_dataset(twice / "c.parquet"), read_dataset(once / "c.parquet")
    assert list(a["block_id"]) == list(b["block_id"]) and set(a["family"]) == {"pool", "linear"}
    assert [r.calls for r in made] == [24, 24]


def test_planes_draw_power_of_two_image_blocks_as_another_campaign(tmp_path, capsys, fakes):
    """--planes pow2 / both draws the image families' planes from 8-128 px (or both sets): another draw of blocks,
    so another campaign name, recorded in its meta.json; the default draw is the one every earlier campaign has."""
    from tvmlat.blocks import IMAGE_FAMILIES, PLANES

    made, _ = fakes
    code, out, err = run_cli(["calibrate", "--samples", "30", "--planes", "pow2", "--out", tmp_path, "--no-progress"],
                             capsys)
    assert code == 0, err
    parquet = next(tmp_path.glob("calib-*-pow2-n30-s0.parquet"), None)  # named after the draw
    assert parquet is not None and parquet.is_file()
    df = read_dataset(parquet)
    hws = {json.loads(s)["hw"] for s, f in zip(df["spec"], df["family"]) if f in IMAGE_FAMILIES}
    assert hws and hws <= set(PLANES["pow2"])
    meta = json.loads(parquet.with_suffix(".meta.json").read_text())
    assert meta["sampler"]["planes"] == "pow2"
    assert [s.block_id for s in sample_specs(30, seed=0, planes="default")] == \
        [s.block_id for s in sample_specs(30, seed=0)]  # the default draw is the one before --planes
    assert {s.block_id for s in sample_specs(30, seed=0, planes="pow2")} == set(df["block_id"])
    # resuming it under another draw would mix two samples in one campaign; its files are left as they were
    before = parquet.with_suffix(".meta.json").read_text()
    assert_user_error(run_cli(["calibrate", "--samples", "30", "--planes", "both", "--out", tmp_path, "--campaign",
                               parquet.stem, "--no-progress"], capsys), "was sampled with --planes pow2", "not both")
    assert parquet.with_suffix(".meta.json").read_text() == before
    assert_user_error(run_cli(["calibrate", "--planes", "square"], capsys), "--planes 'square'", "default, pow2, both")
