"""``quantize_``: turn any model's ``nn.Linear`` / ``nn.Conv2d`` into bitcl's Bit layers, in place.

In the spirit of torchao's ``quantize_(model, config)``: a typed :class:`BitConfig` says which
layers (``filter_fn(module, name)``, ``skip``) and how (bits, range); every selected layer is
replaced by a :class:`~bitcl.quant.BitLinear` / :class:`~bitcl.quant.BitConv2d` built through its
public constructor, its float weights copied into the latent, then projected (codes refreshed).
:func:`dequantize_` is the reverse, for export to plain PyTorch.

The Bit layers quantise over a fixed symmetric range ``[-R, R]`` with ``R = range_factor /
sqrt(fan_in)`` and N-bit narrow-range codes (BLIP: Shi et al., "Continual Learning via Bit-Level
Information Preserving", CVPR 2021, arXiv 2105.04444, Sec. 3.2). A trained model does not follow
BLIP's from-scratch range ``6 / sqrt(fan_in)``, so ``R`` is chosen per layer from its weights:

* ``range="auto"`` (default): at ``bits >= 16`` (continual learning; BLIP's 20 bits),
  ``R = max(range_factor / sqrt(fan_in), headroom * max|w|)``: BLIP's range, the one bitcl's own
  Bit layers use, unless the weights need more; below 16 bits, as ``"max"``. BLIP's frozen-bit
  count does not depend on R, so the window ``2R / 2^k`` a weight keeps for later tasks scales
  with R; ``R = max|w|`` left a freshly initialised layer 1/6 of BLIP's range (its weights
  saturated at R in the first task) and a second task could not be learned (issue 22). With 16
  or more bits the wider range still leaves at least 13 bits of resolution; with few bits the
  resolution is what matters, so the tight range is kept.
* ``range="max"``: ``R = headroom * max|w|`` (weight and bias). Nothing is clipped; every
  value moves by at most half a step ``R / (2^(N-1) - 1)`` onto the grid.
* ``range="percentile"``: ``R = headroom * quantile(|w|, percentile)``. Clips the few largest
  weights (counted in the report) for a finer step: worth it at low bit widths only.
* ``range="fixed"``: BLIP's ``range_factor / sqrt(fan_in)`` (``range_factor`` 6 by default).

``headroom > 1`` leaves room for weights to grow in later tasks (a weight can never leave
``[-R, R]``), at the price of ``log2(headroom)`` bits of resolution.

At conversion every latent is set to its quantised value ``scale * code``, so the converted
model's forward pass is exactly what ``dequantize_`` / ``bitcl export`` ship (at 4 bits a float
forward that kept the unquantised latents differed from the exported codes by up to half a step
per weight). A bare ``nn.Linear`` / ``nn.Conv2d`` is converted in place too (its class becomes the
Bit layer's; its parameters stay the same objects).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from bitcl.errors import ConfigError
from bitcl.quant import (DEFAULT_BITS, DEFAULT_RANGE_FACTOR, MAX_BITS, MIN_BITS, BitConv2d, BitLinear, bit_states,
                         max_code)
from bitcl.settings import setting, validate

RANGES = ("auto", "max", "percentile", "fixed")
AUTO_WIDE_FROM_BITS = 16  # range="auto": BLIP's range from this many bits on (module docstring)
# float32 rounding of the scale may put the top code one ulp below max|w|; this margin keeps
# range="max" clip-free (it costs ~1e-6 of the resolution)
_RANGE_MARGIN = 1.0 + 1e-6

FilterFn = Callable[[nn.Module, str], bool]


@dataclass
class BitConfig:
    """How :func:`quantize_` converts a model (every field is checked by :meth:`validate`)."""

    bits: int = setting(DEFAULT_BITS, "bits per quantised weight", low=MIN_BITS, high=MAX_BITS)
    # (module, fully qualified name) -> convert it? default: all
    filter_fn: Optional[FilterFn] = setting(None, "which Linear/Conv2d modules to convert")
    # names (and everything under them) kept float, e.g. ("fc",)
    skip: Sequence[str] = setting((), "module names kept float")
    range: str = setting("auto", "how R is chosen (module docstring)", choices=RANGES)
    percentile: float = setting(99.99, 'range="percentile": the quantile of |w|, in percent', above=0.0, high=100.0)
    headroom: float = setting(1.0, "R multiplier (>= 1 keeps every weight representable)", above=0.0)
    range_factor: float = setting(DEFAULT_RANGE_FACTOR, 'range="fixed" / "auto": R = range_factor / sqrt(fan_in)',
                                  above=0.0)
    range_factors: Optional[dict[str, float]] = field(default=None, repr=False,
                                                      metadata={"help": "exact per-layer factors"})

    def validate(self) -> "BitConfig":
        """Every field against its schema (:func:`bitcl.settings.validate`), then what a schema
        cannot say: a callable filter, a sequence (not a string) of names, positive factors."""
        validate(self, label=lambda name: f"BitConfig.{name}")
        if self.filter_fn is not None and not callable(self.filter_fn):
            raise ConfigError("BitConfig.filter_fn must be callable as filter_fn(module, name)")
        if isinstance(self.skip, str):
            raise ConfigError("BitConfig.skip must be a sequence of module names, e.g. ('fc',), not a string")
        for name, factor in (self.range_factors or {}).items():
            if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
                raise ConfigError(f"BitConfig.range_factors[{name!r}] must be a positive number, got {factor!r}")
        return self

    def selects(self, module: nn.Module, name: str) -> bool:
        if isinstance(module, (BitLinear, BitConv2d)) or not isinstance(module, (nn.Linear, nn.Conv2d)):
            return False
        if any(name == s or name.startswith(s + ".") for s in self.skip):
            return False
        return self.filter_fn is None or bool(self.filter_fn(module, name))


@dataclass
class LayerReport:
    """Quantisation error of one converted layer (weight and bias together)."""

    kind: str                 # "BitLinear" or "BitConv2d"
    values: int               # number of quantised values (weight and bias)
    fan_in: int
    range_factor: float
    value_range: float        # R
    scale: float              # one code step
    clipped_fraction: float   # share of values outside [-R, R] (clipped to the range)
    clip_max_error: float     # max |w - clamp(w)|
    code_rms_error: float     # rms |w - scale * code|: the conversion error (forward pass and export alike)
    code_max_error: float
    relative_rms_error: float  # code_rms_error / rms(w)


@dataclass
class QuantizationReport:
    """What :func:`quantize_` did: per converted layer, its range and its errors."""

    bits: int
    layers: dict[str, LayerReport] = field(default_factory=dict)
    kept_float: list[str] = field(default_factory=list)  # Linear / Conv2d layers not converted
    kept_float_values: int = 0                            # their weights and biases

    @property
    def totals(self) -> dict:
        """The whole conversion: layers and values converted (and their bits), values kept float,
        values clipped, and the conversion error over every converted value."""
        values = sum(r.values for r in self.layers.values())
        square_sum = sum(r.code_rms_error ** 2 * r.values for r in self.layers.values())
        signal = sum((r.code_rms_error / r.relative_rms_error) ** 2 * r.values if r.relative_rms_error > 0 else 0.0
                     for r in self.layers.values())
        return {"layers": len(self.layers), "values": values, "bits": values * self.bits,
                "kept_float_layers": len(self.kept_float), "kept_float_values": self.kept_float_values,
                "clipped_values": round(sum(r.clipped_fraction * r.values for r in self.layers.values())),
                "code_rms_error": math.sqrt(square_sum / values) if values else 0.0,
                "code_max_error": max((r.code_max_error for r in self.layers.values()), default=0.0),
                "relative_rms_error": math.sqrt(square_sum / signal) if signal > 0 else 0.0}

    @property
    def range_factors(self) -> dict[str, float]:
        return {name: layer.range_factor for name, layer in self.layers.items()}

    def same_layers(self) -> BitConfig:
        """A config that converts a model of the same architecture into exactly these layers (same
        ranges, whatever its weights), so that this model's ``state_dict`` loads into it."""
        return BitConfig(bits=self.bits, filter_fn=lambda m, name: name in self.layers,
                         range_factors=self.range_factors)

    def to_json(self) -> dict:
        return {"bits": self.bits, "kept_float": self.kept_float, "totals": self.totals,
                "layers": {name: vars(layer) for name, layer in self.layers.items()}}

    def __str__(self) -> str:
        lines = [f"{'layer':40s} {'kind':10s} {'range':>10s} {'clipped':>8s} {'rel.rms':>9s}"]
        for name, r in self.layers.items():
            lines.append(f"{name:40s} {r.kind:10s} {r.value_range:10.4g} {r.clipped_fraction:8.2%} "
                         f"{r.relative_rms_error:9.2e}")
        t = self.totals
        lines.append(f"{'total':40s} {t['layers']:>3d} layers, {t['values']:,} values ({t['bits']:,} bits), "
                     f"{t['clipped_values']:,} clipped, rel.rms {t['relative_rms_error']:.2e}")
        if self.kept_float:
            lines.append(f"kept float: {', '.join(self.kept_float)} ({t['kept_float_values']:,} values)")
        return "\n".join(lines)


