"""bitcl.kernels: the per-step bit operations, with a C fast path and a torch reference.

* :func:`project_` keeps every frozen bit fixed after an optimiser step (BLIP,
  Shi et al., CVPR 2021, arXiv 2105.04444, Sec. 3.3): one read-only check pass
  and one fused projection pass over the latent weights, the int32 codes and
  the uint8 frozen counts, with no allocation proportional to the model.
* :func:`project_latent_` is its per-step half: the latents clamped exactly as
  :func:`project_` clamps them, the codes left to be refreshed when read
  (``BitState.project_latent_``), so a step moves 5 bytes per weight besides
  the latent instead of 9 read twice and 4 written.
* :func:`build_windows` / :func:`project_windows_`: the same clamp from one window
  word per weight (the frozen prefix of the code and its length), built when the
  codes or frozen counts change, so a step reads 2 bytes per weight (every frozen
  count <= 15) or 4 besides the latent: right after a training step those bytes are
  out of the cache and most of the projection's cost.
* :func:`pack_bitplanes` / :func:`unpack_bitplanes` convert N-bit codes to and
  from packed bit planes (N bits per weight) for checkpoints and export.
* :func:`first_nonfinite` finds the first NaN/inf of a float32 tensor.

The C fast path is the extension ``bitcl.kernels._bitops``, compiled when the
package is installed (``setup.py``); nothing is compiled at run time. It serves
CPU tensors; the torch reference (``kernels/reference.py``) serves CUDA tensors,
and everything when the extension is missing (a source tree never installed),
with a one-line notice. ``BITCL_KERNELS=reference`` forces the reference;
``BITCL_KERNELS=c`` makes a missing extension an error.

Every entry point checks types, dtypes, shapes, devices, memory overlap, bit
widths, scales and the values it reads before it writes anything, and raises a
:mod:`bitcl.errors` exception (:class:`~bitcl.errors.BitError`,
:class:`~bitcl.errors.BitTypeError`, :class:`~bitcl.errors.NonFiniteError`).
"""
from __future__ import annotations

import os
import sys
from typing import Optional

import torch

from bitcl.errors import BitError, ConfigError
from bitcl.quant import codes as bitcodes

from . import checks, reference

__all__ = ["backend", "build_info", "project_", "project_latent_", "build_windows", "project_windows_", "pack_bitplanes",
           "unpack_bitplanes", "first_nonfinite"]

# status codes of bitops.h
_OK, _NONFINITE, _CODE, _FROZEN = 0, 1, 2, 3
_OVERLAP = -6
_ARGUMENT_ERRORS = {-1: "null pointer", -2: "bad element count or buffer length", -3: "bits out of range",
                    -4: "scale not finite and > 0", -5: "inv_scale not finite and > 0"}

_native = None
_gpu = None  # kernels.gpu when usable, False when not, None before the first CUDA tensor
_why_not: Optional[str] = None
_loaded = False


def _extension():
    """The C extension module, or None (with a one-line notice the first time)."""
    global _native, _why_not, _loaded
    if not _loaded:
        choice = os.environ.get("BITCL_KERNELS", "").strip().lower()
        if choice not in ("", "c", "reference"):  # raised on every call until fixed
            raise ConfigError(f"BITCL_KERNELS must be 'c' or 'reference', got {choice!r}")
        _loaded = True
        if choice == "reference":
            _why_not = "BITCL_KERNELS=reference"
        else:
            try:
                from . import _bitops
                _native = _bitops
            except ImportError as error:
                _why_not = f"the C extension is not built ({error})"
                if choice == "c":
                    _loaded = False  # raised on every call, like a bad value
                    raise ConfigError(f"BITCL_KERNELS=c but {_why_not}; run `pip install -e .`") from error
                print(f"bitcl: {_why_not}; using the torch reference kernels (install the package to build it)",
                      file=sys.stderr)
    return _native


def backend() -> str:
    """``"c"`` when the compiled extension serves CPU tensors, else ``"reference"``."""
    return "c" if _extension() is not None else "reference"


