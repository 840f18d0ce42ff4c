"""PPO pieces against hand-computed values, and GAE's invariants."""
import math

import torch
from hypothesis import given, strategies as st

from bitcl.rl.ppo import clipped_loss, gae, log_probs_and_entropy


def test_gae_matches_hand_computation():
    """GAE over 3 steps with an episode end after step 1 equals the values worked out by hand."""
    gamma, lam = 0.9, 0.5
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [2.0]])
    dones = torch.tensor([[False], [True], [False]])
    last = torch.tensor([4.0])
    adv, ret = gae(rewards, values, dones, last, gamma, lam)
    d2 = 3.0 + 0.9 * 4.0 - 2.0            # 4.6; step 2 bootstraps from the last value
    d1 = 2.0 - 1.0                        # 1.0; the episode ended: no bootstrap, no carry
    d0 = 1.0 + 0.9 * 1.0 - 0.5            # 1.4
    a2, a1 = d2, d1
    a0 = d0 + 0.9 * 0.5 * a1              # 1.85
    assert torch.allclose(adv.squeeze(1), torch.tensor([a0, a1, a2]))
    assert torch.allclose(ret, adv + values)


@given(st.lists(st.floats(-5, 5), min_size=1, max_size=12), st.floats(-3, 3))
def test_gae_with_unit_gamma_lambda_is_the_monte_carlo_return(rewards, last):
    """With γ = λ = 1 and no episode end, returns are the reward-to-go plus the bootstrap value."""
    r = torch.tensor(rewards, dtype=torch.float64).unsqueeze(1)
    v = torch.linspace(-1, 1, len(rewards), dtype=torch.float64).unsqueeze(1)
    d = torch.zeros_like(r, dtype=torch.bool)
    _, ret = gae(r, v, d, torch.tensor([last], dtype=torch.float64), 1.0, 1.0)
    expected = torch.flip(torch.cumsum(torch.flip(r.squeeze(1), [0]), 0), [0]) + last
    assert torch.allclose(ret.squeeze(1), expected)


def test_clipped_loss_matches_hand_computation():
    """The clipped surrogate takes the pessimistic term: ratio clipped above for A > 0, below for A < 0."""
    old = torch.log(torch.tensor([0.5, 0.5, 0.5]))
    new = torch.log(torch.tensor([0.75, 0.25, 0.55]))       # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([1.0, -2.0, 3.0])
    values, returns = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([2.0, 0.0, 0.0])
    entropy = torch.tensor([0.3, 0.6, 0.9])
    loss, parts = clipped_loss(new, old, adv, values, returns, entropy, 0.2, 0.5, 0.01)
    surrogate = [1.2 * 1.0, 0.8 * -2.0, 1.1 * 3.0]           # min(r A, clip(r) A) per sample
    policy = -sum(surrogate) / 3
    value = (1.0 + 0.0 + 4.0) / 3
    assert math.isclose(parts["policy_loss"], policy, rel_tol=1e-5)
    assert math.isclose(parts["value_loss"], value, rel_tol=1e-6)
    assert math.isclose(float(loss), policy + 0.5 * value - 0.01 * 0.6, rel_tol=1e-5)


def test_log_probs_and_entropy_of_a_uniform_policy():
    """A uniform policy over k actions has log-probability -log k and entropy log k."""
    logits = torch.zeros(2, 4)
    logp, entropy = log_probs_and_entropy(logits, torch.tensor([0, 3]))
    assert torch.allclose(logp, torch.full((2,), -math.log(4)))
    assert torch.allclose(entropy, torch.full((2,), math.log(4)))
