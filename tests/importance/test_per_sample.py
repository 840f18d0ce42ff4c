"""Vectorised per-sample gradient powers equal a naive per-sample loop."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bitcl.importance import batch_fisher_sums, layers_of, per_sample_power_sums
from bitcl.quant import BitConv2d, BitLinear


def tiny_net(bias: bool, quant: bool):
    torch.manual_seed(0)
    conv = BitConv2d(1, 3, 3, padding=1, bias=bias, bits=16) if quant else nn.Conv2d(1, 3, 3, padding=1, bias=bias)
    lin = BitLinear(3 * 16, 4, bias=bias, bits=16) if quant else nn.Linear(3 * 16, 4, bias=bias)
    return nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), lin)


def naive(model, x, targets, power):
    params = dict(model.named_parameters())
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for n in range(len(x)):
        loss = F.cross_entropy(model(x[n:n + 1]), targets[n:n + 1])
        grads = torch.autograd.grad(loss, list(params.values()))
        for k, g in zip(params, grads):
            total[k] += g.abs().pow(power)
    return total


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("power", [1, 2])
@pytest.mark.parametrize("quant", [True, False])
def test_linear_and_conv_match_naive_loop(bias, power, quant):
    """sum_n |grad_n|^p from hooks equals the per-sample loop to 1e-5 relative."""
    model = tiny_net(bias, quant)
    x, y = torch.randn(9, 1, 8, 8), torch.randint(0, 4, (9,))
    layers = layers_of(model, [n for n, _ in model.named_parameters()])
    fast = per_sample_power_sums(model, layers, lambda: F.cross_entropy(model(x), y, reduction="sum"), power)
    slow = naive(model, x, y, power)
    assert set(fast) == set(slow)
    for k in slow:
        torch.testing.assert_close(fast[k], slow[k], rtol=1e-5, atol=1e-7)


def test_exact_fisher_is_probability_weighted_expectation():
    """The exact Fisher equals sum_c p_c (grad log p_c)^2 computed one sample and class at a time."""
    model = tiny_net(True, False)
    x = torch.randn(5, 1, 8, 8)
    layers = layers_of(model, [n for n, _ in model.named_parameters()])
    fast = batch_fisher_sums(model, layers, model, x, None, "exact")
    params = dict(model.named_parameters())
    slow = {k: torch.zeros_like(v) for k, v in params.items()}
    for n in range(len(x)):
        logp = torch.log_softmax(model(x[n:n + 1]), 1)[0]
        for c in range(4):
            grads = torch.autograd.grad(logp[c], list(params.values()), retain_graph=True)
            for k, g in zip(params, grads):
                slow[k] += logp[c].exp().detach() * g.pow(2)
    for k in slow:
        torch.testing.assert_close(fast[k], slow[k], rtol=1e-5, atol=1e-8)


def test_sampled_fisher_is_reproducible_with_given_uniforms():
    """Sampled labels come from the given uniforms: same numbers, same Fisher."""
    model = tiny_net(True, False)
    x = torch.randn(16, 1, 8, 8)
    layers = layers_of(model, [n for n, _ in model.named_parameters()])
    u = torch.rand(16, dtype=torch.float64)
    a = batch_fisher_sums(model, layers, model, x, None, "sampled", u)
    b = batch_fisher_sums(model, layers, model, x, None, "sampled", u.clone())
    assert all(torch.equal(a[k], b[k]) for k in a)