def _value_range(values: torch.Tensor, fan_in: int, config: BitConfig) -> float:
    if config.range == "fixed":
        return config.range_factor / math.sqrt(fan_in)
    magnitude = values.abs()
    if config.range in ("auto", "max"):
        top = float(magnitude.max())
    else:  # kthvalue: torch.quantile refuses tensors above 16M elements
        k = max(1, math.ceil(config.percentile / 100 * magnitude.numel()))
        top = float(magnitude.kthvalue(k).values)
    return config.headroom * top


def _bit_layer(module: nn.Module, bits: int, range_factor: float) -> nn.Module:
    w = module.weight
    common = dict(bias=module.bias is not None, bits=bits, range_factor=range_factor, device=w.device)
    if isinstance(module, nn.Conv2d):
        if isinstance(module.padding, str) and module.padding == "same" and module.padding_mode != "zeros":
            raise ConfigError("quantize_: Conv2d with padding='same' and a non-zero padding_mode is not supported")
        return BitConv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                         module.dilation, module.groups, padding_mode=module.padding_mode, **common)
    return BitLinear(module.in_features, module.out_features, **common)


def _float_layer(module: nn.Module) -> nn.Module:
    w = module.weight
    common = dict(bias=module.bias is not None, device=w.device, dtype=w.dtype)
    if isinstance(module, nn.Conv2d):
        return nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                         module.dilation, module.groups, padding_mode=module.padding_mode, **common)
    return nn.Linear(module.in_features, module.out_features, **common)


