"""BitLinear and BitConv2d: drop-in ``nn.Linear`` / ``nn.Conv2d`` with N-bit codes.

Each quantised tensor (weight, and bias when present) keeps a float32 latent
(the ``nn.Parameter`` the optimiser updates, as in BLIP's reference code), the
int32 codes of its N-bit quantisation and a uint8 count of frozen most
significant bits per weight. The forward pass is exactly the parent's: the
latent always lies in the window its frozen bits allow (``project_`` after
every step), so no quantiser runs per step.

BLIP: Shi et al., "Continual Learning via Bit-Level Information Preserving",
CVPR 2021, arXiv 2105.04444. The range ``range_factor / sqrt(fan_in)`` (6 by
default) follows its fixed-range quantisation.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .quantizer import check_bits, scale_for
from .state import BitState

DEFAULT_BITS = 20
DEFAULT_RANGE_FACTOR = 6.0


class _BitMixin:
    """Shared bit bookkeeping; the host class is an ``nn.Linear`` or ``nn.Conv2d``."""

    bits: int
    range_factor: float
    scales: dict
    inv_scales: dict

    def _setup_bits(self, bits: int, range_factor: float) -> None:
        self.bits = check_bits(bits, type(self).__name__)
        if not (isinstance(range_factor, (int, float)) and math.isfinite(range_factor) and range_factor > 0):
            raise ValueError(f"{type(self).__name__}: range_factor must be a positive number, got {range_factor!r}")
        self.range_factor = float(range_factor)
        fan_in = self.weight[0].numel()
        value_range = self.range_factor / math.sqrt(fan_in)
        self.quantized_param_names = tuple(n for n in ("weight", "bias") if getattr(self, n) is not None)
        self.scales, self.inv_scales = {}, {}
        for name in self.quantized_param_names:
            param = getattr(self, name)
            scale = scale_for(value_range, self.bits)
            self.scales[name] = scale
            self.inv_scales[name] = float(torch.tensor(1.0 / scale, dtype=torch.float32))
            self.register_buffer(f"{name}_codes", torch.zeros(param.shape, dtype=torch.int32, device=param.device))
            self.register_buffer(f"{name}_frozen", torch.zeros(param.shape, dtype=torch.uint8, device=param.device))
        self.project_()

    def bit_states(self) -> list[BitState]:
        """One :class:`BitState` per quantised parameter (weight, then bias)."""
        return [BitState(self, name) for name in self.quantized_param_names]

    @torch.no_grad()
    def project_(self) -> None:
        """Project every quantised parameter onto its frozen-bit windows."""
        for state in self.bit_states():
            state.project_()

    def value_range(self) -> float:
        """Largest magnitude a weight can take, ``range_factor / sqrt(fan_in)``."""
        return self.range_factor / math.sqrt(self.weight[0].numel())

    def _bit_repr(self) -> str:
        return f", bits={self.bits}"


class BitLinear(_BitMixin, nn.Linear):
    """``nn.Linear`` whose weight and bias are N-bit codes with per-bit freeze masks."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = DEFAULT_BITS,
                 range_factor: float = DEFAULT_RANGE_FACTOR, device=None, dtype=None):
        if dtype not in (None, torch.float32):
            raise ValueError(f"BitLinear: latent weights are float32, got dtype={dtype}")
        nn.Linear.__init__(self, in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._setup_bits(bits, range_factor)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._bit_repr()


class BitConv2d(_BitMixin, nn.Conv2d):
    """``nn.Conv2d`` whose weight and bias are N-bit codes with per-bit freeze masks."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", bits: int = DEFAULT_BITS,
                 range_factor: float = DEFAULT_RANGE_FACTOR, device=None, dtype=None):
        if dtype not in (None, torch.float32):
            raise ValueError(f"BitConv2d: latent weights are float32, got dtype={dtype}")
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                           dilation=dilation, groups=groups, bias=bias, padding_mode=padding_mode,
                           device=device, dtype=dtype)
        self._setup_bits(bits, range_factor)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._bit_repr()
