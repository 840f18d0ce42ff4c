"""BitLinear and BitConv2d: drop-in ``nn.Linear`` / ``nn.Conv2d`` with N-bit codes.

Each quantised tensor (weight, and bias when present) keeps a float32 latent
(the ``nn.Parameter`` the optimiser updates, as in BLIP's reference code), the
int32 codes of its N-bit quantisation and a uint8 count of frozen most
significant bits per weight. The forward pass is exactly the parent's: the
latent always lies in the window its frozen bits allow (``project_latent_`` after
every step), so no quantiser runs per step. The codes are refreshed when read
(``bitcl.quant.state``, "lazy codes"): the layer refreshes stale codes before
``state_dict``, ``load_state_dict``, pickling, ``.to()`` and any read of its
``<name>_codes`` attribute. Bad constructor arguments raise
:class:`~bitcl.errors.ConfigError` (sizes, bit widths, range factor) and inputs that
are not real floating tensors :class:`~bitcl.errors.BitTypeError`, never a torch
crash deep inside.

BLIP: Shi et al., "Continual Learning via Bit-Level Information Preserving",
CVPR 2021, arXiv 2105.04444. The range ``range_factor / sqrt(fan_in)`` (6 by
default) follows its fixed-range quantisation.
"""
from __future__ import annotations

import math
import numbers
import os

import torch
from torch import nn

from bitcl.errors import BitError, BitTypeError, ConfigError

from .codes import check_bits, scale_for
from .state import BitState, refresh_all_codes, refresh_codes

DEFAULT_BITS = 20
DEFAULT_RANGE_FACTOR = 6.0


class _BitMixin:
    """Shared bit bookkeeping; the host class is an ``nn.Linear`` or ``nn.Conv2d``."""

    bits: int
    range_factor: float
    scales: dict
    inv_scales: dict

    def _setup_bits(self, bits: int, range_factor: float) -> None:
        self.bits = check_bits(bits, type(self).__name__, ConfigError)
        self.range_factor = _check_range_factor(range_factor, type(self).__name__)
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

    # -- lazy codes: every way out of the layer sees refreshed codes ------------------------
    def __getattr__(self, name: str):
        if name.endswith("_codes"):
            stale = self.__dict__.get("_stale_codes")
            if stale and name[:-len("_codes")] in stale:
                refresh_codes(self, name[:-len("_codes")])
        return super().__getattr__(name)

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        refresh_all_codes(self)
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # codes about to be overwritten need no refresh (a diverged latent could not give one)
        stale = self.__dict__.get("_stale_codes", set())
        for name in tuple(stale):
            if f"{prefix}{name}_codes" in state_dict:
                stale.discard(name)
        refresh_all_codes(self)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _apply(self, fn, recurse=True):
        refresh_all_codes(self)
        return super()._apply(fn, recurse)

    def __getstate__(self):
        refresh_all_codes(self)
        # a copy (pickle, copy.deepcopy) starts without the per-step projection's cache: the cache is keyed
        # by torch's version counters, which start again at 0 on the copy's tensors, so a kept entry could
        # pass for current with window words older than the copied counts
        return {key: value for key, value in super().__getstate__().items() if key != "_bit_checked"}

    def value_range(self) -> float:
        """Largest magnitude a weight can take, ``range_factor / sqrt(fan_in)``."""
        return self.range_factor / math.sqrt(self.weight[0].numel())

    def _bit_repr(self) -> str:
        return f", bits={self.bits}"

    def _check_input(self, x: object) -> None:
        """A real floating tensor of the weights' dtype (any float under autocast), else BitTypeError;
        one whose feature (channel) count is not the layer's, else BitError naming the layer."""
        if not isinstance(x, torch.Tensor):
            raise BitTypeError(f"{self._label()}: input must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype != self.weight.dtype and not (x.is_floating_point() and torch.is_autocast_enabled(x.device.type)):
            raise BitTypeError(f"{self._label()}: input must be {self.weight.dtype} (real floating point, "
                               f"like the weights), got {x.dtype}")
        self._check_input_shape(x)

    def _label(self) -> str:
        return type(self).__name__


def available_memory() -> int:
    """Physical memory of this machine in bytes (the ceiling for a layer's state)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


# Bytes a quantised weight keeps: float32 latent + its gradient, int32 code, uint8 frozen count.
BYTES_PER_WEIGHT = 4 + 4 + 4 + 1


def check_allocation(weights: int, where: str) -> None:
    """Refuse, before allocating, a layer whose state would not fit this machine's memory."""
    need = weights * BYTES_PER_WEIGHT
    limit = available_memory()
    if need > limit:
        raise ConfigError(f"{where}: {weights:,} weights need {need:,} bytes of state (latent, gradient, codes, "
                          f"frozen counts), more than this machine's {limit:,} bytes of memory; refusing to allocate")


def _check_size(value: object, name: str, where: str) -> int:
    """A positive int (not a bool, not a string): ConfigError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{where}: {name} must be a positive integer, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ConfigError(f"{where}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _check_sizes(value: object, name: str, where: str, minimum: int = 1) -> object:
    """An int >= ``minimum`` or a tuple of two (conv arguments); strings are refused."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    if isinstance(value, (tuple, list)) and len(value) != 2:
        raise ConfigError(f"{where}: {name} must be an integer or a pair, got {value!r}")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, numbers.Integral) or item < minimum:
            raise ConfigError(f"{where}: {name} must be integers >= {minimum}, got {value!r}")
    return tuple(int(i) for i in value) if isinstance(value, (tuple, list)) else int(value)


