"""Argument checks shared by every kernel entry point (C and torch reference).

Cheap checks only: types, dtypes, shapes, devices, memory overlap, bit widths and
scales are metadata; the value checks (finite latents, codes in range, frozen
counts <= N) are one vectorised read-only pass, fused into the C kernel on the
fast path (``bitops.c``) and done with torch ops here for the reference.
Every failure raises a :mod:`bitcl.errors` exception naming ``where``.
"""
from __future__ import annotations

import torch

from bitcl.errors import BitError, BitTypeError, NonFiniteError
from bitcl.quant import codes as bitcodes

MAX_PLANES = bitcodes.MAX_BITS
_F32 = torch.finfo(torch.float32)
# float32(1 / scale) * scale differs from 1 by at most 2^-24; a looser bound
# only catches an inv_scale that belongs to another scale.
_INV_TOLERANCE = 2.0 ** -20


def check_tensor(t: object, name: str, dtype: torch.dtype, where: str) -> torch.Tensor:
    """A strided CPU/CUDA tensor of ``dtype``, else :class:`BitTypeError`."""
    bitcodes.check_tensor(t, name, dtype, where)
    if t.layout != torch.strided:
        raise BitTypeError(f"{where}: {name} must be a dense (strided) tensor, got {t.layout}")
    if t.is_meta:
        raise BitTypeError(f"{where}: {name} is on the meta device and holds no data")
    return t


def _span(t: torch.Tensor) -> tuple[int, int]:
    """Bytes ``[first, last + 1)`` that a strided tensor (no negative strides in torch) can touch."""
    if t.is_contiguous():
        return t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()
    last = sum(stride * (size - 1) for size, stride in zip(t.shape, t.stride()))
    return t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size()


def check_disjoint(where: str, **tensors: torch.Tensor) -> None:
    """No two tensors share memory (the kernels read one while writing another)."""
    spans = [(*_span(t), name, t) for name, t in tensors.items() if t.numel() > 0]
    for i, (lo_a, hi_a, name_a, a) in enumerate(spans):
        for lo_b, hi_b, name_b, b in spans[i + 1:]:
            if lo_a < hi_b and lo_b < hi_a and a.device == b.device:
                raise BitError(f"{where}: {name_a} and {name_b} share memory; pass separate tensors")


def check_scales(scale: object, inv_scale: object, where: str) -> tuple[float, float]:
    """Finite float32 scales > 0 with ``inv_scale`` ~ 1 / ``scale``; defaults ``inv_scale``."""
    scale = bitcodes.check_scale(scale, "scale", where)
    if not _F32.tiny <= scale <= _F32.max:
        raise BitError(f"{where}: scale {scale!r} is not a normal float32 number")
    if inv_scale is None:
        inv_scale = float(torch.tensor(1.0 / scale, dtype=torch.float32))
    inv_scale = bitcodes.check_scale(inv_scale, "inv_scale", where)
    if not _F32.tiny <= inv_scale <= _F32.max or abs(scale * inv_scale - 1.0) > _INV_TOLERANCE:
        raise BitError(f"{where}: inv_scale {inv_scale!r} is not 1 / scale (scale {scale!r})")
    return scale, inv_scale


def check_project_args(latent, codes, frozen, bits, scale, inv_scale, where: str,
                       disjoint: bool = True) -> tuple[int, float, float]:
    """Everything :func:`bitcl.kernels.project_` needs, short of reading the values.

    ``disjoint=False`` leaves the memory-overlap test to the C kernel (which makes it on
    the contiguous buffers it is given)."""
    bits = bitcodes.check_bits(bits, where)
    check_tensor(latent, "latent", torch.float32, where)
    check_tensor(codes, "codes", bitcodes.CODE_DTYPE, where)
    check_tensor(frozen, "frozen", bitcodes.FROZEN_DTYPE, where)
    bitcodes.check_same(where, latent=latent, codes=codes, frozen=frozen)
    if disjoint:
        check_disjoint(where, latent=latent, codes=codes, frozen=frozen)
    scale, inv_scale = check_scales(scale, inv_scale, where)
    return bits, scale, inv_scale


def nonfinite_error(latent: torch.Tensor, index: int, where: str) -> NonFiniteError:
    value = latent.reshape(-1)[index].item()
    return NonFiniteError(f"{where}: non-finite latent value {value} at flat index {index}; "
                          "codes and frozen bits left unchanged")


def first_nonfinite_index(latent: torch.Tensor) -> int:
    """Flat index of the first NaN/inf, or -1; one cheap pass when all values are finite
    (min and max propagate NaN and show infinities)."""
    if latent.numel() == 0:
        return -1
    lo, hi = torch.aminmax(latent)
    if bool(torch.isfinite(lo)) and bool(torch.isfinite(hi)):
        return -1
    return int((~torch.isfinite(latent)).reshape(-1).nonzero()[0, 0])


def check_project_values(latent: torch.Tensor, codes: torch.Tensor, frozen: torch.Tensor, bits: int,
                         where: str) -> None:
    """Reference path: finite latents, then codes in range, then frozen <= N (the C order)."""
    bad = first_nonfinite_index(latent)
    if bad >= 0:
        raise nonfinite_error(latent, bad, where)
    bitcodes.check_code_values(codes, frozen, bits, where)


def check_planes(bits: object, where: str) -> int:
    """A plane count in 1..24 (export keeps as few as one plane)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_PLANES:
        raise BitError(f"{where}: bits (planes) must be an integer in [1, {MAX_PLANES}], got {bits!r}")
    return bits


def pack_range(bits: int) -> tuple[int, int]:
    """Codes that fit ``bits`` planes: ``u = c + 2^(N-1)`` in ``[0, 2^N - 1]``."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def code_range_error(codes: torch.Tensor, index: int, bits: int, where: str) -> BitError:
    lo, hi = pack_range(bits)
    return BitError(f"{where}: code {int(codes.reshape(-1)[index])} at flat index {index} does not fit "
                    f"{bits} planes [{lo}, {hi}]")


def check_pack_values(codes: torch.Tensor, bits: int, where: str) -> None:
    if codes.numel() == 0:
        return
    lo, hi = pack_range(bits)
    c_min, c_max = torch.aminmax(codes)
    if int(c_min) < lo or int(c_max) > hi:
        index = int(((codes < lo) | (codes > hi)).reshape(-1).nonzero()[0, 0])
        raise code_range_error(codes, index, bits, where)


def check_unpack_args(packed: object, bits: object, n: object, where: str) -> tuple[int, int]:
    bits = check_planes(bits, where)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise BitError(f"{where}: n must be an integer >= 0, got {n!r}")
    check_tensor(packed, "packed planes", torch.uint8, where)
    expected = (bits, (n + 7) // 8)
    if tuple(packed.shape) != expected:
        raise BitError(f"{where}: packed planes must be uint8 of shape {expected}, got {tuple(packed.shape)}")
    return bits, n
