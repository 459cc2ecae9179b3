"""Reading and writing the project's JSON files (meta.json, predictors, bundle manifests)."""

import json

import pytest

from tvmlat.errors import DatasetError
from tvmlat.jsonfile import read_json, write_json


def test_write_json_replaces_the_file_whole_or_not_at_all(tmp_path):
    p = tmp_path / "p.json"
    write_json(p, {"a": 1}, indent=2)
    assert json.loads(p.read_text()) == {"a": 1}
    with pytest.raises(TypeError):  # fails while the new text is made: the old file stays as it was
        write_json(p, {"b": object()})
    assert json.loads(p.read_text()) == {"a": 1}
    write_json(p, {"c": [1.5]})
    assert read_json(p, DatasetError, "valid JSON", "fix it") == {"c": [1.5]}
    assert sorted(f.name for f in tmp_path.iterdir()) == ["p.json"]  # no temporary file left behind


@pytest.mark.parametrize("text", [b"{half", b"\xd9\xff\x00"])
def test_read_json_names_the_file_and_what_to_do(tmp_path, text):
    p = tmp_path / "x.json"
    p.write_bytes(text)
    with pytest.raises(DatasetError, match=r"x\.json is not valid JSON \(.*\); fix it"):
        read_json(p, DatasetError, "valid JSON", "fix it")
