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
