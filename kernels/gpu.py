"""The fused GPU projection: one Triton kernel, one pass over (latent, codes, frozen).

Computes exactly what ``kernels/reference.py: project_`` computes (and ``bitops.c``):
for each weight with k frozen bits, the window of offset codes allowed by its frozen
bits, ``u in [max(1, floor(u / 2^(N-k)) 2^(N-k)), ... + 2^(N-k) - 1]`` (docs/methods.md, "Bits,
planes and freezing"; BLIP, Shi et al., CVPR 2021, arXiv 2105.04444, Sec. 3.3), the
latent clamped to ``scale * window``, and the new code ``round_half_even(latent *
inv_scale)`` clamped to the window, so no frozen bit can change.

Bit-identity with the reference, by construction:

* integer window arithmetic in int32, as in the reference (``bits <= 24``);
* the bounds ``float(c) * scale`` and the product ``latent * inv_scale`` are single
  float32 multiplications, correctly rounded on any IEEE device; the kernel is compiled
  with ``enable_fp_fusion=False`` so that no multiply-add is contracted into an FMA (an
  FMA would skip the rounding of the product the reference performs);
* round-half-to-even without libdevice (whose ``rint`` the Triton interpreter cannot
  run, and whose ftz setting would flush denormals): truncate to int32 (exact for
  ``|r| < 2^31``), take the exact remainder ``r - trunc(r)`` (Sterbenz: no rounding), and
  step away from zero when the remainder exceeds one half, or equals it and the
  truncated value is odd;
* clamping with compare-and-select (as the C kernel) rather than min/max.

The caller checks finiteness first (``BitState.project_``), as for the other paths.
Imported only when triton is installed; :func:`available` also needs CUDA.
"""
from __future__ import annotations

import torch

from . import reference

try:  # optional: a CUDA machine with triton (the CPU-only install has neither)
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

BLOCK = 1024


def available() -> bool:
    """True when triton is importable and a CUDA device is present."""
    return triton is not None and torch.cuda.is_available()


if triton is not None:
    @triton.jit
    def _project_kernel(latent_ptr, codes_ptr, frozen_ptr, n, bits, half, scale, inv_scale,
                        BLOCK_SIZE: tl.constexpr):
        offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offsets < n
        x = tl.load(latent_ptr + offsets, mask=mask, other=0.0)
        c = tl.load(codes_ptr + offsets, mask=mask, other=0)
        k = tl.load(frozen_ptr + offsets, mask=mask, other=0).to(tl.int32)
        shift = bits - k
        u = c + half
        u_lo = (u >> shift) << shift                 # top k bits kept, free bits cleared
        u_hi = u_lo + (1 << shift) - 1
        u_lo = tl.where(u_lo > 1, u_lo, 1)            # narrow range: u >= 1
        c_lo = u_lo - half
        c_hi = u_hi - half
        lo = c_lo.to(tl.float32) * scale
        hi = c_hi.to(tl.float32) * scale
        x = tl.where(x < lo, lo, x)
        x = tl.where(x > hi, hi, x)
        r = x * inv_scale
        t = r.to(tl.int32)                            # truncation towards zero
        frac = r - t.to(tl.float32)                   # exact
        away = tl.where(r < 0, -1, 1)
        afrac = tl.where(frac < 0, -frac, frac)
        up = (afrac > 0.5) | ((afrac == 0.5) & ((t & 1) != 0))
        code = t + tl.where(up, away, 0)
        code = tl.where(code < c_lo, c_lo, code)
        code = tl.where(code > c_hi, c_hi, code)
        tl.store(latent_ptr + offsets, x, mask=mask)
        tl.store(codes_ptr + offsets, code, mask=mask)


def launch(latent: torch.Tensor, codes: torch.Tensor, frozen: torch.Tensor, bits: int, scale: float,
           inv_scale: float) -> None:
    """Run the Triton kernel on contiguous tensors of any device triton accepts (CUDA; CPU
    tensors under ``TRITON_INTERPRET=1``, which is how it is tested without a GPU)."""
    n = latent.numel()
    if n == 0:
        return
    grid = (triton.cdiv(n, BLOCK),)
    _project_kernel[grid](latent, codes, frozen, n, bits, 1 << (bits - 1), float(scale), float(inv_scale),
                          BLOCK_SIZE=BLOCK, enable_fp_fusion=False)


def project_(latent: torch.Tensor, codes: torch.Tensor, frozen: torch.Tensor, bits: int, scale: float,
             inv_scale: float) -> None:
    """Clamp ``latent`` (float32) into its frozen-bit window and refresh ``codes`` (int32), in place,
    from ``frozen`` (uint8): the reference's arithmetic in one fused CUDA kernel. Tensors that are
    not contiguous CUDA tensors take the torch reference (same results)."""
    fused = (available() and latent.dtype == torch.float32 and codes.dtype == torch.int32
             and frozen.dtype == torch.uint8
             and all(t.is_cuda and t.is_contiguous() for t in (latent, codes, frozen)))
    if not fused:
        reference.project_(latent, codes, frozen, bits, scale, inv_scale)
        return
    with torch.cuda.device(latent.device):
        launch(latent, codes, frozen, bits, scale, inv_scale)