def _carry_over(old: nn.Module, new: nn.Module) -> None:
    """Train/eval mode, frozen parameters and forward hooks move to the replacement."""
    new.train(old.training)
    for name in ("weight", "bias"):
        if getattr(old, name, None) is not None:
            getattr(new, name).requires_grad_(getattr(old, name).requires_grad)
    new._forward_pre_hooks.update(old._forward_pre_hooks)
    new._forward_hooks.update(old._forward_hooks)


def _replace(model: nn.Module, convert: Callable[[str, nn.Module], Optional[nn.Module]]) -> None:
    """Replace every submodule for which ``convert(name, module)`` returns a module (a module
    reachable under several names is converted once and shared as before)."""
    targets: dict[int, Optional[nn.Module]] = {}
    for parent_name, parent in list(model.named_modules(remove_duplicate=False)):
        for child_name, child in list(parent._modules.items()):  # named_children() skips repeats
            if child is None:
                continue
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            if id(child) not in targets:
                targets[id(child)] = convert(full, child)
            if targets[id(child)] is not None:
                setattr(parent, child_name, targets[id(child)])


@torch.no_grad()
def _layer_report(float_values: torch.Tensor, layer: nn.Module) -> LayerReport:
    states = layer.bit_states()
    codes = torch.cat([(s.codes.reshape(-1).to(torch.float64) * s.scale) for s in states])
    original = float_values.to(torch.float64)
    value_range = max_code(layer.bits) * layer.scales["weight"]
    clipped = original.clamp(-value_range, value_range)
    code_error = original - codes
    rms = float(original.pow(2).mean().sqrt())
    code_rms = float(code_error.pow(2).mean().sqrt())
    return LayerReport(kind=type(layer).__name__, values=original.numel(), fan_in=layer.weight[0].numel(), range_factor=layer.range_factor,
                       value_range=value_range, scale=layer.scales["weight"],
                       clipped_fraction=float((original.abs() > value_range).double().mean()),
                       clip_max_error=float((original - clipped).abs().max()),
                       code_rms_error=code_rms, code_max_error=float(code_error.abs().max()),
                       relative_rms_error=code_rms / rms if rms > 0 else 0.0)


