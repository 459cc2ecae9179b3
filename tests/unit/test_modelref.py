import pytest
import torch

from helpers import MODELS
from tvmlat.errors import ModelRefError
from tvmlat.modelref import load_model_ref


@pytest.fixture
def models(tmp_path):
    p = tmp_path / "models.py"
    p.write_text(MODELS)
    return p


def test_mapping_entries(models):
    entries = load_model_ref(f"{models}:good")
    assert list(entries) == ["a", "b"]
    module, inputs = entries["b"]
    assert isinstance(module, torch.nn.Conv2d) and not module.training
    assert isinstance(inputs, tuple) and len(inputs) == 1  # a bare tensor becomes a 1-tuple


def test_single_entry_named_after_callable(models):
    entries = load_model_ref(f"{models}:single")
    assert list(entries) == ["single"]
    assert load_model_ref(f"{models}:as_list")["as_list"][1][0].shape == (3,)


@pytest.mark.parametrize("ref,needles", [
    ("models_without_colon.py", ["must look like"]),
    ("{d}/missing.py:good", ["does not exist"]),
    ("{m}:nosuch", ["no callable 'nosuch'", "good", "single"]),
    ("{m}:NOT_CALLABLE", ["not callable"]),
    ("{m}:returns_int", ["(module, example_inputs)", "int"]),
    ("{m}:not_a_tensor", ["example_inputs"]),
    ("{m}:not_a_module", ["torch.nn.Module"]),
    ("{m}:no_inputs", ["example_inputs"]),
    ("{m}:empty", ["empty"]),
    ("{m}:raises", ["RuntimeError", "inside the callable"]),
    ("{m}:bad_entry", ["'broken'"]),
])
def test_bad_refs(models, tmp_path, ref, needles):
    ref = ref.format(m=models, d=tmp_path)
    with pytest.raises(ModelRefError) as e:
        load_model_ref(ref)
    msg = str(e.value)
    for n in needles:
        assert n in msg
    assert "\n" not in msg


def test_not_a_python_file(tmp_path):
    p = tmp_path / "model.txt"
    p.write_text("x = 1")
    with pytest.raises(ModelRefError, match="not a .py file"):
        load_model_ref(f"{p}:x")


@pytest.mark.parametrize("body,needle", [
    ("raise ImportError('no module named fancy_dep')", "fancy_dep"),
    ("def f(:\n    pass", "SyntaxError"),
    ("import tvmlat_no_such_module_xyz", "tvmlat_no_such_module_xyz"),
])
def test_import_failure(tmp_path, body, needle):
    p = tmp_path / "broken.py"
    p.write_text(body + "\n")
    with pytest.raises(ModelRefError) as e:
        load_model_ref(f"{p}:f")
    assert "importing" in str(e.value) and needle in str(e.value)


def test_a_recorded_reference_is_found_where_its_file_is_now(tmp_path, monkeypatch):
    """recorded_ref (a dataset's meta.json, a predictor's stored network timings): a file found from here stays
    as given; a relative one is looked for under the folder it was recorded from; one recorded on another
    machine or before a move is found by its trailing path; one found nowhere is left for loading to report."""
    from tvmlat.modelref import recorded_ref

    (tmp_path / "ship" / "bench" / "out").mkdir(parents=True)
    (tmp_path / "ship" / "bench" / "nets.py").write_text(MODELS)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    out, nets = tmp_path / "ship" / "bench" / "out", tmp_path / "ship" / "bench" / "nets.py"
    assert recorded_ref(f"{nets}:good", out) == f"{nets}:good"  # where it was recorded
    assert recorded_ref("torchvision:resnet18", out) == "torchvision:resnet18"
    assert recorded_ref("nets.py:good", out.parent) == f"{nets}:good"  # relative to the recording folder
    assert recorded_ref("nets.py:good", tmp_path / "cwd", out.parent) == f"{nets}:good"  # the second folder
    # an absolute path of another machine: the longest trailing path under the folder or the four above it
    assert recorded_ref("/elsewhere/checkout/bench/nets.py:good", out) == f"{nets}:good"
    assert recorded_ref("/elsewhere/checkout/bench/nets.py:good") == "/elsewhere/checkout/bench/nets.py:good"
    assert recorded_ref("/elsewhere/other.py:good", out) == "/elsewhere/other.py:good"
    (tmp_path / "cwd" / "nets.py").write_text(MODELS)  # the current folder is tried last
    assert recorded_ref("/elsewhere/checkout/bench/nets.py:good", out) == f"{nets}:good"
    assert recorded_ref("/elsewhere/nets.py:good") == f"{tmp_path / 'cwd' / 'nets.py'}:good"
    assert list(load_model_ref(recorded_ref("/elsewhere/checkout/bench/nets.py:good", out))) == ["a", "b"]
