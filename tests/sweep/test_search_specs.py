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
