"""Backbones built from Bit layers (or plain torch layers for ``backbone="float"``).

The MLP default, 784-1200, is BLIP's MNIST network (Shi et al., CVPR 2021,
arXiv 2105.04444, Sec. 5). The conv net is a small two-block CNN for 28x28 and
32x32 inputs.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from bitcl.errors import ConfigError
from bitcl.quant import DEFAULT_BITS, BitConv2d, BitLinear

BACKBONES = ("quant", "float")


def linear(kind: str, n_in: int, n_out: int, bits: int) -> nn.Module:
    return BitLinear(n_in, n_out, bits=bits) if kind == "quant" else nn.Linear(n_in, n_out)


def conv(kind: str, c_in: int, c_out: int, bits: int) -> nn.Module:
    return BitConv2d(c_in, c_out, 3, padding=1, bits=bits) if kind == "quant" else nn.Conv2d(c_in, c_out, 3, padding=1)


def _check_kind(kind: str) -> None:
    if kind not in BACKBONES:
        raise ConfigError(f"unknown backbone {kind!r}; choose from {', '.join(BACKBONES)}")


class MLP(nn.Module):
    """Flatten, then ``Linear -> ReLU`` per hidden width. ``out_features`` is the last width."""

    def __init__(self, input_shape: Sequence[int], hidden: Sequence[int] = (1200,), kind: str = "quant",
                 bits: int = DEFAULT_BITS):
        super().__init__()
        _check_kind(kind)
        if not hidden or any(h < 1 for h in hidden):
            raise ConfigError(f"hidden widths must be positive, got {list(hidden)}")
        n_in = 1
        for d in input_shape:
            n_in *= d
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [linear(kind, n_in, width, bits), nn.ReLU()]
            n_in = width
        self.layers = nn.Sequential(*layers)
        self.out_features = n_in

    def forward(self, x):
        return self.layers(x)


class ConvNet(nn.Module):
    """conv3x3(32)-ReLU-pool, conv3x3(64)-ReLU-pool, Linear(256)-ReLU; for 28x28 or 32x32 inputs."""

    def __init__(self, input_shape: Sequence[int], kind: str = "quant", bits: int = DEFAULT_BITS, width: int = 256):
        super().__init__()
        _check_kind(kind)
        if len(input_shape) != 3:
            raise ConfigError(f"the conv net needs (C, H, W) inputs, got {tuple(input_shape)}")
        c, h, w = input_shape
        self.layers = nn.Sequential(
            conv(kind, c, 32, bits), nn.ReLU(), nn.MaxPool2d(2),
            conv(kind, 32, 64, bits), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), linear(kind, 64 * (h // 4) * (w // 4), width, bits), nn.ReLU())
        self.out_features = width

    def forward(self, x):
        return self.layers(x)
