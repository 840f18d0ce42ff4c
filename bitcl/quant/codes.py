"""The one place for bitcl's bit arithmetic: codes, windows, top bits, checks.

Conventions (docs/methods.md, "Bits, planes and freezing"), from BLIP (Shi et al.,
"Continual Learning via Bit-Level Information Preserving", CVPR 2021,
arXiv 2105.04444, Sec. 3.2-3.3):

* an N-bit tensor holds signed narrow-range codes ``c in [-(2^(N-1) - 1), 2^(N-1) - 1]``
  and a fixed per-tensor scale ``s``; its real value is ``s * c``;
* its bit planes are those of the offset-binary code ``u = c + 2^(N-1)``, most
  significant first;
* ``k`` frozen bits pin the top ``k`` bits of ``u``: the weight may take any
  ``u in [p 2^(N-k), (p + 1) 2^(N-k) - 1]`` (its *window*), intersected with
  ``u >= 1`` (narrow range);
* keeping only the top ``B`` bits ``u' = u >> (N - B)`` rebuilds the weight at the
  middle of the window those bits leave open:
  ``value = s 2^(N-B) (u' + 1/2 - 2^(B-1))``, i.e. the odd code
  ``c' = 2 u' - 2^B + 1`` with scale ``s' = s 2^(N-B-1)`` (``B = N`` keeps ``c``).

Everything here is vectorised torch on int32 (N <= 24, so every window fits).
"""
from __future__ import annotations

import math
import numbers

import torch

from bitcl.constants import MAX_BITS, MIN_BITS  # 2..24: a float32 latent holds 24-bit integers exactly
from bitcl.errors import BitError, BitTypeError

CODE_DTYPE, FROZEN_DTYPE = torch.int32, torch.uint8


# -- widths and scales -----------------------------------------------------------------
def check_bits(bits: object, where: str, error: type[Exception] = BitError) -> int:
    """An int in [2, 24], else ``error`` (a :class:`BitError` by default) naming ``where``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise error(f"{where}: bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    return bits


def max_code(bits: int) -> int:
    """Largest signed narrow-range code, 2^(N-1) - 1."""
    return (1 << (bits - 1)) - 1


def half(bits: int) -> int:
    """The offset-binary offset 2^(N-1): ``u = c + half(N)``."""
    return 1 << (bits - 1)


def check_range(value_range: object, name: str = "value_range", where: str = "scale_for") -> float:
    """A finite real > 0 whose float32 value is a positive normal number, else :class:`BitError`
    (a ``ValueError``) naming ``name``."""
    if isinstance(value_range, bool) or not isinstance(value_range, numbers.Real):
        raise BitTypeError(f"{where}: {name} must be a real number, got {type(value_range).__name__}")
    value = float(value_range)
    if not (math.isfinite(value) and value > 0.0) or not math.isfinite(float(torch.tensor(value,
                                                                                        dtype=torch.float32))):
        raise BitError(f"{where}: {name} must be finite, > 0 and within float32, got {value_range!r}")
    return value


def scale_for(value_range: float, bits: int) -> float:
    """The float32 scale of a tensor whose codes span ``[-range, range]``.

    Computed as brevitas does (float32 range over float32 max code), so the
    brevitas quantiser and bitcl agree bit for bit. ``bits`` must lie in 2..24 and
    ``value_range`` be finite and > 0 (a :class:`~bitcl.errors.BitError`, a ``ValueError``,
    names the argument otherwise): 1 bit has no non-zero narrow-range code.
    """
    check_bits(bits, "scale_for")
    check_range(value_range)
    scale = float(torch.tensor(value_range, dtype=torch.float32) / float(max_code(bits)))
    if not scale > 0:  # a range below float32's smallest normal over 2^23
        raise BitError(f"scale_for: value_range {value_range!r} gives a zero float32 scale at {bits} bits")
    return scale


def check_scale(scale: object, name: str, where: str) -> float:
    """A finite real > 0 (as a Python float), else :class:`BitError`."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise BitTypeError(f"{where}: {name} must be a real number, got {type(scale).__name__}")
    value = float(scale)
    if not (math.isfinite(value) and value > 0.0):
        raise BitError(f"{where}: {name} must be finite and > 0, got {scale!r}")
    return value


