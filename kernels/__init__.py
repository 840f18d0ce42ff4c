"""bitcl.kernels: the per-step bit operations, with a fast path and a reference.

* :func:`project_` keeps every frozen bit fixed after an optimiser step (one
  fused pass over the latent weights, the int32 codes and the uint8 frozen
  counts; no allocation proportional to the model).
* :func:`pack_bitplanes` / :func:`unpack_bitplanes` convert N-bit codes to and
  from packed bit planes (N bits per weight) for checkpoints and export.

The C fast path is used for contiguous CPU tensors when it can be built; the
torch reference (``kernels/reference.py``) serves everything else (CUDA tensors
included) and is what the fast path is tested against. Set
``BITCL_KERNELS=reference`` to force the reference.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

import torch

from . import reference
from ._fast import FastPathUnavailable, load

__all__ = ["backend", "project_", "pack_bitplanes", "unpack_bitplanes", "first_nonfinite"]

_lib = None
_tried = False


def _fast():
    """The loaded C library, or None (with a one-line notice the first time)."""
    global _lib, _tried
    if not _tried:
        _tried = True
        if os.environ.get("BITCL_KERNELS", "").lower() != "reference":
            try:
                _lib = load()
            except FastPathUnavailable as error:
                print(f"bitcl: C fast path unavailable ({error}); using the torch reference kernels",
                      file=sys.stderr)
    return _lib


def backend() -> str:
    """``"c"`` when the fast path is loaded, else ``"reference"``."""
    return "c" if _fast() is not None else "reference"


def _use_fast(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == "cpu" and t.is_contiguous() for t in tensors) and _fast() is not None


def first_nonfinite(latent: torch.Tensor) -> int:
    """Flat index of the first NaN or infinity in a float32 tensor, or -1."""
    if _use_fast(latent):
        return int(_lib.bitcl_first_nonfinite(latent.data_ptr(), latent.numel()))
    return reference.first_nonfinite(latent)


def project_(latent: torch.Tensor, codes: torch.Tensor, frozen: torch.Tensor, bits: int,
             scale: float, inv_scale: Optional[float] = None) -> None:
    """Clamp ``latent`` (float32) into the window its frozen bits allow; refresh ``codes``.

    The caller checks finiteness first (see :func:`first_nonfinite`). ``scale``
    must be float32-representable so that both paths compute identical bounds.
    """
    if inv_scale is None:
        inv_scale = float(torch.tensor(1.0 / scale, dtype=torch.float32))
    if _use_fast(latent, codes, frozen):
        _lib.bitcl_project(latent.data_ptr(), codes.data_ptr(), frozen.data_ptr(), latent.numel(),
                           bits, scale, inv_scale, torch.get_num_threads())
    else:
        reference.project_(latent, codes, frozen, bits, scale, inv_scale)


def pack_bitplanes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 codes (any shape) to uint8 planes of shape ``(bits, ceil(numel / 8))``."""
    codes = codes.reshape(-1)
    if codes.dtype != torch.int32:
        codes = codes.to(torch.int32)
    if _use_fast(codes):
        out = torch.empty(bits, (codes.numel() + 7) // 8, dtype=torch.uint8)
        _lib.bitcl_pack(codes.data_ptr(), codes.numel(), bits, out.data_ptr(), torch.get_num_threads())
        return out
    return reference.pack_bitplanes(codes, bits)


def unpack_bitplanes(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_bitplanes`: a flat int32 tensor of ``n`` codes."""
    expected = (bits, (n + 7) // 8)
    if tuple(packed.shape) != expected or packed.dtype != torch.uint8:
        raise ValueError(f"packed planes must be uint8 of shape {expected}, got "
                         f"{packed.dtype} {tuple(packed.shape)}")
    if _use_fast(packed):
        out = torch.empty(n, dtype=torch.int32)
        _lib.bitcl_unpack(packed.data_ptr(), n, bits, out.data_ptr(), torch.get_num_threads())
        return out
    return reference.unpack_bitplanes(packed, bits, n)
