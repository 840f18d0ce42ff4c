"""Layer factory and backbone registry: a backbone is one file with ``@register_backbone``.

A backbone builder takes a :class:`BackboneArgs` and returns an ``nn.Module`` with an
``out_features`` attribute (the width its heads read). It builds every Linear/Conv2d
through ``args.layers`` (a :class:`LayerFactory`), so the same code gives the quantised
backbone (Bit layers) and the float one used by baselines.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Sequence

from torch import nn

from bitcl.constants import BN_POLICIES, LAYER_KINDS
from bitcl.errors import ConfigError
from bitcl.quant import DEFAULT_BITS, BitConv2d, BitLinear

KINDS = LAYER_KINDS  # re-exported; BN_POLICIES too (bitcl.models.norm)


@dataclass(frozen=True)
class LayerFactory:
    """Builds Bit layers (``kind="quant"``) or their float twins (``"float"``)."""

    kind: str = "quant"
    bits: int = DEFAULT_BITS

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"unknown backbone {self.kind!r}; choose from {', '.join(KINDS)}")

    @property
    def quantized(self) -> bool:
        return self.kind == "quant"

    def linear(self, n_in: int, n_out: int, bias: bool = True) -> nn.Module:
        if self.quantized:
            return BitLinear(n_in, n_out, bias=bias, bits=self.bits)
        return nn.Linear(n_in, n_out, bias=bias)

    def conv(self, c_in: int, c_out: int, kernel_size, stride=1, padding=0, bias: bool = True) -> nn.Module:
        if self.quantized:
            return BitConv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=bias, bits=self.bits)
        return nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=bias)


@dataclass(frozen=True)
class BackboneArgs:
    """Everything a backbone builder may use."""

    input_shape: tuple[int, ...]
    layers: LayerFactory = field(default_factory=LayerFactory)
    hidden: Sequence[int] = (1200,)     # MLP widths
    width: int = 0                      # base width of conv backbones (0: the backbone's default)
    bn: str = "first-task"              # batch-norm policy in a continual sequence (BN_POLICIES)
    dropout: float = 0.0


# the RunConfig settings a backbone may give its own default (the optimiser it trains well under)
TRAINING_KEYS = ("optimizer", "lr", "momentum")


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: its builder, its one-line summary (``bitcl list``) and its training
    defaults: ``{"optimizer", "lr", "momentum"}`` used where the user and the preset set none
    (empty: the engine's defaults, Adam 3e-3)."""

    name: str
    build: Callable[[BackboneArgs], nn.Module]
    summary: str
    training: Mapping[str, Any] = field(default_factory=dict)
    training_source: str = ""  # the search (script and result file) that chose ``training``


_BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(name: str, summary: str, training: Optional[Mapping[str, Any]] = None,
                      training_source: str = ""):
    """Decorator for a builder ``f(args: BackboneArgs) -> nn.Module``.

    ``training``: the backbone's default optimiser, learning rate and momentum (all three together,
    as chosen by a search on validation data; see :func:`training_defaults`), or None for the
    engine's defaults; ``training_source`` names that search (``bitcl list`` prints it)."""
    given = dict(training or {})
    if given and set(given) != set(TRAINING_KEYS):
        raise ValueError(f"backbone {name!r}: training defaults must give exactly {', '.join(TRAINING_KEYS)}, "
                         f"got {', '.join(sorted(given))}")
    training = {key: given[key] for key in TRAINING_KEYS if key in given}  # one order for --help and bitcl list
    if training and not training_source:
        raise ValueError(f"backbone {name!r}: training defaults need a training_source (the search that chose them)")

    def wrap(build):
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} registered twice")
        _BACKBONES[name] = BackboneSpec(name, build, summary, MappingProxyType(training), training_source)
        return build
    return wrap


def discover_backbones() -> None:
    import importlib
    import pkgutil
    package = importlib.import_module("bitcl.models")
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_") and module.name not in ("factory", "continual"):
            importlib.import_module(f"bitcl.models.{module.name}")


def backbone_spec(name: str) -> BackboneSpec:
    discover_backbones()
    if name not in _BACKBONES:
        raise ConfigError(f"unknown architecture {name!r}; choose from {', '.join(sorted(_BACKBONES))}")
    return _BACKBONES[name]


def training_defaults(name: str) -> dict[str, Any]:
    """The training defaults ``{"optimizer", "lr", "momentum"}`` of backbone ``name``; ``{}`` when it
    has none or is not registered (an unknown name is refused later, when the model is built)."""
    discover_backbones()
    spec = _BACKBONES.get(name)
    return dict(spec.training) if spec is not None else {}


def backbone_names() -> list[str]:
    discover_backbones()
    return sorted(_BACKBONES)
