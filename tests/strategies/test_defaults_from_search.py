"""Every penalty strength's default is the one chosen on validation data (issue 13, "honest defaults").

The search is benchmarks/search_regularizers.py; these tests read its committed result only.
"""
from __future__ import annotations

import dataclasses
import json
import os

import pytest

from bitcl.strategies import get_strategy, strategy_names

SEARCH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "results", "search_regularizers.json")
STRENGTH_FIELDS = ("c", "lam")


def strength_field(method: str):
    for f in dataclasses.fields(get_strategy(method).Options):
        if f.name in STRENGTH_FIELDS:
            return f
    return None


WITH_STRENGTH = [m for m in strategy_names() if strength_field(m) is not None]


@pytest.fixture(scope="module")
def search() -> dict:
    with open(SEARCH) as f:
        return json.load(f)


def test_registry_has_strengths():
    """The registry scan finds the importance regularisers (guards the parametrisation below against emptiness)."""
    assert {"ewc", "si", "mas", "anpyc"} <= set(WITH_STRENGTH)


@pytest.mark.parametrize("method", WITH_STRENGTH)
def test_default_is_validation_choice(method, search):
    """The method's c/lam default equals the search's validation choice (or its stated exclusion's value)."""
    f = strength_field(method)
    if method in search["excluded"]:
        entry = search["excluded"][method]
        assert entry["reason"], f"{method} is excluded from the search without a reason"
    else:
        assert method in search["chosen"], (f"{method} has a penalty strength but no entry in {SEARCH}: "
                                            "rerun benchmarks/search_regularizers.py")
        entry = search["chosen"][method]
    assert entry["option"] == f.name
    assert f.default == pytest.approx(entry["value"], rel=1e-9), (
        f"{method} --{f.name} default {f.default} is not the validation choice {entry['value']}")


SEARCHED = [m for m in WITH_STRENGTH if m != "dlcft"]  # dlcft: c = 1 is exact by construction (excluded)


@pytest.mark.parametrize("method", SEARCHED)
def test_help_cites_search(method, search):
    """The strength's help text names the search script and result of its provenance."""
    assert method not in search["excluded"], f"{method} is excluded from the search: update SEARCHED"
    text = strength_field(method).metadata["help"]
    assert "benchmarks/search_regularizers.py" in text and "search_regularizers.json" in text


def test_choice_is_best_validation_candidate(search):
    """Each choice is the candidate with the highest validation ACC among those the search tried."""
    assert "validation" in search["protocol"]
    for method, entry in search["methods"].items():
        best = max(c["validation"]["acc"] for c in entry["candidates"])
        chosen = [c for c in entry["candidates"] if c["value"] == entry["chosen"]]
        assert len(chosen) == 1 and chosen[0]["validation"]["acc"] == best, method
        assert search["chosen"][method]["value"] == entry["chosen"]


FIT_SEARCH = os.path.join(os.path.dirname(SEARCH), "search_fit_defaults.json")


def test_user_model_prior_is_validation_choice():
    """fit's BLIP prior on a user's own model (relative, 0.1) is what benchmarks/search_fit_defaults.py chose on
    validation digits; a changed default or a rerun search that chose otherwise fails here."""
    from bitcl.api import USER_MODEL_OPTIONS
    from bitcl.strategies.blip import RELATIVE_PRIOR

    with open(FIT_SEARCH) as f:
        choice = json.load(f)["choice"]
    assert USER_MODEL_OPTIONS["blip"]["prior"] == choice["prior"] == "relative"
    assert RELATIVE_PRIOR == pytest.approx(choice["relative_prior"], rel=1e-9)
