"""The MLP and the small ConvNet, built from Bit layers (or float layers for baselines).

The MLP default, 784-1200, is BLIP's MNIST network (Shi et al., CVPR 2021,
arXiv 2105.04444, Sec. 5). The conv net is a small two-block CNN for 28x28 and
32x32 inputs.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from bitcl.constants import LAYER_KINDS as BACKBONES  # re-exported: bitcl.models.BACKBONES
from bitcl.errors import ConfigError
from .factory import BackboneArgs, LayerFactory, register_backbone


class MLP(nn.Module):
    """Flatten, then ``Linear -> ReLU`` per hidden width. ``out_features`` is the last width."""

    def __init__(self, input_shape: Sequence[int], hidden: Sequence[int] = (1200,),
                 layers: LayerFactory = LayerFactory()):
        super().__init__()
        make = layers
        if not hidden or any(not isinstance(h, int) or h < 1 for h in hidden):
            raise ConfigError(f"hidden widths must be positive integers, got {list(hidden)}")
        n_in = 1
        for d in input_shape:
            n_in *= d
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [make.linear(n_in, width), nn.ReLU()]
            n_in = width
        self.layers = nn.Sequential(*layers)
        self.out_features = n_in

    def forward(self, x):
        return self.layers(x)


class ConvNet(nn.Module):
    """conv3x3(32)-ReLU-pool, conv3x3(64)-ReLU-pool, Linear(256)-ReLU; for 28x28 or 32x32 inputs."""

    def __init__(self, input_shape: Sequence[int], layers: LayerFactory = LayerFactory(), width: int = 256):
        super().__init__()
        make = layers
        if len(input_shape) != 3:
            raise ConfigError(f"the conv net needs (C, H, W) inputs, got {tuple(input_shape)}")
        c, h, w = input_shape
        self.layers = nn.Sequential(
            make.conv(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            make.conv(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), make.linear(64 * (h // 4) * (w // 4), width), nn.ReLU())
        self.out_features = width

    def forward(self, x):
        return self.layers(x)


@register_backbone("mlp", "MLP (BLIP's MNIST net: 784-1200 by default; --hidden)")
def _mlp(args: BackboneArgs) -> nn.Module:
    return MLP(args.input_shape, args.hidden, args.layers)


@register_backbone("conv", "small CNN: two conv3x3 blocks (32, 64) and a 256-unit layer, 28x28 or 32x32 inputs")
def _conv(args: BackboneArgs) -> nn.Module:
    return ConvNet(args.input_shape, args.layers, args.width or 256)