def build_info() -> dict:
    """How the kernels were built: backend, OpenMP or single-threaded, instruction set, flags."""
    native = _extension()
    if native is None:
        return {"backend": "reference", "openmp": False, "isa": None, "flags": None, "why": _why_not}
    info = native.build_info()
    return {"backend": "c", "openmp": bool(info["openmp"]), "isa": info["isa"], "flags": info["flags"],
            "threads": "OpenMP" if info["openmp"] else "single-threaded build", "path": native.__file__,
            "why": None}


def _fast(t: torch.Tensor):
    """The extension when it should serve tensor ``t`` (a checked tensor), else None."""
    native = _extension()
    return native if native is not None and t.device.type == "cpu" else None


def _raise_status(status: int, index: int, where: str, latent=None, codes=None, frozen=None, bits=0) -> None:
    """Turn a non-zero status of bitops.c into the same exception the reference raises."""
    if status == _OK:
        return
    if status == _NONFINITE:
        raise checks.nonfinite_error(latent, index, where)
    if status == _CODE:
        if frozen is None:  # pack: the plane range
            raise checks.code_range_error(codes, index, bits, where)
        raise bitcodes.code_error(codes, index, bits, where)
    if status == _FROZEN:
        raise bitcodes.frozen_error(frozen, index, bits, where)
    if status == _OVERLAP:
        raise BitError(f"{where}: the tensors share memory; pass separate tensors")
    raise BitError(f"{where}: the C kernel refused its arguments ({_ARGUMENT_ERRORS.get(status, status)})")


def _fused_gpu() -> bool:
    """Whether the Triton projection (kernels/gpu.py) can run; imported on first CUDA use only."""
    global _gpu
    if _gpu is None:
        try:
            from . import gpu
            _gpu = gpu if gpu.available() else False
        except ImportError:
            _gpu = False
    return _gpu is not False


def _project_gpu(latent, codes, frozen, bits, scale, inv_scale, where) -> None:
    """The reference's checks, then the fused Triton kernel on contiguous CUDA tensors."""
    checks.check_project_values(latent, codes, frozen, bits, where)
    l, c, f = latent.detach().contiguous(), codes.contiguous(), frozen.contiguous()
    with torch.cuda.device(l.device):
        _gpu.launch(l, c, f, bits, scale, inv_scale)
    if l.data_ptr() != latent.data_ptr():
        with torch.no_grad():
            latent.copy_(l)
    if c.data_ptr() != codes.data_ptr():
        codes.copy_(c)


def first_nonfinite(latent: torch.Tensor) -> int:
    """Flat index of the first NaN or infinity in a float32 tensor, or -1."""
    checks.check_tensor(latent, "latent", torch.float32, "first_nonfinite")
    native = _fast(latent)
    if native is None:
        return reference.first_nonfinite(latent)
    x = latent.detach().contiguous()
    status, index = native.first_nonfinite(x.data_ptr(), x.numel())
    _raise_status(status, index, "first_nonfinite")
    return index


def project_(latent: torch.Tensor, codes: torch.Tensor, frozen: torch.Tensor, bits: int,
             scale: float, inv_scale: Optional[float] = None, *, where: str = "project_") -> None:
    """Clamp ``latent`` (float32) into the window its frozen bits allow; refresh ``codes`` (int32).

    ``frozen`` (uint8) counts each weight's frozen most significant bits; all three
    have the same shape and device and do not overlap. ``scale`` (and ``inv_scale``,
    by default the float32 ``1 / scale``) must be normal float32 values > 0. A NaN/inf
    latent raises :class:`~bitcl.errors.NonFiniteError` (a ``FloatingPointError``);
    codes outside the N-bit range or frozen counts above N raise
    :class:`~bitcl.errors.BitError`; in every error case nothing is written.
    Non-contiguous tensors are projected in contiguous copies, then copied back.
    ``where`` names the tensor in messages.
    """
    contiguous = latent.is_contiguous() and codes.is_contiguous() and frozen.is_contiguous() \
        if isinstance(latent, torch.Tensor) and isinstance(codes, torch.Tensor) and isinstance(frozen, torch.Tensor) \
        else False
    native = _fast(latent) if isinstance(latent, torch.Tensor) else None
    # contiguous buffers on the C path: the kernel itself refuses overlapping ones
    bits, scale, inv_scale = checks.check_project_args(latent, codes, frozen, bits, scale, inv_scale, where,
                                                       disjoint=not (contiguous and native is not None))
    if native is None:
        if latent.device.type == "cuda" and _fused_gpu():
            _project_gpu(latent, codes, frozen, bits, scale, inv_scale, where)
        else:
            reference.project_checked(latent, codes, frozen, bits, scale, inv_scale, where)
        return
    if contiguous:
        l, c, f = latent, codes, frozen
    else:
        l, c, f = latent.detach().contiguous(), codes.contiguous(), frozen.contiguous()
    status, index = native.project(l.data_ptr(), c.data_ptr(), f.data_ptr(), l.numel(), bits, scale, inv_scale,
                                   torch.get_num_threads())
    _raise_status(status, index, where, l, c, f, bits)
    if not contiguous:
        with torch.no_grad():
            latent.copy_(l)
            codes.copy_(c)


