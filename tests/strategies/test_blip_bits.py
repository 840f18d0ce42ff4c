"""BLIP's information-gain rule: bits = ceil(0.5 log2(F_new / F_old)), at least 0."""
import torch

from bitcl.strategies.blip import bits_to_freeze


def test_bits_follow_half_log2_ratio():
    """Ratios 1, 2, 4, 16, 1e6 give 0, 1, 1, 2, 10 bits; shrinking Fisher gives 0."""
    old = torch.ones(6)
    new = torch.tensor([1.0, 2.0, 4.0, 16.0, 1e6, 0.5])
    assert bits_to_freeze(old, new).tolist() == [0, 1, 1, 2, 10, 0]


def test_bits_never_negative_or_nan():
    """Zero or infinite ratios give finite, non-negative counts."""
    out = bits_to_freeze(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, float("inf")]))
    assert (out >= 0).all() and out.dtype == torch.int32


def test_rounding_once_does_not_add_up_round_ups():
    """A Fisher growing 10% per task gains 0.07 bit a task: ceil freezes one bit every task,
    'once' freezes ceil(0.5 log2(F / F_0)) in total."""
    from bitcl.strategies.blip import extra_bits

    prior, fisher = 1.0, torch.tensor([1.0])
    frozen = {"ceil": torch.zeros(1, dtype=torch.uint8), "once": torch.zeros(1, dtype=torch.uint8)}
    for _ in range(6):
        new = fisher * 1.1
        for rounding, k in frozen.items():
            frozen[rounding] = k + extra_bits(fisher, new, k, prior, rounding).to(torch.uint8)
        fisher = new
    assert int(frozen["ceil"]) == 6
    assert int(frozen["once"]) == 1  # 0.5 log2(1.1^6) = 0.41 bit, rounded up once


def test_rounding_once_never_unfreezes():
    """When the running mean falls, 'once' adds nothing (frozen counts never decrease)."""
    from bitcl.strategies.blip import extra_bits

    out = extra_bits(torch.tensor([64.0]), torch.tensor([4.0]), torch.tensor([3], dtype=torch.uint8), 1.0, "once")
    assert out.tolist() == [0]
