"""BLIP's relative prior (issue 22): F_0 = relative_prior * the tensor's mean first-task Fisher.

The absolute prior F_0 freezes bits by the Fisher's scale, which depends on the architecture (a
shared convolution weight's Fisher sums over every output position); the relative prior freezes
the same bits whatever that scale. fit and make_strategy use it on a user's own model; the CLI
and bitcl's own models keep the absolute prior.
"""
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn
from torch.utils.data import TensorDataset

import bitcl
from bitcl.api import make_strategy
from bitcl.config import RunConfig
from bitcl.errors import ConfigError
from bitcl.models import build_model
from bitcl.quant import bit_states
from bitcl.strategies.blip import RELATIVE_PRIOR


def _strategy(**options):
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4))
    bitcl.quantize_(backbone)
    return make_strategy("blip", backbone, num_tasks=2, **options), backbone


def _frozen_after(strategy, backbone, fisher):
    """Frozen bit counts after one task whose Fisher is ``fisher`` (name -> tensor)."""
    strategy.estimate_fisher = lambda ctx: fisher
    strategy.end_task(None)
    return {name: state.frozen.clone() for name, state in bit_states(backbone)}


def _fisher(backbone, scale=1.0, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return {name: scale * torch.rand(state.codes.shape, generator=generator).pow(4)
            for name, state in bit_states(backbone)}


@settings(max_examples=25, deadline=None)
@given(exponent=st.integers(-40, 40))
def test_relative_prior_freezes_the_same_bits_at_any_fisher_scale(exponent):
    """Scaling every Fisher by 2^k (exact in float) leaves the frozen counts unchanged."""
    strategy, backbone = _strategy(prior="relative")
    base = _frozen_after(strategy, backbone, _fisher(backbone))
    strategy, backbone = _strategy(prior="relative")
    scaled = _frozen_after(strategy, backbone, _fisher(backbone, 2.0 ** exponent))
    assert base.keys() == scaled.keys()
    for name in base:
        assert torch.equal(base[name], scaled[name]), name
    assert any(int(k.max()) > 0 for k in base.values())  # the rule froze something to compare


def test_absolute_prior_depends_on_the_fisher_scale():
    """The contrast the relative prior removes: 2^20 x the Fisher freezes 10 more bits."""
    strategy, backbone = _strategy(prior="absolute", fisher_prior=1e-10)
    base = _frozen_after(strategy, backbone, _fisher(backbone))
    strategy, backbone = _strategy(prior="absolute", fisher_prior=1e-10)
    scaled = _frozen_after(strategy, backbone, _fisher(backbone, 2.0 ** 20))
    assert any(not torch.equal(base[n], scaled[n]) for n in base)


def test_relative_prior_is_the_fraction_of_the_mean_fisher():
    """After the first task the running Fisher is (F_0 + F_1) / 2 with F_0 = r * mean(F_1)."""
    strategy, backbone = _strategy(prior="relative", relative_prior=0.25)
    fisher = _fisher(backbone)
    _frozen_after(strategy, backbone, fisher)
    for name, f in fisher.items():
        expected = (0.25 * f.double().mean() + f.double()) / 2
        assert torch.allclose(strategy.state[f"fisher/{name}"].double(), expected, rtol=1e-6), name


def test_a_tensor_without_fisher_keeps_the_absolute_prior():
    """All-zero Fisher (no sample reached the tensor): F_0 stays fisher_prior, nothing is frozen,
    and a later task's Fisher is compared with a positive prior (no division by zero)."""
    strategy, backbone = _strategy(prior="relative", fisher_prior=1e-10)
    zeros = {name: torch.zeros(state.codes.shape) for name, state in bit_states(backbone)}
    frozen = _frozen_after(strategy, backbone, zeros)
    assert all(int(k.max()) == 0 for k in frozen.values())
    assert all(float(strategy.state[f"fisher/{n}"].min()) == pytest.approx(5e-11) for n in zeros)


def test_relative_prior_with_rounding_once_is_refused():
    with pytest.raises(ConfigError, match="rounding 'once' needs an absolute prior"):
        _strategy(prior="relative", rounding="once")


@pytest.mark.parametrize("bad", [{"prior": "median"}, {"relative_prior": 0.0}, {"relative_prior": -1.0}])
def test_bad_prior_options_are_refused(bad):
    with pytest.raises(ConfigError):
        _strategy(**bad)


def _tiny_tasks():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 4, 4, generator=generator)
    y = (x.mean((1, 2, 3)) > 0.5).long()
    return [(TensorDataset(x[:48], y[:48]), TensorDataset(x[48:], y[48:]))] * 2


def _fit_options(options, model=None):
    torch.manual_seed(0)
    model = model or nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU())
    bitcl.quantize_(model)
    heads = [nn.Linear(8, 2) for _ in range(2)]
    result = bitcl.fit(model, _tiny_tasks(), "blip", heads=heads, options=options, lr_schedule="none")
    return result.to_json()["config"]["method_options"]


def test_fit_uses_the_relative_prior_on_a_users_model():
    options = _fit_options(None)
    assert (options["prior"], options["relative_prior"]) == ("relative", RELATIVE_PRIOR)


@pytest.mark.parametrize("mine, prior", [({"fisher_prior": 1e-8}, "absolute"), ({"prior": "absolute"}, "absolute"),
                                         ({"relative_prior": 0.5}, "relative")])
def test_fit_keeps_a_prior_the_user_chose(mine, prior):
    """Naming fisher_prior means an absolute prior, as it did before the relative default."""
    options = _fit_options(mine)
    assert options["prior"] == prior
    for key, value in mine.items():
        assert options[key] == value


def test_bitcls_own_models_and_the_cli_keep_the_absolute_prior():
    """fit on a ContinualModel reproduces `bitcl run`: the CLI's defaults, absolute prior 1e-10."""
    assert RunConfig(method="blip").resolved().method_options["prior"] == "absolute"
    model = build_model("mlp", (1, 4, 4), [2, 2], "task", hidden=(8,))
    strategy = make_strategy("blip", model, num_tasks=2, scenario="task")
    assert strategy.options.prior == "absolute" and strategy.options.fisher_prior == 1e-10
