"""Sweep specs: parsing, grid expansion, run names and the flags each run gets."""
import math

import pytest
from hypothesis import given, strategies as st

from bitcl.errors import ConfigError
from bitcl.sweep.spec import check_runs, expand, flag, format_value, load_spec
from tests.conftest import cli, run_cli


def write(tmp_path, text, name="spec.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_grid_spans_methods_seeds_and_options(tmp_path):
    """A method option spans the grid only for the methods that have it; names are readable."""
    spec = load_spec(write(tmp_path, 'benchmark = "split-mnist"\ntasks = 2\nmethods = ["finetune", "ewc"]\n'
                                     'seeds = [0, 1]\nc = [1, 100]\n'))
    names = sorted(r.name for r in expand(spec))
    assert names == sorted(["split-mnist/finetune/seed=0", "split-mnist/finetune/seed=1",
                     "split-mnist/ewc/c=1/seed=0", "split-mnist/ewc/c=1/seed=1",
                     "split-mnist/ewc/c=100/seed=0", "split-mnist/ewc/c=100/seed=1"])
    ewc = expand(spec)[-1]
    assert ewc.group == "split-mnist/ewc/c=100"
    assert ewc.settings == {"method": "ewc", "benchmark": "split-mnist", "tasks": 2, "seed": 1,
                            "method_options": {"c": 100}}
    argv = ewc.argv(tmp_path / ewc.name)
    assert argv[:8] == ["--benchmark", "split-mnist", "--tasks", "2", "--method", "ewc", "--seed", "1"]
    assert argv[8:10] == ["--c", "100"] and argv[-3:] == ["--out", str(tmp_path / ewc.name), "--quiet"]


def test_list_valued_settings_need_a_list_of_lists_to_span(tmp_path):
    """hidden = [400, 400] is one value; hidden = [[16], [16, 16]] is two."""
    one = load_spec(write(tmp_path, "hidden = [400, 400]\n"))
    assert [r.settings["hidden"] for r in expand(one)] == [[400, 400]]
    two = load_spec(write(tmp_path, "hidden = [[16], [16, 16]]\n", "two.toml"))
    assert [r.name for r in expand(two)] == ["split-mnist/blip/hidden=16/seed=0", "split-mnist/blip/hidden=16-16/seed=0"]


def test_relative_data_path_is_read_from_the_spec_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    spec = load_spec(write(tmp_path / "sub", 'data = "../d.npz"\n'))
    assert spec.grid["data"] == [str((tmp_path / "d.npz").resolve())]


def test_flags_of_each_kind():
    assert flag("augment", True) == ["--augment"] and flag("augment", False) == ["--no-augment"]
    assert flag("hidden", [400, 400]) == ["--hidden", "400,400"]
    assert flag("lr", 1e-10) == ["--lr", "1e-10"] and float(flag("lr", 0.1 + 0.2)[1]) == 0.1 + 0.2


@given(st.floats(allow_nan=False, allow_infinity=False), st.floats(allow_nan=False, allow_infinity=False))
def test_distinct_values_get_distinct_names(a, b):
    """Run folders are named from values: two distinct floats never share a folder."""
    if a != b and not (a == 0 and b == 0):
        assert format_value(a) != format_value(b)
    assert "/" not in format_value(a) and math.isfinite(float(format_value(a)))


@pytest.mark.parametrize("text, message", [
    ("methods = []\n", "empty list"),
    ("out = \"x\"\n", "set by the sweep"),
    ("wobble = 3\n", "neither a `bitcl run` setting nor an option"),
    ("methods = [\"nosuch\"]\n", "unknown method 'nosuch'"),
    ("seeds = [1, 1]\n", "same value twice"),
    ("retries = -1\n", "retries must be >= 0"),
    ("backend = \"mpi\"\n", "backend must be one of"),
    ("method = \"ewc\"\n[select]\noption = \"c\"\nvalues = [1, 10]\nsplit = \"test\"\n", "split must be"),
    ("method = \"ewc\"\n[select]\noption = \"c\"\nvalues = [1, 10]\nmetric = \"loss\"\n", "metric must be"),
    ("method = \"ewc\"\n[select]\noption = \"c\"\nvalues = [1]\n", "at least two"),
    ("method = \"ewc\"\nc = [1, 2]\n[select]\noption = \"c\"\nvalues = [1, 10]\n", "also a key of the grid"),
    ("[nosuch]\na = 1\n", "unknown table"),
    ("tasks = \n", "not valid TOML"),
])
def test_bad_specs_name_the_fault(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_spec(write(tmp_path, text))


def test_values_bitcl_run_refuses_are_refused_before_anything_runs(tmp_path):
    """Each run's flags go through `bitcl run`'s own parser first: the error names the run."""
    spec = load_spec(write(tmp_path, "epochs = [1, -1]\n"))
    with pytest.raises(ConfigError, match=r"run split-mnist/blip/epochs=-1/seed=0: --epochs must lie in \[0, 100000\], got -1"):
        check_runs(expand(spec), tmp_path)


def test_cli_bad_spec_is_one_line_exit_2(tmp_path):
    done = run_cli("sweep", write(tmp_path, "wobble = 3\n"), "--out", tmp_path / "out")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("bitcl sweep: error: ")
    assert not (tmp_path / "out" / "summary.json").exists()
    missing = cli("sweep", tmp_path / "nope.toml", "--out", tmp_path / "out")
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_run_seeds_bad_input_is_exit_2(tmp_path):
    """--seeds needs --out, refuses --seed beside it, and parses its list."""
    for args, message in ((["--seeds", "0,1"], "--seeds needs --out"),
                          (["--seeds", "0,x", "--out", tmp_path / "o"], "comma-separated integers"),
                          (["--seeds", "1,1", "--out", tmp_path / "o"], "distinct non-negative"),
                          (["--seeds", "0,1", "--seed", "3", "--out", tmp_path / "o"], "exclude each other")):
        done = cli("run", "--method", "finetune", *args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