# -- offset codes ------------------------------------------------------------------------
def offset_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Offset-binary codes ``u = c + 2^(N-1)``."""
    return codes + half(bits)


def signed_codes(offset: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of :func:`offset_codes`: ``c = u - 2^(N-1)``."""
    return offset - half(bits)


# -- bit planes -----------------------------------------------------------------------
def bitplanes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """bool tensor (N, *shape): the bits of ``u``, most significant plane first."""
    shifts = torch.arange(bits - 1, -1, -1, device=codes.device, dtype=torch.int32)
    return ((offset_codes(codes, bits).unsqueeze(0) >> shifts.view(-1, *([1] * codes.dim()))) & 1).bool()


def freeze_mask(frozen: torch.Tensor, bits: int) -> torch.Tensor:
    """bool tensor (N, *shape): True where a plane's bit is frozen (plane index < k)."""
    planes = torch.arange(bits, device=frozen.device).view(-1, *([1] * frozen.dim()))
    return planes < frozen.unsqueeze(0).to(torch.int64)


# -- windows -------------------------------------------------------------------------------
def _window_base(u: torch.Tensor, frozen: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Window size ``2^(N-k)`` and lowest offset code ``p 2^(N-k)`` of each weight."""
    free = bits - frozen.to(torch.int32)
    window = torch.ones_like(free) << free
    return window, u & ~(window - 1)


def code_window(codes: torch.Tensor, frozen: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lowest and highest signed code whose top ``frozen`` bits equal those of ``codes``."""
    window, u_lo = _window_base(offset_codes(codes, bits), frozen, bits)
    return u_lo.clamp_min(1) - half(bits), u_lo + window - 1 - half(bits)


def window_middle(codes: torch.Tensor, frozen: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed codes with the free bits set to ``100...0`` (the middle of each window).

    A weight with every bit frozen keeps its code. Used when freezing resets the free
    bits (BLIP's choice, docs/methods.md) and to rebuild weights from frozen bits alone.
    """
    u = offset_codes(codes, bits)
    window, u_lo = _window_base(u, frozen, bits)
    return torch.where(window > 1, u_lo + (window >> 1), u) - half(bits)


def frozen_value(codes: torch.Tensor, frozen: torch.Tensor, scale: float, bits: int) -> torch.Tensor:
    """Weights rebuilt from their frozen bits alone (each at the middle of its frozen window).

    ``codes``/``frozen`` are checked (:func:`check_codes`: frozen counts <= ``bits``) and ``scale``
    must be finite and > 0; a :class:`~bitcl.errors.BitError` names the argument otherwise.
    """
    check_codes(codes, frozen, bits, "frozen_value")
    check_scale(scale, "scale", "frozen_value")
    return window_middle(codes, frozen, bits).to(torch.float64).mul(scale).to(torch.float32)


# -- top bits (deployment at reduced precision) ------------------------------------------------
def top_bits(codes: torch.Tensor, bits: int, keep: int) -> torch.Tensor:
    """The top ``keep`` bits ``u'`` of the offset codes, in ``[0, 2^keep - 1]``.

    ``bits`` must lie in 2..24, ``keep`` in 1..bits and ``codes`` be int32 inside the N-bit
    window (:class:`~bitcl.errors.BitError`, a ``ValueError``, naming the argument otherwise).
    """
    check_bits(bits, "top_bits")
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= bits:
        raise BitError(f"top_bits: keep must be an integer in 1..{bits} (bits), got {keep!r}")
    check_tensor(codes, "codes", CODE_DTYPE, "top_bits")
    if codes.numel():
        lo, hi = torch.aminmax(codes)
        if int(lo) < -max_code(bits) or int(hi) > max_code(bits):
            raise code_error(codes, _first((codes < -max_code(bits)) | (codes > max_code(bits))), bits,
                             "top_bits: codes")
    return offset_codes(codes, bits) >> (bits - keep)


def codes_from_top_bits(top: torch.Tensor, bits: int, keep: int) -> tuple[torch.Tensor, float]:
    """Integer codes and the scale multiplier that rebuild a weight from its top bits."""
    if keep == bits:
        return signed_codes(top, bits), 1.0
    return 2 * top - (1 << keep) + 1, float(2 ** (bits - keep - 1))


def reduced_value(codes: torch.Tensor, scale: float, bits: int, keep: int) -> torch.Tensor:
    """The float weights of ``codes`` kept to their top ``keep`` bits (``scale`` finite and > 0)."""
    check_scale(scale, "scale", "reduced_value")
    ints, multiplier = codes_from_top_bits(top_bits(codes, bits, keep), bits, keep)
    return ints.to(torch.float64).mul(scale * multiplier).to(torch.float32)


# -- validation ------------------------------------------------------------------------------------
def _first(mask: torch.Tensor) -> int:
    return int(mask.reshape(-1).nonzero()[0, 0])


def check_tensor(t: object, name: str, dtype: torch.dtype, where: str) -> torch.Tensor:
    """``t`` is a tensor of ``dtype``, else :class:`BitTypeError`."""
    if not isinstance(t, torch.Tensor):
        raise BitTypeError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise BitTypeError(f"{where}: {name} must be {dtype}, got {t.dtype}")
    return t


def check_same(where: str, **tensors: torch.Tensor) -> None:
    """Every tensor has the first one's shape and device, else :class:`BitError` / :class:`BitTypeError`."""
    (first_name, first), *rest = tensors.items()
    for name, t in rest:
        if t.shape != first.shape:
            raise BitError(f"{where}: {name} has shape {tuple(t.shape)}, {first_name} {tuple(first.shape)}; "
                           "they must be equal")
        if t.device != first.device:
            raise BitTypeError(f"{where}: {name} is on {t.device}, {first_name} on {first.device}")


def code_error(codes: torch.Tensor, index: int, bits: int, where: str) -> BitError:
    """The error for a code outside the narrow N-bit range at flat ``index``."""
    m = max_code(bits)
    return BitError(f"{where}: code {int(codes.reshape(-1)[index])} at flat index {index} lies outside the "
                    f"{bits}-bit range [{-m}, {m}]")


def frozen_error(frozen: torch.Tensor, index: int, bits: int, where: str) -> BitError:
    """The error for a frozen count above N at flat ``index``."""
    return BitError(f"{where}: frozen count {int(frozen.reshape(-1)[index])} at flat index {index} exceeds "
                    f"bits = {bits}")


def check_code_values(codes: torch.Tensor, frozen: torch.Tensor, bits: int, where: str) -> None:
    """Codes inside the narrow N-bit range and frozen counts <= N (one pass each)."""
    if codes.numel() == 0:
        return
    m = max_code(bits)
    lo, hi = torch.aminmax(codes)
    if int(lo) < -m or int(hi) > m:
        raise code_error(codes, _first((codes < -m) | (codes > m)), bits, where)
    if int(frozen.max()) > bits:
        raise frozen_error(frozen, _first(frozen > bits), bits, where)


def check_codes(codes: torch.Tensor, frozen: torch.Tensor, bits: int, where: str) -> None:
    """Validate one quantised tensor's state against the contract; raise a precise :class:`BitError`.

    ``codes`` int32 and ``frozen`` uint8 of equal shape and device, ``bits`` in 2..24,
    every code in ``[-(2^(N-1) - 1), 2^(N-1) - 1]`` and every frozen count ``<= N``.
    Dtype and device problems raise :class:`BitTypeError`. ``where`` names the tensor.
    """
    check_bits(bits, where)
    check_tensor(codes, "codes", CODE_DTYPE, where)
    check_tensor(frozen, "frozen", FROZEN_DTYPE, where)
    check_same(where, codes=codes, frozen=frozen)
    check_code_values(codes, frozen, bits, where)
