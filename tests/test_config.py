"""RunConfig: one typed configuration from the command line to results.json, and back (rerun)."""
import json
import math

import pytest

from bitcl import presets
from bitcl.cli import config_from_args
from bitcl.config import RunConfig
from bitcl.errors import ConfigError
from bitcl.train.results import RunResult
from tests.conftest import cli


def test_resolved_config_records_every_method_option_and_engine_default():
    """Options left at their defaults appear with their values; unset engine settings are filled."""
    cfg = RunConfig(method="blip").resolved()
    assert cfg.method_options["fisher_prior"] == 1e-10 and cfg.method_options["rounding"] == "ceil"
    assert (cfg.epochs, cfg.batch_size, cfg.lr) == (10, 64, 3e-3)
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))).resolved() == cfg


def test_presets_fill_only_what_the_user_left_unset(monkeypatch):
    """A preset sets unset fields and options; explicit values and --no-preset win."""
    monkeypatch.setitem(presets.PRESETS, ("split-mnist", "blip", "task"),
                        {"lr": 1e-3, "epochs": 2, "method_options": {"fisher_prior": 1e-8}, "source": "test"})
    cfg = RunConfig(method="blip").resolved()
    assert (cfg.lr, cfg.epochs, cfg.method_options["fisher_prior"]) == (1e-3, 2, 1e-8)
    mine = RunConfig(method="blip", lr=5e-3, method_options={"fisher_prior": 1e-9}).resolved()
    assert (mine.lr, mine.epochs, mine.method_options["fisher_prior"]) == (5e-3, 2, 1e-9)
    off = RunConfig(method="blip", preset=False).resolved()
    assert (off.lr, off.epochs, off.method_options["fisher_prior"]) == (3e-3, 10, 1e-10)


@pytest.mark.parametrize("field, value, needle", [
    ("seed", 2**64, "--seed"), ("seed", -1, "--seed"), ("lr", math.inf, "--lr"), ("lr", "fast", "--lr"),
    ("epochs", 1.5, "--epochs"), ("bits", 64, "--bits"), ("tasks", 10**9, "--tasks"), ("hidden", [0], "--hidden"),
    ("validation", 0.9, "--validation"), ("out", "", "--out"), ("momentum", 1.0, "--momentum"),
    ("device", "tpu", "--device"), ("method_options", [1], "--method-options"),
])
def test_bad_settings_are_refused_naming_the_flag(field, value, needle):
    """Wrong types, non-finite numbers and values out of range raise ConfigError before anything runs."""
    with pytest.raises(ConfigError, match=needle):
        RunConfig(**{field: value}).resolved()


@pytest.mark.parametrize("options, needle", [({"fisher_prior": math.inf}, "--fisher-prior"),
                                             ({"fisher_prior": -1.0}, "--fisher-prior"),
                                             ({"fisher_prior": "small"}, "--fisher-prior"),
                                             ({"batch": 2.5}, "--batch")])
def test_bad_method_options_are_refused(options, needle):
    """Method options are typed too: inf, negative, strings and floats for integers are refused."""
    with pytest.raises(ConfigError, match=needle):
        RunConfig(method="blip", method_options=options).resolved()


def test_command_line_and_config_file_merge(tmp_path):
    """--config FILE supplies settings; flags typed after it override them; another method drops options."""
    recorded = RunConfig(method="blip", epochs=3, method_options={"fisher_prior": 1e-8}).resolved()
    result = RunResult(recorded, 2, accuracy_matrix=[[0.9, 0.5], [0.8, 0.9]], state_bytes=[9, 9])
    result.timing = {k: [0.1, 0.1] for k in result.timing}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(result.to_json()))
    cfg = config_from_args(["--config", str(path), "--seed", "3"])
    assert (cfg.epochs, cfg.seed, cfg.method_options["fisher_prior"]) == (3, 3, 1e-8)
    other = config_from_args(["--config", str(path), "--method", "ewc"])
    assert other.method == "ewc" and "fisher_prior" not in other.method_options


@pytest.mark.slow
def test_rerun_reproduces_a_run_from_its_results(tmp_path, small_npz):
    """`bitcl rerun DIR --out NEW` gives the same accuracy matrix and the same resolved config."""
    first = tmp_path / "first"
    done = cli("run", "--method", "si", "--data", small_npz, "--epochs", "1", "--hidden", "16", "--tasks", "2",
                   "--classes", "0,1,2,3", "--quiet", "--out", first)
    assert done.returncode == 0, done.stderr
    again = tmp_path / "again"
    done = cli("rerun", first, "--out", again, "--quiet")
    assert done.returncode == 0, done.stderr
    a, b = (json.loads((d / "results.json").read_text()) for d in (first, again))
    assert a["accuracy_matrix"] == b["accuracy_matrix"]
    strip = lambda c: {k: v for k, v in c.items() if k not in ("out", "quiet", "overwrite")}
    assert strip(a["config"]) == strip(b["config"]) and a["config"]["method_options"] == {"c": 20.0, "xi": 0.1}
    assert a["config"]["data_source"]["train_shape"] == [1600, 1, 28, 28] and a["config"]["data_source"]["evaluated_on"] == "test"
    refused = cli("rerun", first, "--out", first)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1


def test_help_shows_every_default_and_list_shows_options():
    """`bitcl run --help` prints engine and method defaults; `bitcl list` prints each method's options."""
    done = cli("run", "--method", "blip", "--help")
    assert done.returncode == 0
    assert "(default: preset, else the --arch's (bitcl list), else 3e-3)" in " ".join(done.stdout.split()) and "--fisher-prior" in done.stdout
    listed = cli("list")
    assert "--fisher-prior 1e-10" in listed.stdout and "resnet18" in listed.stdout


def test_presets_are_the_choices_of_their_committed_search():
    """Each preset equals what its search chose on validation data, in the result file its source names."""
    from pathlib import Path
    results = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
    preset = presets.PRESETS[("permuted-mnist", "blip", "task")]
    assert "benchmarks/results/search_permuted_blip.json" in preset["source"]
    chosen = json.loads((results / "search_permuted_blip.json").read_text())["chosen"]
    assert (preset["lr"], preset["batch_size"], preset["method_options"]["fisher_prior"]) == (
        chosen["lr"], chosen["batch_size"], chosen["fisher_prior"])
    assert "validation" in json.loads((results / "search_permuted_blip.json").read_text())["protocol"]