def _range_factor(name: str, module: nn.Module, values: torch.Tensor, config: BitConfig) -> float:
    fan_in = module.weight[0].numel()
    if config.range_factors is not None and name in config.range_factors:
        return float(config.range_factors[name])
    value_range = _value_range(values, fan_in, config)
    if config.range == "auto" and config.bits >= AUTO_WIDE_FROM_BITS \
            and config.range_factor >= value_range * math.sqrt(fan_in) * _RANGE_MARGIN:
        return config.range_factor  # BLIP's range holds the weights: exactly bitcl's own layers' range
    # an all-zero layer: BLIP's default range
    return value_range * math.sqrt(fan_in) * _RANGE_MARGIN if value_range > 0 else DEFAULT_RANGE_FACTOR


@torch.no_grad()
def _snap_to_grid(layer: nn.Module) -> None:
    """Set every latent to ``scale * code``: the forward pass then computes what export ships."""
    for state in layer.bit_states():
        state.latent.copy_(state.dequantized())


def _float_values(module: nn.Module) -> torch.Tensor:
    values = module.weight.detach().reshape(-1)
    if module.bias is not None:
        values = torch.cat([values, module.bias.detach().reshape(-1)])
    return values


def _check_float32(name: str, module: nn.Module) -> None:
    if module.weight.dtype != torch.float32:
        raise ConfigError(f"quantize_: {name or 'the layer'} holds {module.weight.dtype} weights; Bit layers keep "
                          "float32 latents (call model.float() first)")


def _convert_root(layer: nn.Module, config: BitConfig, report: QuantizationReport) -> None:
    """A bare ``nn.Linear`` / ``nn.Conv2d``: becomes its Bit layer in place (class swap; the same
    parameter objects, hooks and mode), so that ``quantize_(layer)`` works like ``quantize_(model)``."""
    if type(layer) not in (nn.Linear, nn.Conv2d):
        raise ConfigError(f"quantize_: a bare {type(layer).__name__} (a subclass of nn.Linear / nn.Conv2d) cannot "
                          "be converted in place; wrap it, e.g. nn.Sequential(layer)")
    _check_float32("", layer)
    if isinstance(layer, nn.Conv2d) and isinstance(layer.padding, str) and layer.padding == "same" \
            and layer.padding_mode != "zeros":
        raise ConfigError("quantize_: Conv2d with padding='same' and a non-zero padding_mode is not supported")
    values = _float_values(layer)
    factor = _range_factor("", layer, values, config)
    layer.__class__ = BitConv2d if isinstance(layer, nn.Conv2d) else BitLinear
    layer._setup_bits(config.bits, factor)
    _snap_to_grid(layer)
    report.layers[""] = _layer_report(values, layer)