def _check_range_factor(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{where}: range_factor must be a positive number, got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{where}: range_factor must be a finite number > 0, got {value!r}")
    return float(value)


def _check_dtype(dtype: object, where: str) -> None:
    if dtype not in (None, torch.float32):
        raise BitTypeError(f"{where}: latent weights are float32, got dtype={dtype}")


class BitLinear(_BitMixin, nn.Linear):
    """``nn.Linear`` whose weight and bias are N-bit codes with per-bit freeze masks."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = DEFAULT_BITS,
                 range_factor: float = DEFAULT_RANGE_FACTOR, device=None, dtype=None):
        _check_dtype(dtype, "BitLinear")
        in_features = _check_size(in_features, "in_features", "BitLinear")
        out_features = _check_size(out_features, "out_features", "BitLinear")
        check_allocation(in_features * out_features + (out_features if bias else 0),
                         f"BitLinear({in_features}, {out_features})")
        nn.Linear.__init__(self, in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._setup_bits(bits, range_factor)

    def _label(self) -> str:
        return f"BitLinear({self.in_features}, {self.out_features})"

    def _check_input_shape(self, x: torch.Tensor) -> None:
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise BitError(f"{self._label()}: input has {x.shape[-1] if x.dim() else 0} features in its last "
                           f"dimension (shape {tuple(x.shape)}), the layer takes {self.in_features}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input(input)
        return nn.Linear.forward(self, input)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._bit_repr()


class BitConv2d(_BitMixin, nn.Conv2d):
    """``nn.Conv2d`` whose weight and bias are N-bit codes with per-bit freeze masks."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", bits: int = DEFAULT_BITS,
                 range_factor: float = DEFAULT_RANGE_FACTOR, device=None, dtype=None):
        where = "BitConv2d"
        _check_dtype(dtype, where)
        in_channels = _check_size(in_channels, "in_channels", where)
        out_channels = _check_size(out_channels, "out_channels", where)
        groups = _check_size(groups, "groups", where)
        kernel_size = _check_sizes(kernel_size, "kernel_size", where)
        stride, dilation = _check_sizes(stride, "stride", where), _check_sizes(dilation, "dilation", where)
        if not isinstance(padding, str):
            padding = _check_sizes(padding, "padding", where, minimum=0)
        kh, kw = kernel_size if isinstance(kernel_size, tuple) else (kernel_size, kernel_size)
        if in_channels % groups == 0:
            check_allocation(out_channels * (in_channels // groups) * kh * kw + (out_channels if bias else 0),
                             f"BitConv2d({in_channels}, {out_channels}, {kernel_size})")
        try:
            nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                               dilation=dilation, groups=groups, bias=bias, padding_mode=padding_mode,
                               device=device, dtype=dtype)
        except ValueError as error:  # groups that do not divide the channels, unknown padding modes...
            raise ConfigError(f"{where}: {error}") from error
        self._setup_bits(bits, range_factor)

    def _label(self) -> str:
        return f"BitConv2d({self.in_channels}, {self.out_channels}, {self.kernel_size})"

    def _check_input_shape(self, x: torch.Tensor) -> None:
        if x.dim() not in (3, 4) or x.shape[-3] != self.in_channels:
            raise BitError(f"{self._label()}: input must be (N, C, H, W) or (C, H, W) with C = {self.in_channels} "
                           f"channels, got shape {tuple(x.shape)}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input(input)
        return nn.Conv2d.forward(self, input)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._bit_repr()
