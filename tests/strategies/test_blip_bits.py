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
