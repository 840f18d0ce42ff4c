"""The path-integral family (SI, SIU, SIB, SOS) as measure classes in one registry."""
from __future__ import annotations

import pytest
import torch

from bitcl.importance.path_integral import KINDS, MEASURES, Measure, PathIntegral
from bitcl.strategies import get_strategy
from bitcl.strategies.ewc import EWC_MODES, EwcMode, EwcOptions
from bitcl.settings import default_of


def one_step(kind: str, alpha: float = 1.0) -> torch.Tensor:
    """Ω of one step on one weight: w = 1, g = 2, g' = 0.5, update -0.1, ξ = 0.1."""
    w = torch.nn.Parameter(torch.tensor([1.0]))
    tracker = PathIntegral({"w": w}, kind, xi=0.1, alpha=alpha)
    tracker.start_task()
    w.grad = torch.tensor([2.0])
    tracker.before_step({"w": torch.tensor([0.5])})
    with torch.no_grad():
        w -= 0.1
    tracker.after_step()
    return tracker.importance()["w"]


@pytest.mark.parametrize("kind, expected", [
    ("si", 2.0 * 0.1 / (0.01 + 0.1)),           # ω = -g·Δθ
    ("siu", 0.5 * 0.1 / (0.01 + 0.1)),          # ω = -g'·Δθ
    ("sib", (2.0 - 0.5) * 0.1 / (0.01 + 0.1)),  # ω = -(g - g')·Δθ
    ("sos", 1.5),                               # sqrt of the bias-corrected mean of (g - g')²
])
def test_each_measure_by_hand(kind, expected):
    """Each measure's one-step importance equals its formula worked by hand."""
    assert float(one_step(kind)) == pytest.approx(expected, rel=1e-5)


def test_registry_names_the_methods_and_their_needs():
    """MEASURES holds one Measure class per method of the family; each method's kind is a registry name;
    only SI runs without g', and SOS with α = 0 needs no g' either."""
    assert KINDS == ("si", "siu", "sib", "sos") and all(issubclass(m, Measure) for m in MEASURES.values())
    for kind in KINDS:
        cls = get_strategy(kind)
        assert cls.kind == kind
        assert ("independent_gradient" in cls.needs) == MEASURES[kind].uses_independent_gradient
    w = {"w": torch.nn.Parameter(torch.zeros(1))}
    assert not PathIntegral(w, "sos", alpha=0.0).needs_independent_gradient
    assert PathIntegral(w, "sos", alpha=0.5).needs_independent_gradient
    with pytest.raises(ValueError, match="unknown path-integral kind"):
        PathIntegral(w, "sgd")


def test_ewc_modes_are_the_mode_choices():
    """--mode offers exactly the EWC_MODES registry, each an EwcMode; separate is the default."""
    field = EwcOptions.__dataclass_fields__["mode"]
    assert field.metadata["choices"] == tuple(EWC_MODES) == ("separate", "online")
    assert all(issubclass(m, EwcMode) and m.name == n for n, m in EWC_MODES.items())
    assert default_of(field) == "separate"