def project_latent_(latent: torch.Tensor, codes: torch.Tensor, frozen: torch.Tensor, bits: int,
                    scale: float, inv_scale: Optional[float] = None, *, validated: bool = False,
                    where: str = "project_latent_") -> bool:
    """Clamp ``latent`` into its frozen-bit windows as :func:`project_` does; maybe leave ``codes``.

    Returns True when ``codes`` were left unchanged (the C path on contiguous CPU tensors):
    the caller then owes a refresh, which :func:`project_` on a copy of the latent gives
    exactly (the window depends only on the codes' top ``frozen`` bits, which no projection
    changes, and the latent is already inside it). Returns False when the codes were
    refreshed as well (CUDA, the torch reference, non-contiguous tensors: :func:`project_`).

    Arguments and errors as :func:`project_`; in every error case nothing is written.
    ``validated=True`` skips re-reading the codes and frozen counts for their ranges (the
    caller checked them and they have not changed since); the latents are always checked
    for NaN/inf. Unchecked bad codes can give wrong windows but never touch memory outside
    the three tensors.
    """
    native = _fast(latent) if isinstance(latent, torch.Tensor) else None
    if native is not None and not hasattr(native, "project_latent"):  # an extension built before this entry
        native = None
    contiguous = native is not None and isinstance(codes, torch.Tensor) and isinstance(frozen, torch.Tensor) \
        and latent.is_contiguous() and codes.is_contiguous() and frozen.is_contiguous()
    if not contiguous:
        project_(latent, codes, frozen, bits, scale, inv_scale, where=where)
        return False
    bits, scale, inv_scale = checks.check_project_args(latent, codes, frozen, bits, scale, inv_scale, where,
                                                       disjoint=False)
    status, index = native.project_latent(latent.data_ptr(), codes.data_ptr(), frozen.data_ptr(), latent.numel(),
                                          bits, scale, not validated, torch.get_num_threads())
    _raise_status(status, index, where, latent, codes, frozen, bits)
    return True


def project_latent_prechecked_(latent: torch.Tensor, codes: torch.Tensor, frozen: torch.Tensor, bits: int,
                               scale: float, where: str) -> bool:
    """:func:`project_latent_` for arguments that passed its checks and whose codes and frozen counts
    have not changed since (``BitState.project_latent_`` keys them by identity, version counter, bit
    width and scale): only what memory safety needs is checked again (dtypes, sizes, contiguity,
    CPU), then the latents for NaN/inf in C. Returns False, having done nothing, when that does not
    hold or the C path is not in use; True when it projected (codes left unchanged)."""
    native = _native if _loaded else _extension()
    if native is None or not hasattr(native, "project_latent") or not (latent.is_cpu and codes.is_cpu and frozen.is_cpu):
        return False
    n = latent.numel()
    if (latent.dtype != _F32 or codes.dtype != _I32 or frozen.dtype != _U8 or codes.numel() != n
            or frozen.numel() != n or not (latent.is_contiguous() and codes.is_contiguous() and frozen.is_contiguous())):
        return False
    status, index = native.project_latent(latent.data_ptr(), codes.data_ptr(), frozen.data_ptr(), n, bits, scale,
                                          False, torch.get_num_threads())
    _raise_status(status, index, where, latent, codes, frozen, bits)
    return True


