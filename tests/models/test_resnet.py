"""GEM's reduced ResNet-18: widths, strides, shortcuts, float twin, 84x84 stem."""
import pytest
import torch
from torch import nn

from bitcl.errors import ConfigError
from bitcl.models import build_model
from bitcl.models.factory import LayerFactory
from bitcl.models.resnet import ResNet18
from bitcl.quant import BitConv2d


def test_reduced_resnet18_layout():
    """20 base filters: stem 20, stages 20-40-80-160 with two blocks each, 1x1 projections where
    the shape changes, bias-free Bit convolutions, 160 features."""
    net = ResNet18((3, 32, 32))
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(isinstance(c, BitConv2d) and c.bias is None for c in convs)
    assert len(convs) == 1 + 8 * 2 + 3          # stem, 16 block convs, 3 projection shortcuts
    assert [c.out_channels for c in convs if c.kernel_size == (1, 1)] == [40, 80, 160]
    assert net.out_features == 160
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 160)


def test_parameter_count_matches_gem():
    """About 1.1M parameters without the head, as GEM's net (3x fewer maps than ResNet-18's 11M)."""
    n = sum(p.numel() for p in ResNet18((3, 32, 32), LayerFactory("float")).parameters())
    assert 1.0e6 < n < 1.2e6


def test_84x84_uses_a_stride_2_stem():
    """Inputs of 64 pixels or more: stride-2 stem, still 160 pooled features."""
    net = ResNet18((3, 84, 84), LayerFactory("float"))
    assert net.stem[0].stride == (2, 2)
    assert ResNet18((3, 32, 32)).stem[0].stride == (1, 1)
    assert net(torch.randn(2, 3, 84, 84)).shape == (2, 160)


def test_width_override_and_float_twin():
    """--width 8 sets the base filters; --backbone float has no Bit layers."""
    model = build_model("resnet18", (1, 32, 32), [10], "domain", kind="float", width=8)
    assert model.backbone.out_features == 64
    assert not any(isinstance(m, BitConv2d) for m in model.modules())


def test_refuses_dropout_and_flat_inputs():
    """GEM's net has no dropout: --dropout is refused rather than ignored; flat inputs too."""
    with pytest.raises(ConfigError, match="dropout"):
        build_model("resnet18", (1, 32, 32), [2], "task", dropout=0.2)
    with pytest.raises(ConfigError, match="resnet18"):
        ResNet18((784,))
