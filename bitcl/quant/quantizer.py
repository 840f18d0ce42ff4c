"""Fixed-range signed narrow-range N-bit quantisation: the arithmetic.

bitcl stores each quantised tensor as integer codes ``c`` with a fixed
per-tensor scale ``s`` (real value ``s * c``), as BLIP does (Shi et al.,
"Continual Learning via Bit-Level Information Preserving", CVPR 2021,
arXiv 2105.04444, Sec. 3.2: parameters quantised to N bits over a fixed range).
The brevitas quantiser with the same arithmetic is in ``brevitas_view``.
"""
from __future__ import annotations

import torch

MIN_BITS, MAX_BITS = 2, 24  # a float32 latent holds 24-bit integers exactly


def max_code(bits: int) -> int:
    """Largest signed narrow-range code, 2^(N-1) - 1."""
    return (1 << (bits - 1)) - 1


def scale_for(value_range: float, bits: int) -> float:
    """The float32 scale of a tensor whose codes span ``[-range, range]``.

    Computed as brevitas does (float32 range over float32 max code), so the
    brevitas quantiser and bitcl agree bit for bit.
    """
    return float(torch.tensor(value_range, dtype=torch.float32) / float(max_code(bits)))


def check_bits(bits: object, where: str) -> int:
    """Validate a bit width: an int in [2, 24]; raises ``ValueError`` naming ``where``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{where}: bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    return bits
