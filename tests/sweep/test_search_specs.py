"""The committed search specs (benchmarks/sweeps/) parse, and the regulariser search covers every
registered method with a penalty strength, so a new method cannot be left out of the search."""
import dataclasses
from pathlib import Path

import pytest

from bitcl.strategies import get_strategy, strategy_names
from bitcl.sweep import expand, load_spec

SWEEPS = Path(__file__).resolve().parents[2] / "benchmarks" / "sweeps"
EXCLUDED = {"dlcft"}  # c = 1 is exact by construction (benchmarks/search_regularizers.py records why)


def strength(method):
    return next((f for f in dataclasses.fields(get_strategy(method).Options) if f.name in ("c", "lam")), None)


@pytest.mark.parametrize("name", ["search_regularizers", "search_permuted_blip"])
def test_search_specs_parse_and_read_the_committed_data(name):
    spec = load_spec(SWEEPS / f"{name}.toml")
    assert spec.select is not None and spec.select.as_dict()["split"] == "validation"
    assert spec.grid["data"] == [str((SWEEPS.parent.parent / "data" / "mnist15k.npz").resolve())]
    assert len(spec.grid["seed"]) >= 3, "a ranked table quotes at least 3 seeds"
    assert expand(spec)


def test_regulariser_search_covers_the_registry():
    spec = load_spec(SWEEPS / "search_regularizers.toml")
    with_strength = {m for m in strategy_names() if strength(m) is not None} - EXCLUDED
    assert with_strength <= set(spec.grid["method"]) and "finetune" in spec.grid["method"]
    for method in with_strength:
        f = strength(method)
        assert spec.select.option_for(method) == f.name
        assert f.default in spec.select.values_for(method), f"{method}: the grid must contain the current default"


def test_backbone_search_runs_the_issue_protocol_and_holds_the_defaults():
    """Issue 22: the search of AlexNet's and ResNet-18's training defaults runs the issue's protocol on
    validation data, and each backbone's registered defaults are among its candidates."""
    from bitcl.models import training_defaults
    spec = load_spec(SWEEPS / "backbones_defaults.toml")
    sel = spec.select
    assert sel.as_dict()["split"] == "validation" and sel.metric == "min_diagonal"
    assert spec.grid["data"] == [str((SWEEPS.parent.parent / "data" / "mnist15k.npz").resolve())]
    assert {k: spec.grid[k] for k in ("tasks", "epochs", "pad_to", "method", "preset")} == {
        "tasks": [2], "epochs": [2], "pad_to": [32], "method": ["finetune"], "preset": [False]}
    assert sorted(spec.grid["arch"]) == ["alexnet", "resnet18"]
    assert sorted(spec.grid["scenario"]) == ["class", "task"]
    assert tuple(sel.option) == ("bn", "optimizer", "lr", "momentum")
    assert sel.values[0] == ("first-task", "adam", 3e-3, 0.0), "the previous defaults come first (they win a tie)"
    for arch in spec.grid["arch"]:
        defaults = training_defaults(arch)
        if defaults:
            assert ("auto", *defaults.values()) in sel.values, f"{arch}: its defaults must come from the search"
