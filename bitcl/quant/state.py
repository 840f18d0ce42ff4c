"""BitState: the bit-level view of one quantised parameter.

Implements the freezing rules of BLIP (Shi et al., CVPR 2021, arXiv 2105.04444,
Sec. 3.3, "bit freezing"): a weight with k frozen bits may take only values
whose top k bits of the offset-binary code u = c + 2^(N-1) equal the frozen
ones, u in [p 2^(N-k), (p+1) 2^(N-k) - 1].

Lazy codes: the training step calls :meth:`BitState.project_latent_`, which clamps
the latent but leaves the codes buffer as it was (the C path); the layer records the
tensor as *stale* and every reader of the codes (:attr:`BitState.codes`, the layer's
``<name>_codes`` attribute, ``state_dict``, ``load_state_dict``, pickling, ``.to()``)
first refreshes them with :func:`refresh_codes`. A stale buffer still holds the right
top ``k`` bits (no projection changes them), which is all the next projection reads,
and the refresh computes what refreshing after every step would have left, bit for bit.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from bitcl import kernels
from bitcl.errors import BitError, BitTypeError

from . import codes as bitcodes

if TYPE_CHECKING:  # brevitas is imported only when a view is asked for
    from brevitas.quant_tensor import IntQuantTensor


class BitState:
    """Codes, frozen counts and bit views of one quantised parameter of ``layer``.

    A view, not a copy: it reads the layer's current parameter and buffers, so
    it stays valid after ``model.to(...)`` or ``load_state_dict``.
    """

    def __init__(self, layer: nn.Module, param_name: str, display_name: str | None = None):
        self.layer = layer
        self.param_name = param_name
        self.display_name = display_name or f"{type(layer).__name__}.{param_name}"

    # -- stored state -------------------------------------------------------
    @property
    def bits(self) -> int:
        return self.layer.bits

    @property
    def scale(self) -> float:
        return self.layer.scales[self.param_name]

    @property
    def latent(self) -> nn.Parameter:
        """The float32 latent parameter the optimiser updates."""
        return getattr(self.layer, self.param_name)

    @property
    def codes(self) -> torch.Tensor:
        """int32 signed codes c, same shape as the parameter (real value = scale * c); refreshed
        first when the last projection left them stale (module docstring)."""
        refresh_codes(self.layer, self.param_name)
        return self.layer._buffers[f"{self.param_name}_codes"]

    @property
    def frozen(self) -> torch.Tensor:
        """uint8 number k of frozen most significant bits, per weight."""
        return getattr(self.layer, f"{self.param_name}_frozen")

    # -- views ----------------------------------------------------------------
    def offset_codes(self) -> torch.Tensor:
        """Offset-binary codes u = c + 2^(N-1), in [1, 2^N - 1]."""
        return bitcodes.offset_codes(self.codes, self.bits)

    def bitplanes(self) -> torch.Tensor:
        """bool tensor (N, *shape) of the bits of u, most significant plane first."""
        return bitcodes.bitplanes(self.codes, self.bits)

    def freeze_mask(self) -> torch.Tensor:
        """bool tensor (N, *shape): True where that plane's bit is frozen (plane index < k)."""
        return bitcodes.freeze_mask(self.frozen, self.bits)

    def quant_weight(self) -> "IntQuantTensor":
        """brevitas ``IntQuantTensor`` whose ``.int()`` is :attr:`codes` and ``.scale`` the scale."""
        from .brevitas_view import int_quant_tensor
        return int_quant_tensor(self.codes, self.scale, self.bits)

    def dequantized(self) -> torch.Tensor:
        """The real values ``scale * codes`` (float32)."""
        return self.codes.to(torch.float32) * self.scale

    def frozen_bits(self) -> int:
        """Total number of frozen bits in this tensor."""
        return int(self.frozen.sum(dtype=torch.int64))

    def total_bits(self) -> int:
        return self.codes.numel() * self.bits

    # -- updates ----------------------------------------------------------------
    def project_(self) -> None:
        """Move each latent weight into the window its frozen bits allow; refresh codes.

        Exact whatever the optimiser did: no frozen bit ever changes. A NaN or
        infinite latent raises :class:`~bitcl.errors.NonFiniteError` (a
        ``FloatingPointError``) naming the tensor, and changes nothing; so do codes
        or frozen counts that break the contract (:class:`~bitcl.errors.BitError`).
        """
        # runs after every optimiser step: read the module's dicts directly (nn.Module.__getattr__ is slow)
        layer, name = self.layer, self.param_name
        buffers = layer._buffers
        kernels.project_(layer._parameters[name], buffers[name + "_codes"], buffers[name + "_frozen"],
                         layer.bits, layer.scales[name], layer.inv_scales[name], where=self.display_name)
        stale = layer.__dict__.get("_stale_codes")
        if stale:
            stale.discard(name)  # the codes are those of the latent just projected

    def project_latent_(self) -> None:
        """The per-step projection: the latent moved into its window exactly as :meth:`project_`
        moves it, the codes refreshed only when next read (module docstring).

        Each step reads the latent (checked for NaN/inf, :class:`~bitcl.errors.NonFiniteError`)
        and one window word per weight (2 bytes when every frozen count is at most 15, else 4: the
        frozen prefix of the code and its length, :func:`bitcl.kernels.build_windows`) instead of the
        code and the frozen count (5 bytes, which right after a training step are out of the cache).
        The arguments are checked in full (shapes, dtypes, scales, code and frozen-count ranges) and
        the words built on the first step and whenever a tensor, the codes' or frozen counts'
        version counter (bumped by every in-place write through torch), the bit width or the scale
        changed since; otherwise only what memory safety needs (dtypes, sizes, contiguity, device).
        Writes that bypass torch (``.data`` assignment, numpy views) are not seen until the codes
        are next read, which checks them in full and projects with them.
        """
        layer, name = self.layer, self.param_name
        buffers = layer._buffers
        latent, codes, frozen = layer._parameters[name], buffers[name + "_codes"], buffers[name + "_frozen"]
        bits, scale = layer.bits, layer.scales[name]
        checked = layer.__dict__.setdefault("_bit_checked", {})
        seen = checked.get(name)
        if (seen is not None and seen[0] is latent and seen[1] is codes and seen[2] is frozen
                and seen[3] == _versions(codes, frozen, bits, scale)
                and (kernels.project_windows_(latent, seen[4], bits, scale, self.display_name) if seen[4] is not None
                     else kernels.project_latent_prechecked_(latent, codes, frozen, bits, scale, self.display_name))):
            layer.__dict__["_stale_codes"].add(name)
            return
        stale = kernels.project_latent_(latent, codes, frozen, bits, scale, layer.inv_scales[name],
                                        where=self.display_name)
        stale_names = layer.__dict__.setdefault("_stale_codes", set())
        if stale:  # the C path: remember what was checked, so that the next steps skip it, and the windows
            checked[name] = (latent, codes, frozen, _versions(codes, frozen, bits, scale),
                             kernels.build_windows(codes, frozen, bits, self.display_name))
            stale_names.add(name)
        else:
            checked.pop(name, None)
            stale_names.discard(name)

    def check(self) -> None:
        """Validate codes and frozen counts (:func:`bitcl.quant.codes.check_codes`)."""
        bitcodes.check_codes(self.codes, self.frozen, self.bits, self.display_name)

    @torch.no_grad()
    def freeze(self, extra: torch.Tensor, reset_free_bits: bool = True) -> None:
        """Freeze ``extra`` more most significant bits per weight (clamped to N).

        With ``reset_free_bits`` (BLIP's choice, docs/methods.md) the remaining free
        bits are set to ``100...0``, the middle of the weight's new window, so the
        next task can move it either way by half the window; otherwise the codes
        are kept. The latent is set to the resulting quantised value.
        """
        if not isinstance(extra, torch.Tensor):
            raise BitTypeError(f"{self.display_name}: extra must be a tensor, got {type(extra).__name__}")
        if tuple(extra.shape) != tuple(self.codes.shape):
            raise BitError(f"{self.display_name}: extra has shape {tuple(extra.shape)}, "
                           f"expected {tuple(self.codes.shape)}")
        if extra.dtype.is_floating_point or extra.dtype.is_complex or extra.dtype == torch.bool:
            raise BitTypeError(f"{self.display_name}: extra must be an integer tensor, got {extra.dtype}")
        if bool((extra < 0).any()):
            raise BitError(f"{self.display_name}: extra frozen bits must be >= 0")
        bits = self.bits
        self.check()
        # clamp in int64 first: a huge extra must not wrap around in int32
        k = (self.frozen.to(torch.int64) + extra.to(self.codes.device, torch.int64).clamp(max=bits)).clamp_(max=bits)
        self.frozen.copy_(k.to(torch.uint8))
        if reset_free_bits:
            self.codes.copy_(bitcodes.window_middle(self.codes, self.frozen, bits))
        self.latent.data.copy_(self.dequantized())


