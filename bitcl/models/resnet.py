"""The reduced ResNet-18 of GEM, from Bit layers.

Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017,
arXiv 1706.08840 (Sec. 5: "a smaller version of ResNet-18, with three times less
feature maps across all layers"): the ResNet-18 of He et al. (CVPR 2016,
arXiv 1512.03385) with 20 base filters instead of 64: a 3x3 stem and four stages of
two basic blocks (20, 40, 80, 160 channels; strides 1, 2, 2, 2), global average
pooling, ``out_features`` = 8 x base. Convolutions have no bias (a batch norm
follows each). Inputs of 64 pixels or more (84x84 mini-ImageNet, as in GPM, Saha et
al., ICLR 2021) use a stride-2 stem. Every batch norm follows the continual policy
``--bn`` (:mod:`bitcl.models.norm`).

``resnet18-imagenet`` is the full ResNet-18 of He et al. in torchvision's layout (64 base
filters, the ImageNet stem: a 7x7 stride-2 convolution, batch norm, ReLU and a 3x3 stride-2
max-pool; ``out_features`` 512), the network whose ImageNet weights DLCFT's protocol starts
from: ``--pretrained resnet18-imagenet`` loads torchvision's file (its module names mapped by
:func:`bitcl.models.pretrained.torchvision_resnet18_state`). On 32x32 inputs its last stage
sees 1x1 maps.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bitcl.errors import ConfigError

from .alexnet import check_image_shape
from .factory import BackboneArgs, LayerFactory, register_backbone
from .norm import ContinualBatchNorm2d, TaskAware, check_policy

BASE_FILTERS = 20
LARGE_INPUT = 64  # from this side on, the stem has stride 2


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, layers: LayerFactory, c_in: int, c_out: int, stride: int, bn: str, tasks: int):
        super().__init__()
        self.conv1 = layers.conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = ContinualBatchNorm2d(c_out, bn, tasks)
        self.conv2 = layers.conv(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = ContinualBatchNorm2d(c_out, bn, tasks)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(layers.conv(c_in, c_out, 1, stride=stride, bias=False),
                                          ContinualBatchNorm2d(c_out, bn, tasks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(TaskAware, nn.Module):
    """GEM's reduced ResNet-18 (module docstring) with ``base`` filters in the first stage."""

    def __init__(self, input_shape: Sequence[int], layers: LayerFactory = LayerFactory(), base: int = BASE_FILTERS,
                 bn: str = "first-task", tasks: int = 1, imagenet_stem: bool = False):
        super().__init__()
        c, h, w = check_image_shape("resnet18-imagenet" if imagenet_stem else "resnet18", input_shape,
                                    32 if imagenet_stem else 8)
        check_policy(bn)
        if imagenet_stem:  # torchvision's: conv 7x7 stride 2, BN, ReLU, max-pool 3x3 stride 2
            self.stem = nn.Sequential(layers.conv(c, base, 7, stride=2, padding=3, bias=False),
                                      ContinualBatchNorm2d(base, bn, tasks), nn.ReLU(),
                                      nn.MaxPool2d(3, stride=2, padding=1))
        else:
            stem_stride = 2 if min(h, w) >= LARGE_INPUT else 1
            self.stem = nn.Sequential(layers.conv(c, base, 3, stride=stem_stride, padding=1, bias=False),
                                      ContinualBatchNorm2d(base, bn, tasks), nn.ReLU())
        stages: list[nn.Module] = []
        c_in = base
        for i, stride in enumerate((1, 2, 2, 2)):
            c_out = base * 2 ** i
            stages += [BasicBlock(layers, c_in, c_out, stride, bn, tasks),
                       BasicBlock(layers, c_out, c_out, 1, bn, tasks)]
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.out_features = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(self.stem(x))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


@register_backbone("resnet18", "GEM's reduced ResNet-18 (20 base filters, --width overrides; BN per --bn); "
                               "32x32 or 84x84",
                   training={"optimizer": "adam", "lr": 1e-3, "momentum": 0.0},
                   training_source="benchmarks/search_backbones.py -> benchmarks/results/search_backbones.json")
def _resnet18(args: BackboneArgs) -> nn.Module:
    if args.dropout:
        raise ConfigError(f"resnet18 has no dropout (GEM's net has none), got --dropout {args.dropout}")
    return ResNet18(args.input_shape, args.layers, args.width or BASE_FILTERS, args.bn)


IMAGENET_FILTERS = 64


@register_backbone("resnet18-imagenet", "torchvision's ResNet-18 (7x7 stride-2 stem + max-pool, 64 base filters, "
                                        "512 features): loads --pretrained resnet18-imagenet; 32x32 or larger")
def _resnet18_imagenet(args: BackboneArgs) -> nn.Module:
    if args.dropout:
        raise ConfigError(f"resnet18-imagenet has no dropout (torchvision's net has none), got --dropout {args.dropout}")
    model = ResNet18(args.input_shape, args.layers, IMAGENET_FILTERS, args.bn, imagenet_stem=True)  # checks the size
    if args.width and args.width != IMAGENET_FILTERS:  # after the image size: the refusal any backbone would give first
        raise ConfigError(f"resnet18-imagenet has torchvision's 64 base filters (its weights' shapes), "
                          f"got --width {args.width}")
    return model
