import pytest

from tvmlat.errors import TargetError, TvmlatError
from tvmlat.targets import (EvaluatorConfig, TargetSpec, available_targets, load_target, search_paths,
                            target_from_dict)

GOOD = 'name = "mine"\nkind = "llvm"\ncores = 2\nmcpu = ""\nprofile = "default"\n'


def _write(tmp_path, text: str | bytes, name: str = "t.toml"):
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return str(p)


def test_load_llvm_by_name():
    t = load_target("llvm")
    assert isinstance(t, TargetSpec)
    assert t.name == "llvm"
    assert t.kind == "llvm"
    assert t.profile == "default"
    assert isinstance(t.cores, int) and t.cores >= 1
    assert t.mcpu and t.mcpu != "host"  # "host" is resolved to a CPU name
    assert t.evaluator.min_repeats >= 3
    assert t.source == "targets/llvm.toml"  # a built-in target: no machine's absolute path in what is shipped


def test_load_good_file_and_dict_roundtrip(tmp_path):
    path = _write(tmp_path, GOOD + "[evaluator]\nmin_repeats = 4\nmax_repeats = 9\n")
    t = load_target(path)
    assert (t.name, t.kind, t.cores, t.profile) == ("mine", "llvm", 2, "default")
    assert t.source == str(path)  # a file of one's own: recorded as given
    assert t.evaluator == EvaluatorConfig(min_repeats=4, max_repeats=9)
    assert TargetSpec.from_dict(t.to_dict()) == t


def test_name_defaults_to_file_stem_and_cores_auto(tmp_path):
    t = load_target(_write(tmp_path, 'kind = "llvm"\ncores = "auto"\n', name="edge.toml"))
    assert t.name == "edge"
    assert t.cores >= 1


def test_lookup_through_env_var(tmp_path, monkeypatch):
    _write(tmp_path, GOOD, name="board.toml")
    monkeypatch.setenv("TVMLAT_TARGETS", str(tmp_path))
    assert tmp_path in search_paths()
    assert "board" in available_targets()
    assert load_target("board").name == "mine"


def test_unknown_target_name():
    with pytest.raises(TargetError) as e:
        load_target("nosuch_target")
    msg = str(e.value)
    assert "nosuch_target" in msg and "unknown target" in msg
    assert "llvm" in msg  # lists what is known
    assert "\n" not in msg


def test_missing_toml_path(tmp_path):
    path = str(tmp_path / "missing.toml")
    with pytest.raises(TargetError, match="does not exist") as e:
        load_target(path)
    assert path in str(e.value)


def test_invalid_toml(tmp_path):
    with pytest.raises(TargetError, match="not valid TOML"):
        load_target(_write(tmp_path, 'kind = "llvm"\ncores = = 3\n'))


def test_non_utf8_target_file(tmp_path):
    with pytest.raises(TargetError):
        load_target(_write(tmp_path, b'kind = "llvm"\nname = "\xff\xfe"\n'))


# (file text, word the message must contain, whether the message names the file)
# The value checks of [evaluator] (EvaluatorConfig.check) do not name the file; see the report.
BAD_FILES = {
    "unknown-key": (GOOD + 'colour = "red"\n', "unknown keys", True),
    "kind-rocm": (GOOD.replace('"llvm"', '"rocm"'), "kind", True),
    "cuda-arch": (GOOD.replace('"llvm"', '"cuda"').replace('mcpu = ""', 'arch = "sm90"'), "arch", True),
    "kind-missing": ('name = "x"\n', "kind", True),
    "cores-0": (GOOD.replace("cores = 2", "cores = 0"), "cores", True),
    "cores-x": (GOOD.replace("cores = 2", 'cores = "x"'), "cores", True),
    "cores-neg": (GOOD.replace("cores = 2", "cores = -4"), "cores", True),
    "cores-float": (GOOD.replace("cores = 2", "cores = 1.5"), "cores", True),
    "cores-bool": (GOOD.replace("cores = 2", "cores = true"), "cores", True),
    "profile": (GOOD.replace('profile = "default"', 'profile = "fastest"'), "profile", True),
    "mcpu-int": (GOOD.replace('mcpu = ""', "mcpu = 3"), "mcpu", True),
    "evaluator-not-table": (GOOD + "evaluator = 3\n", "evaluator", True),
    "evaluator-unknown-key": (GOOD + "[evaluator]\nrepeat_forever = true\n", "repeat_forever", True),
    "evaluator-str": (GOOD + '[evaluator]\nmin_repeats = "5"\n', "evaluator", True),
    "min_repeats-1": (GOOD + "[evaluator]\nmin_repeats = 1\n", "min_repeats", False),
    "min-gt-max": (GOOD + "[evaluator]\nmin_repeats = 10\nmax_repeats = 5\n", "min_repeats", False),
    "rel_precision": (GOOD + "[evaluator]\nrel_precision = 0\n", "rel_precision", False),
    "min_repeat_ms": (GOOD + "[evaluator]\nmin_repeat_ms = -1\n", "min_repeat_ms", False),
    "max_seconds": (GOOD + "[evaluator]\nmax_seconds = 0\n", "max_seconds", False),
    "warmup": (GOOD + "[evaluator]\nwarmup_runs = -1\n", "warmup_runs", False),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_target_files(tmp_path, case):
    text, needle, names_file = BAD_FILES[case]
    path = _write(tmp_path, text)
    with pytest.raises(TargetError) as e:
        load_target(path)
    msg = str(e.value)
    assert needle in msg
    if names_file:
        assert path in msg
    assert "\n" not in msg
    assert isinstance(e.value, TvmlatError)


@pytest.mark.parametrize("setting", ["min_repeat_ms = nan", "min_repeats = 5.5"])
def test_evaluator_rejects_nan_and_fractional_counts(tmp_path, setting):
    with pytest.raises(TargetError):
        load_target(_write(tmp_path, GOOD + f"[evaluator]\n{setting}\n"))


def test_target_from_dict_direct():
    t = target_from_dict({"kind": "llvm", "cores": 3}, default_name="d")
    assert (t.name, t.cores, t.mcpu) == ("d", 3, "")
    with pytest.raises(TargetError, match="kind"):
        target_from_dict({"kind": "opencl"})


def test_tuning_section_and_profile_override(tmp_path):
    from tvmlat.targets import load_target

    p = tmp_path / "t.toml"
    p.write_text('name = "x"\nkind = "llvm"\ncores = 1\nprofile = "tuned"\n[tuning]\ntrials_per_task = 8\n')
    t = load_target(str(p))
    assert t.profile == "tuned" and t.tuning.trials_per_task == 8
    assert str(t.database_dir()).endswith("x/tuning")
    assert t.with_profile("default").profile == "default" and t.with_profile(None) is t
    with pytest.raises(TargetError, match="profile"):
        t.with_profile("fastest")


@pytest.mark.parametrize("section, needle", [
    ("[tuning]\ntrials_per_task = 0\n", "trials_per_task"),
    ("[tuning]\nbuilder_timeout_s = -1\n", "builder_timeout_s"),
    ("[tuning]\ntrials = 3\n", "unknown [tuning] keys"),
    ("tuning = 3\n", "[tuning] must be a table"),
])
def test_bad_tuning_sections(tmp_path, section, needle):
    from tvmlat.targets import load_target

    p = tmp_path / "t.toml"
    p.write_text('name = "x"\nkind = "llvm"\ncores = 1\n' + section)
    with pytest.raises(TargetError) as e:
        load_target(str(p))
    assert needle in str(e.value) and str(p) in str(e.value)
