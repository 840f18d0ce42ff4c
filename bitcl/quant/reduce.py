"""Keeping only the top B bits of N-bit codes (deployment at reduced precision).

With u = c + 2^(N-1) and u' = u >> (N - B) its top B bits, the weight is
reconstructed at the middle of the window those bits leave open (as BLIP's
freezing does): value = s 2^(N-B) (u' + 1/2 - 2^(B-1)). In integers: the odd
code c' = 2 u' - 2^B + 1 in [-(2^B - 1), 2^B - 1] with scale s' = s 2^(N-B-1).
B = N keeps the codes exactly (c' = c, s' = s).
"""
from __future__ import annotations

import torch


def top_bits(codes: torch.Tensor, bits: int, keep: int) -> torch.Tensor:
    """The top ``keep`` bits u' of the offset codes."""
    if not 1 <= keep <= bits:
        raise ValueError(f"can keep 1..{bits} bits, got {keep}")
    return (codes + (1 << (bits - 1))) >> (bits - keep)


def codes_from_top_bits(top: torch.Tensor, bits: int, keep: int) -> tuple[torch.Tensor, float]:
    """Integer codes and the scale multiplier that reconstruct a weight from its top bits."""
    if keep == bits:
        return top - (1 << (bits - 1)), 1.0
    return 2 * top - (1 << keep) + 1, float(2 ** (bits - keep - 1))


def reduced_value(codes: torch.Tensor, scale: float, bits: int, keep: int) -> torch.Tensor:
    """The float weights of ``codes`` kept to their top ``keep`` bits."""
    ints, multiplier = codes_from_top_bits(top_bits(codes, bits, keep), bits, keep)
    return ints.to(torch.float64).mul(scale * multiplier).to(torch.float32)


def frozen_value(codes: torch.Tensor, frozen: torch.Tensor, scale: float, bits: int) -> torch.Tensor:
    """Weights rebuilt from their frozen bits alone (each at the middle of its frozen window)."""
    k = frozen.to(torch.int64)
    u = (codes + (1 << (bits - 1))).to(torch.int64)
    free = bits - k
    window = torch.ones_like(free) << free
    base = u & ~(window - 1)
    middle = torch.where(free > 0, base + (window >> 1), u) - (1 << (bits - 1))
    return middle.to(torch.float64).mul(scale).to(torch.float32)