def quantize_(model: nn.Module, config: Optional[BitConfig] = None) -> tuple[nn.Module, QuantizationReport]:
    """Replace ``model``'s selected ``nn.Linear`` / ``nn.Conv2d`` by Bit layers, in place.

    Each Bit layer gets the float weights, clipped to ``[-R, R]`` (see the module docstring for R)
    and rounded onto the N-bit grid, as its latent and codes; nothing is frozen yet. The converted
    model computes exactly what its export ships. ``model`` may itself be a bare ``nn.Linear`` or
    ``nn.Conv2d`` (reported under the name ``""``). Returns the model and a
    :class:`QuantizationReport` of the quantisation error per layer and in total. Raises
    ConfigError for a bad config, a non-float32 layer, or a config that selects no layer.
    """
    config = (config or BitConfig()).validate()
    report = QuantizationReport(bits=config.bits)
    if isinstance(model, (nn.Linear, nn.Conv2d)) and config.selects(model, ""):
        _convert_root(model, config, report)
        return model, report

    def convert(name: str, module: nn.Module) -> Optional[nn.Module]:
        if not config.selects(module, name):
            if isinstance(module, (nn.Linear, nn.Conv2d)) and not isinstance(module, (BitLinear, BitConv2d)):
                report.kept_float.append(name)
                report.kept_float_values += _float_values(module).numel()
            return None
        _check_float32(name, module)
        values = _float_values(module)
        layer = _bit_layer(module, config.bits, _range_factor(name, module, values, config))
        with torch.no_grad():
            layer.weight.copy_(module.weight)
            if module.bias is not None:
                layer.bias.copy_(module.bias)
        layer.project_()
        _snap_to_grid(layer)
        _carry_over(module, layer)
        report.layers[name] = _layer_report(values, layer)
        return layer

    _replace(model, convert)
    if not report.layers:
        raise ConfigError("quantize_: the config selects no nn.Linear or nn.Conv2d layer of this model")
    return model, report


@torch.no_grad()
def dequantize_(model: nn.Module, weights: str = "codes") -> nn.Module:
    """Replace every Bit layer of ``model`` by the plain ``nn.Linear`` / ``nn.Conv2d``, in place.

    ``weights="codes"`` (default) exports the deployed values ``scale * codes``, as ``bitcl
    export`` does; ``weights="latent"`` copies the float latents, which reproduces the Bit
    model's forward pass exactly (the latent is what it computes with).
    """
    if weights not in ("codes", "latent"):
        raise ConfigError(f"dequantize_: weights must be 'codes' or 'latent', got {weights!r}")
    if type(model) in (BitLinear, BitConv2d):  # a bare Bit layer: back to its float class, in place
        for state in model.bit_states():
            source = state.dequantized() if weights == "codes" else state.latent.detach().clone()
            state.latent.copy_(source)
            for suffix in ("_codes", "_frozen"):
                del model._buffers[state.param_name + suffix]
        # _stale_codes / _bit_checked: the lazy-codes bookkeeping (bitcl.quant.state), which holds the buffers
        for attribute in ("bits", "range_factor", "scales", "inv_scales", "quantized_param_names", "_stale_codes",
                          "_bit_checked"):
            model.__dict__.pop(attribute, None)
        model.__class__ = nn.Conv2d if isinstance(model, nn.Conv2d) else nn.Linear
        return model

    def convert(name: str, module: nn.Module) -> Optional[nn.Module]:
        if not isinstance(module, (BitLinear, BitConv2d)):
            return None
        layer = _float_layer(module)
        for state in module.bit_states():
            source = state.dequantized() if weights == "codes" else state.latent.detach()
            getattr(layer, state.param_name).copy_(source)
        _carry_over(module, layer)
        return layer

    _replace(model, convert)
    return model


def quantized_names(model: nn.Module) -> list[str]:
    """Names of ``model``'s quantised parameters (``"layer1.0.conv1.weight"``...)."""
    return [name for name, _ in bit_states(model)]