_F32, _I32, _U8 = torch.float32, torch.int32, torch.uint8
_WINDOW_WIDTHS = {torch.int16: 2, torch.int32: 4}


def build_windows(codes: torch.Tensor, frozen: torch.Tensor, bits: int, where: str) -> Optional[torch.Tensor]:
    """One window word per weight (``bitops.c``: the frozen prefix of the offset code tagged by a leading
    one), for :func:`project_windows_`: int16 storage when every frozen count is at most 15, else int32.
    Codes and frozen counts are checked as :func:`project_` checks them (BitError, nothing built). None
    when the C path does not serve these tensors (CUDA, the torch reference, an older build, or tensors
    that are not contiguous)."""
    native = _native if _loaded else _extension()
    if (native is None or not hasattr(native, "project_windows") or not (codes.is_cpu and frozen.is_cpu)
            or codes.dtype != _I32 or frozen.dtype != _U8 or codes.numel() != frozen.numel()
            or not (codes.is_contiguous() and frozen.is_contiguous())):
        return None
    n = codes.numel()
    narrow = n == 0 or int(frozen.max()) <= 15
    windows = torch.empty(codes.shape, dtype=torch.int16 if narrow else torch.int32)
    status, index = native.build_windows(codes.data_ptr(), frozen.data_ptr(), n, bits, windows.data_ptr(),
                                         2 if narrow else 4)
    _raise_status(status, index, where, codes=codes, frozen=frozen, bits=bits)
    return windows


def project_windows_(latent: torch.Tensor, windows: torch.Tensor, bits: int, scale: float, where: str) -> bool:
    """:func:`project_latent_` from the window words :func:`build_windows` made of the codes and frozen
    counts, which must not have changed since (``BitState.project_latent_`` keys the words by the
    tensors' identity and version counters): the same latents, value for value, reading 2 or 4 bytes a
    weight instead of 5. Checks what memory safety needs, then the latents for NaN/inf in C
    (NonFiniteError, nothing written). Returns False, having done nothing, when the C path does not
    serve these tensors; True when it projected."""
    native = _native if _loaded else _extension()
    width = _WINDOW_WIDTHS.get(windows.dtype)
    if (native is None or width is None or not (latent.is_cpu and windows.is_cpu) or latent.dtype != _F32
            or windows.numel() != latent.numel() or not (latent.is_contiguous() and windows.is_contiguous())):
        return False
    status, index = native.project_windows(latent.data_ptr(), windows.data_ptr(), width, latent.numel(), bits,
                                           scale, torch.get_num_threads())
    _raise_status(status, index, where, latent, bits=bits)
    return True


def pack_bitplanes(codes: torch.Tensor, bits: int, *, where: str = "pack_bitplanes") -> torch.Tensor:
    """int32 codes (any shape) in ``[-2^(N-1), 2^(N-1) - 1]`` to uint8 planes ``(bits, ceil(numel / 8))``.

    ``bits`` (the number of planes) may be 1..24: export keeps as few as one.
    """
    bits = checks.check_planes(bits, where)
    checks.check_tensor(codes, "codes", torch.int32, where)
    native = _fast(codes)
    if native is None:
        return reference.pack_bitplanes(codes, bits, where=where)
    flat = codes.reshape(-1).contiguous()
    out = torch.empty(bits, (flat.numel() + 7) // 8, dtype=torch.uint8)
    status, index = native.pack(flat.data_ptr(), flat.numel(), bits, out.data_ptr(), out.numel(),
                                torch.get_num_threads())
    _raise_status(status, index, where, codes=flat, bits=bits)
    return out


def unpack_bitplanes(packed: torch.Tensor, bits: int, n: int, *, where: str = "unpack_bitplanes") -> torch.Tensor:
    """Inverse of :func:`pack_bitplanes`: a flat int32 tensor of ``n`` codes."""
    bits, n = checks.check_unpack_args(packed, bits, n, where)
    native = _fast(packed)
    if native is None:
        return reference.unpack_bitplanes(packed, bits, n, where=where)
    planes = packed.contiguous()
    out = torch.empty(n, dtype=torch.int32)
    status, _ = native.unpack(planes.data_ptr(), planes.numel(), n, bits, out.data_ptr(), torch.get_num_threads())
    _raise_status(status, -1, where)
    return out