def _versions(codes: torch.Tensor, frozen: torch.Tensor, bits: int, scale: float) -> tuple:
    """With the tensors' identity, what identifies checked arguments of the per-step projection: torch's
    version counters of the codes and frozen counts (bumped by every in-place write through torch),
    the bit width and the scale."""
    return codes._version, frozen._version, bits, scale


def refresh_codes(layer: nn.Module, name: str) -> None:
    """Bring ``layer``'s ``<name>_codes`` up to date if :meth:`BitState.project_latent_` left them
    stale: :func:`bitcl.kernels.project_` on a copy of the latent, so the latent is not written
    (it already lies in its window: the copy's clamp changes nothing) and the codes are what a
    full projection after the last step would have left. Raises as :func:`bitcl.kernels.project_`
    (a NaN latent, codes or frozen counts out of range), leaving the codes stale."""
    stale = layer.__dict__.get("_stale_codes")
    if not stale or name not in stale:
        return
    buffers = layer._buffers
    with torch.no_grad():
        kernels.project_(layer._parameters[name].detach().clone(), buffers[name + "_codes"],
                         buffers[name + "_frozen"], layer.bits, layer.scales[name], layer.inv_scales[name],
                         where=f"{type(layer).__name__}.{name}")
    stale.discard(name)


def refresh_all_codes(layer: nn.Module) -> None:
    """:func:`refresh_codes` for every stale quantised tensor of ``layer``."""
    for name in tuple(layer.__dict__.get("_stale_codes", ())):
        refresh_codes(layer, name)


def bit_states(model: nn.Module):
    """Yield ``(name, BitState)`` for every quantised parameter of ``model``.

    ``name`` is the parameter's key in ``model.state_dict()`` (e.g. ``"0.weight"``).
    """
    for module_name, module in model.named_modules():
        names = getattr(module, "quantized_param_names", None)
        if names is None:
            continue
        for param_name in names:
            full = f"{module_name}.{param_name}" if module_name else param_name
            yield full, BitState(module, param_name, full)


def project_(model: nn.Module) -> None:
    """Apply :meth:`BitState.project_` to every quantised parameter of ``model``."""
    for _, state in bit_states(model):
        state.project_()


def project_latents_(states) -> None:
    """Apply :meth:`BitState.project_latent_` (the per-step projection) to every state of ``states``."""
    for state in states:
        state.project_latent_()
