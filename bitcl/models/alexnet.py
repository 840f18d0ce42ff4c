"""The 5-layer AlexNet of HAT and BLIP, from Bit layers.

Serra et al., "Overcoming Catastrophic Forgetting with Hard Attention to the Task",
ICML 2018, arXiv 1801.01423 (Sec. 4, the AlexNet-like network), used again by BLIP
(Shi et al., CVPR 2021, arXiv 2105.04444, Sec. 5) on CIFAR and dataset sequences:

    conv 64 k4 -> conv 128 k3 -> conv 256 k2   (each: BN, ReLU, dropout, max-pool 2)
    -> FC 2048 -> FC 2048                       (each: ReLU, dropout)

The kernel sizes 4/3/2 are those of 32x32 inputs; larger inputs (84x84) keep them and
only the flattened width grows. A batch norm follows each convolution (as in the
later versions of this net, e.g. GPM, Saha et al., ICLR 2021), under the continual
policy ``--bn`` (see :mod:`bitcl.models.norm`). ``--dropout p`` (0 by default; HAT used
0.2 after the convolutions and 0.5 after the FC layers) applies p after every block;
dropout is active only in training mode.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from bitcl.errors import ConfigError

from .factory import BackboneArgs, LayerFactory, register_backbone
from .norm import ContinualBatchNorm2d, TaskAware, check_policy

CHANNELS = (64, 128, 256)
KERNELS = (4, 3, 2)
FC_WIDTH = 2048


def check_image_shape(name: str, input_shape: Sequence[int], smallest: int) -> tuple[int, int, int]:
    """``(C, H, W)`` or a ConfigError naming the backbone and the smallest side it takes."""
    if len(input_shape) != 3:
        raise ConfigError(f"{name} needs (C, H, W) image inputs, got shape {tuple(input_shape)}")
    c, h, w = input_shape
    if min(h, w) < smallest:
        raise ConfigError(f"{name} needs images of at least {smallest}x{smallest}, got {h}x{w} (--pad-to 32)")
    return c, h, w


def check_dropout(p: float) -> float:
    if not (isinstance(p, (int, float)) and 0.0 <= p < 1.0):
        raise ConfigError(f"--dropout must lie in [0, 1), got {p!r}")
    return float(p)


class AlexNet(TaskAware, nn.Module):
    """HAT/BLIP AlexNet (module docstring); ``width`` scales the channels and FC widths
    (1.0: 64-128-256 and 2048), ``out_features`` is the last FC width."""

    def __init__(self, input_shape: Sequence[int], layers: LayerFactory = LayerFactory(), width: float = 1.0,
                 bn: str = "first-task", dropout: float = 0.0, tasks: int = 1):
        super().__init__()
        c, h, w = check_image_shape("alexnet", input_shape, 24)
        check_policy(bn)
        p = check_dropout(dropout)
        blocks: list[nn.Module] = []
        for channels, k in zip(CHANNELS, KERNELS):
            out = max(1, round(channels * width))
            blocks += [layers.conv(c, out, k), ContinualBatchNorm2d(out, bn, tasks), nn.ReLU(), nn.Dropout(p),
                       nn.MaxPool2d(2)]
            c, h, w = out, (h - k + 1) // 2, (w - k + 1) // 2
        fc = max(1, round(FC_WIDTH * width))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Flatten(), layers.linear(c * h * w, fc), nn.ReLU(), nn.Dropout(p),
                                        layers.linear(fc, fc), nn.ReLU(), nn.Dropout(p))
        self.out_features = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_backbone("alexnet", "HAT/BLIP AlexNet: conv 64k4-128k3-256k2 (BN, pool) + FC 2048-2048; 32x32 or 84x84; "
                              "--width scales it (in 1/64ths of the first conv), --bn, --dropout",
                   training={"optimizer": "adam", "lr": 1e-3, "momentum": 0.0},
                   training_source="benchmarks/search_backbones.py -> benchmarks/results/search_backbones.json")
def _alexnet(args: BackboneArgs) -> nn.Module:
    width = args.width / CHANNELS[0] if args.width else 1.0
    return AlexNet(args.input_shape, args.layers, width, args.bn, args.dropout)
