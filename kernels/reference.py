"""Reference implementations of the bit kernels, in plain torch.

They define what the fast path (``bitops.c``) must compute, bit for bit, and
run anywhere torch runs (CPU or CUDA). Conventions follow DESIGN.md "Bits,
planes and freezing": signed narrow-range codes ``c``, offset-binary
``u = c + 2^(N-1)``, planes most significant first, ``k`` frozen top bits.
"""
from __future__ import annotations

import torch


def code_window(codes: torch.Tensor, frozen: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lowest and highest signed code whose top ``frozen`` bits equal those of ``codes``."""
    half = 1 << (bits - 1)
    shift = bits - frozen.to(torch.int32)
    window = torch.ones_like(shift) << shift
    u = codes + half
    u_lo = u & ~(window - 1)
    u_hi = u_lo + window - 1
    return u_lo.clamp_min(1) - half, u_hi - half


def first_nonfinite(latent: torch.Tensor) -> int:
    """Index (flat) of the first NaN/inf in ``latent``, or -1."""
    bad = ~torch.isfinite(latent.reshape(-1))
    if not bool(bad.any()):
        return -1
    return int(bad.nonzero()[0, 0])


def project_(latent: torch.Tensor, codes: torch.Tensor, frozen: torch.Tensor, bits: int,
             scale: float, inv_scale: float) -> None:
    """Clamp ``latent`` into its frozen-bit window and refresh ``codes`` (in place)."""
    c_lo, c_hi = code_window(codes, frozen, bits)
    scale_t = torch.tensor(scale, dtype=torch.float32, device=latent.device)
    lo = c_lo.to(torch.float32) * scale_t
    hi = c_hi.to(torch.float32) * scale_t
    clamped = torch.minimum(torch.maximum(latent, lo), hi)
    inv_t = torch.tensor(inv_scale, dtype=torch.float32, device=latent.device)
    new_codes = torch.round(clamped * inv_t).to(torch.int32)
    new_codes = torch.minimum(torch.maximum(new_codes, c_lo), c_hi)
    latent.copy_(clamped)
    codes.copy_(new_codes)


_BYTE_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.int32)


def pack_bitplanes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes (any shape) to a uint8 tensor of shape ``(bits, ceil(n / 8))``."""
    flat = codes.reshape(-1).to(torch.int32) + (1 << (bits - 1))
    n = flat.numel()
    nbytes = (n + 7) // 8
    shifts = torch.arange(bits - 1, -1, -1, dtype=torch.int32, device=flat.device)
    planes = (flat.unsqueeze(0) >> shifts.unsqueeze(1)) & 1
    padded = torch.zeros(bits, nbytes * 8, dtype=torch.int32, device=flat.device)
    padded[:, :n] = planes
    weights = _BYTE_WEIGHTS.to(flat.device)
    return (padded.view(bits, nbytes, 8) * weights).sum(-1).to(torch.uint8)


def unpack_bitplanes(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_bitplanes`: int32 codes of length ``n``."""
    weights = _BYTE_WEIGHTS.to(packed.device)
    planes = (packed.to(torch.int32).unsqueeze(-1) & weights) != 0  # (bits, nbytes, 8)
    planes = planes.reshape(bits, -1)[:, :n].to(torch.int32)
    shifts = torch.arange(bits - 1, -1, -1, dtype=torch.int32, device=packed.device)
    u = (planes << shifts.unsqueeze(1)).sum(0, dtype=torch.int32)
    return u - (1 << (bits - 1))
