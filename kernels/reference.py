"""Reference implementations of the bit kernels, in plain torch.

They define what the fast path (``bitops.c``) computes, bit for bit, and run
anywhere torch runs (CPU or CUDA). Conventions follow docs/methods.md "Bits, planes
and freezing" (arithmetic in :mod:`bitcl.quant.codes`): signed narrow-range
codes ``c``, offset-binary ``u = c + 2^(N-1)``, planes most significant first,
``k`` frozen top bits. Each public function validates its arguments first
(:mod:`bitcl.kernels.checks`) and raises a :mod:`bitcl.errors` exception.

The projection is written for speed as well as clarity: it works on chunks
that stay in the CPU cache, in preallocated scratch buffers, with the window
arithmetic in float32 once the bit operations are done (integers below 2^24
are exact there), so that it stays within a few times the C kernel.
"""
from __future__ import annotations

import torch

from bitcl.quant.codes import half, max_code

from . import checks

# Elements per chunk on CPU (measured best of 2^14..2^20 on a 784x1200 weight: the six
# scratch buffers stay in cache, and the per-op overhead is paid a few times only).
CHUNK = 1 << 18


def first_nonfinite(latent: torch.Tensor) -> int:
    """Index (flat) of the first NaN/inf in a float32 ``latent``, or -1."""
    checks.check_tensor(latent, "latent", torch.float32, "first_nonfinite")
    return checks.first_nonfinite_index(latent)


def project_(latent: torch.Tensor, codes: torch.Tensor, frozen: torch.Tensor, bits: int,
             scale: float, inv_scale: float | None = None, *, where: str = "project_") -> None:
    """Clamp ``latent`` into its frozen-bit window and refresh ``codes`` (in place).

    Checks everything first (dtypes, shapes, devices, bits, scales, finite latents,
    codes in range, frozen <= bits); on any problem nothing is written.
    """
    bits, scale, inv_scale = checks.check_project_args(latent, codes, frozen, bits, scale, inv_scale, where)
    project_checked(latent, codes, frozen, bits, scale, inv_scale, where)


def project_checked(latent: torch.Tensor, codes: torch.Tensor, frozen: torch.Tensor, bits: int, scale: float,
                    inv_scale: float, where: str) -> None:
    """:func:`project_` after :func:`checks.check_project_args`: checks the values, then projects."""
    checks.check_project_values(latent, codes, frozen, bits, where)
    with torch.no_grad():
        if latent.is_contiguous() and codes.is_contiguous():
            _project(latent.view(-1), codes.view(-1), frozen.reshape(-1), bits, scale, inv_scale)
        else:
            flat_latent, flat_codes = latent.contiguous().view(-1), codes.contiguous().view(-1)
            _project(flat_latent, flat_codes, frozen.reshape(-1), bits, scale, inv_scale)
            latent.copy_(flat_latent.view(latent.shape))
            codes.copy_(flat_codes.view(codes.shape))


def _project(latent: torch.Tensor, codes: torch.Tensor, frozen: torch.Tensor, bits: int, scale: float,
             inv_scale: float) -> None:
    """The projection on flat, checked, contiguous tensors (see ``bitops.c: project_body``)."""
    n = latent.numel()
    if n == 0:
        return
    device = latent.device
    chunk = n if device.type != "cpu" else min(CHUNK, n)
    # one element, not 0-dim: so that `full >> k` computes in int32, not in k's uint8
    full = torch.tensor([(1 << bits) - 1], dtype=torch.int32, device=device)
    # float32 scalars, so each product rounds once, as in C
    scale_t = torch.tensor(scale, dtype=torch.float32, device=device)
    inv_t = torch.tensor(inv_scale, dtype=torch.float32, device=device)
    h, m = half(bits), max_code(bits)
    low_i, u_i = (torch.empty(chunk, dtype=torch.int32, device=device) for _ in range(2))
    c_lo, c_hi, lo, hi = (torch.empty(chunk, dtype=torch.float32, device=device) for _ in range(4))
    for start in range(0, n, chunk):
        end = min(start + chunk, n)
        size = end - start
        x, c, k = latent[start:end], codes[start:end], frozen[start:end]
        low, u, clo, chi, flo, fhi = (b[:size] for b in (low_i, u_i, c_lo, c_hi, lo, hi))
        torch.bitwise_right_shift(full, k, out=low)        # window - 1 = (2^N - 1) >> k
        torch.add(c, h, out=u).bitwise_or_(low)             # u_hi = u | (window - 1)
        chi.copy_(u).sub_(h)                                 # c_hi = u_hi - 2^(N-1)
        clo.copy_(low)
        torch.sub(chi, clo, out=clo).clamp_min_(-m)          # c_lo = c_hi - (window - 1), u >= 1
        torch.mul(clo, scale_t, out=flo)
        torch.mul(chi, scale_t, out=fhi)
        x.clamp_(flo, fhi)
        torch.mul(x, inv_t, out=flo).round_()                # half to even, as rintf
        torch.clamp(flo, clo, chi, out=flo)
        c.copy_(flo)


_BYTE_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.int32)


def pack_bitplanes(codes: torch.Tensor, bits: int, *, where: str = "pack_bitplanes") -> torch.Tensor:
    """int32 codes (any shape) in ``[-2^(N-1), 2^(N-1) - 1]`` to uint8 ``(bits, ceil(n / 8))``."""
    bits = checks.check_planes(bits, where)
    checks.check_tensor(codes, "codes", torch.int32, where)
    checks.check_pack_values(codes, bits, where)
    flat = codes.reshape(-1) + half(bits)
    n = flat.numel()
    nbytes = (n + 7) // 8
    shifts = torch.arange(bits - 1, -1, -1, dtype=torch.int32, device=flat.device)
    planes = (flat.unsqueeze(0) >> shifts.unsqueeze(1)) & 1
    padded = torch.zeros(bits, nbytes * 8, dtype=torch.int32, device=flat.device)
    padded[:, :n] = planes
    weights = _BYTE_WEIGHTS.to(flat.device)
    return (padded.view(bits, nbytes, 8) * weights).sum(-1).to(torch.uint8)


def unpack_bitplanes(packed: torch.Tensor, bits: int, n: int, *, where: str = "unpack_bitplanes") -> torch.Tensor:
    """Inverse of :func:`pack_bitplanes`: int32 codes of length ``n``."""
    bits, n = checks.check_unpack_args(packed, bits, n, where)
    weights = _BYTE_WEIGHTS.to(packed.device)
    planes = (packed.to(torch.int32).unsqueeze(-1) & weights) != 0  # (bits, nbytes, 8)
    planes = planes.reshape(bits, -1)[:, :n].to(torch.int32)
    shifts = torch.arange(bits - 1, -1, -1, dtype=torch.int32, device=packed.device)
    u = (planes << shifts.unsqueeze(1)).sum(0, dtype=torch.int32)
    return u - half(bits)
