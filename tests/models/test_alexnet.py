"""The HAT/BLIP AlexNet: layer shapes, Bit/float twins, width, dropout and input checks."""
import pytest
import torch
from torch import nn

from bitcl.errors import ConfigError
from bitcl.models import build_model
from bitcl.models.alexnet import AlexNet
from bitcl.models.factory import LayerFactory
from bitcl.quant import BitConv2d, BitLinear


def convs_and_linears(module):
    return ([m for m in module.modules() if isinstance(m, nn.Conv2d)],
            [m for m in module.modules() if isinstance(m, nn.Linear)])


def test_layers_are_the_papers_on_32x32():
    """conv 64k4, 128k3, 256k2 then FC 256*2*2 -> 2048 -> 2048, all Bit layers."""
    net = AlexNet((3, 32, 32))
    convs, fcs = convs_and_linears(net)
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (3, 64, (4, 4)), (64, 128, (3, 3)), (128, 256, (2, 2))]
    assert [(f.in_features, f.out_features) for f in fcs] == [(256 * 2 * 2, 2048), (2048, 2048)]
    assert all(isinstance(m, (BitConv2d, BitLinear)) for m in convs + fcs)
    assert net.out_features == 2048
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 2048)


def test_84x84_and_grey_inputs():
    """84x84 inputs keep the kernels and widen the first FC (256*9*9); 1-channel 32x32 works."""
    net = AlexNet((3, 84, 84), LayerFactory("float"))
    assert convs_and_linears(net)[1][0].in_features == 256 * 9 * 9
    assert net(torch.randn(2, 3, 84, 84)).shape == (2, 2048)
    assert AlexNet((1, 32, 32))(torch.randn(2, 1, 32, 32)).shape == (2, 2048)


def test_float_twin_has_the_same_parameter_shapes():
    """--backbone float builds nn.Conv2d/nn.Linear with exactly the quantised net's parameter shapes."""
    quant, flt = AlexNet((3, 32, 32)), AlexNet((3, 32, 32), LayerFactory("float"))
    assert not any(isinstance(m, (BitConv2d, BitLinear)) for m in flt.modules())
    assert [(n, p.shape) for n, p in quant.named_parameters()] == [(n, p.shape) for n, p in flt.named_parameters()]


def test_width_scales_every_layer():
    """--width 32 (half of 64) halves every conv and FC width."""
    model = build_model("alexnet", (1, 32, 32), [2], "task", kind="float", width=32)
    convs, fcs = convs_and_linears(model.backbone)
    assert [c.out_channels for c in convs] == [32, 64, 128]
    assert [f.out_features for f in fcs] == [1024, 1024] and model.backbone.out_features == 1024


def test_dropout_only_in_training():
    """With dropout, two training passes differ and two eval passes are identical."""
    torch.manual_seed(0)
    net = AlexNet((1, 32, 32), LayerFactory("float"), width=0.25, bn="train", dropout=0.5)
    x = torch.randn(8, 1, 32, 32)
    net.train()
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


@pytest.mark.parametrize("shape", [(1, 16, 16), (784,), (1, 28)])
def test_refuses_inputs_it_cannot_take(shape):
    """Images smaller than 24x24 or not (C, H, W): ConfigError naming the backbone."""
    with pytest.raises(ConfigError, match="alexnet"):
        AlexNet(shape)


@pytest.mark.parametrize("dropout", [-0.1, 1.0])
def test_refuses_bad_dropout(dropout):
    """Dropout outside [0, 1): ConfigError."""
    with pytest.raises(ConfigError, match="dropout"):
        AlexNet((1, 32, 32), dropout=dropout)
