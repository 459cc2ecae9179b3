"""`tvmlat predict` on a file of block specs (tvmlat.spec_file): the CLI face of the spec -> latency oracle."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import assert_user_error, run_cli, run_light
from tvmlat.predictors import load_predictor, predict_specs
from tvmlat.specs import BlockSpec

SHIPPED = Path(__file__).resolve().parents[2] / "datasets" / "llvm" / "calib-emeraldrapids-n100-s17"
PREDICTOR = SHIPPED.with_name(SHIPPED.name + ".predictor.json")
CONV = {"family": "conv_bn_relu", "cin": 32, "cout": 64, "hw": 28, "k": 3, "stride": 1, "groups": 1}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _write(tmp_path, lines, name="specs.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return p


def test_a_spec_file_predicts_what_the_python_oracle_does(tmp_path, capsys):
    # the shipped campaign's own blocks, as a search would write them; names kept, order kept
    specs = [BlockSpec.from_json(s) for s in pd.read_parquet(SHIPPED.with_suffix(".parquet"))["spec"][:40]]
    lines = ["# candidates", ""] + [{**s.as_dict(), **({"name": f"cand{i}"} if i % 2 else {})}
                                    for i, s in enumerate(specs)]
    code, out, err = run_cli(["predict", "-p", PREDICTOR, _write(tmp_path, lines), "-f", "json", "--interval", "0.9"],
                             capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert [r["name"] for r in rows] == [f"cand{i}" if i % 2 else s.short() for i, s in enumerate(specs)]
    np.testing.assert_allclose([r["latency_ms"] for r in rows], predict_specs(load_predictor(PREDICTOR), specs),
                               rtol=1e-9)
    assert all(r["low_ms"] < r["latency_ms"] < r["high_ms"] for r in rows)
    assert {r["as"] for r in rows} == {"block"}


def test_a_spec_file_is_predicted_without_torch(tmp_path):
    p = _write(tmp_path, [CONV, {"family": "pool", "c": 8, "hw": 14, "k": 3, "stride": 2, "kind": "avg"}])
    r = run_light("import contextlib, io\n"
                  "from tvmlat.cli import main\n"
                  "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
                  f"    main(['predict', '-p', {str(PREDICTOR)!r}, {str(p)!r}, '-f', 'csv'])\n"
                  "assert out.getvalue().count('\\n') == 3, out.getvalue()\n")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("line, needles", [
    ("{not json", ["line 2: not JSON"]),
    ("[1, 2]", ["line 2: a list, not a JSON object"]),
    ({"family": "resnet"}, ["line 2: family 'resnet'", "conv_bn_relu"]),
    ({"cin": 3}, ["line 2: no family"]),
    ({**CONV, "cinn": 3}, ["line 2: conv_bn_relu parameters: unknown cinn", "batch (optional)"]),
    ({k: v for k, v in CONV.items() if k != "hw"}, ["line 2: conv_bn_relu parameters: missing hw"]),
    ({**CONV, "cin": -32}, ["line 2: conv_bn_relu cin -32; give a whole number, 1 or more"]),
    ({**CONV, "k": 2.5}, ["line 2: conv_bn_relu k 2.5"]),
    ({**CONV, "groups": "all"}, ["line 2: conv_bn_relu groups 'all'", '"dw"']),
    ({"family": "pool", "c": 8, "hw": 14, "k": 3, "stride": 2, "kind": "min"}, ["line 2: pool kind 'min'"]),
    ({"family": "linear", "tokens": 1, "din": 8, "dout": 8, "bias": 1}, ["line 2: linear bias 1; give true or false"]),
    ({**CONV, "cin": 30, "groups": 4}, ["line 2: conv_bn_relu(", "is not a block the conv_bn_relu family can build",
                                        "divisible by groups", "change its parameters"]),
    ({"family": "attention", "tokens": 4, "dim": 64, "heads": 3}, ["line 2: attention(", "change its parameters"]),
])
def test_a_bad_spec_line_is_one_line_naming_it(tmp_path, capsys, line, needles):
    p = _write(tmp_path, [CONV, line, CONV])
    assert_user_error(run_cli(["predict", "-p", PREDICTOR, p], capsys), str(p), *needles)


def test_a_spec_file_that_is_missing_empty_or_asked_as_networks(tmp_path, capsys):
    assert_user_error(run_cli(["predict", "-p", PREDICTOR, tmp_path / "nope.jsonl"], capsys), "does not exist",
                      '"family": "conv_bn_relu"')
    assert_user_error(run_cli(["predict", "-p", PREDICTOR, _write(tmp_path, ["# nothing", ""])], capsys),
                      "holds no block spec")
    assert_user_error(run_cli(["predict", "-p", PREDICTOR, _write(tmp_path, [CONV]), "--as", "network"], capsys),
                      "--as network", "leave --as out")
