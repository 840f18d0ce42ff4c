"""`bitcl rl`'s own method defaults are the settings its committed search chose on a validation seed
(benchmarks/bench_rl.py tune -> benchmarks/results/rl_tuning.json) and its figure uses (issue 21)."""
from __future__ import annotations

import json
import os

import pytest

from bitcl.rl.cli import config_from_args, rl_parser
from bitcl.rl.config import METHOD_DEFAULTS, RLConfig, method_defaults
from bitcl.strategies import get_strategy

pytest.importorskip("minatar", reason="the MinAtar suite needs bitcl[rl]")

RESULTS = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "results")


@pytest.fixture(scope="module")
def tuning() -> dict:
    with open(os.path.join(RESULTS, "rl_tuning.json")) as f:
        return json.load(f)


def test_defaults_are_what_the_search_chose(tuning):
    assert METHOD_DEFAULTS["blip"]["fisher_prior"] == tuning["chosen_blip_prior"]
    assert METHOD_DEFAULTS["ewc"] == {"mode": "online", "c": tuning["chosen_ewc_c"]}


def test_rl_defaults_differ_from_the_supervised_ones_only_where_declared():
    """The declared defaults are real options of their methods, and differ from the general ones."""
    for method, values in METHOD_DEFAULTS.items():
        general = get_strategy(method).Options()
        for name, value in values.items():
            assert hasattr(general, name)
            assert getattr(general, name) != value, (method, name)
    assert method_defaults("finetune") == {}


def test_help_shows_and_the_parse_uses_the_rl_default():
    prior = METHOD_DEFAULTS["blip"]["fisher_prior"]
    help_text = rl_parser(get_strategy("blip")).format_help()
    entry = help_text[help_text.index("\n  --fisher-prior"):]
    entry = " ".join(entry[:entry.index("\n  --", 3)].split())  # the flag's own help, up to the next flag
    assert f"(default: {prior})" in entry, entry
    config = config_from_args(["--method", "blip", "--games", "breakout"])
    assert config.method_options == {}  # only what the user typed; the run fills the defaults


def test_a_run_resolves_the_rl_default_and_a_flag_overrides_it(tmp_path):
    from bitcl.rl.loop import RLRun
    run = RLRun(RLConfig(method="blip", games=("breakout",), steps=64, envs=1, rollout=64, quiet=True))
    assert run.config.method_options["fisher_prior"] == METHOD_DEFAULTS["blip"]["fisher_prior"]
    run = RLRun(RLConfig(method="blip", games=("breakout",), steps=64, envs=1, rollout=64, quiet=True,
                         method_options={"fisher_prior": 0.5}))
    assert run.config.method_options["fisher_prior"] == 0.5
    run = RLRun(RLConfig(method="ewc", games=("breakout",), steps=64, envs=1, rollout=64, quiet=True))
    assert run.config.method_options["mode"] == "online"


def test_the_figure_uses_the_defaults_on_seeds_the_search_never_saw(tuning):
    with open(os.path.join(RESULTS, "rl_sequence.json")) as f:
        sequence = json.load(f)
    assert not set(tuning["split"]["seeds"]) & set(sequence["seeds"])
    assert sequence["settings"]["blip --fisher-prior"] == METHOD_DEFAULTS["blip"]["fisher_prior"]
    assert sequence["settings"]["ewc --mode online --c"] == METHOD_DEFAULTS["ewc"]["c"]
    assert sequence["steps_per_game"] == tuning["split"]["steps"]  # chosen at the budget it is reported at
