"""A model of Bit layers trains like its float twin (SGD and Adam)."""
import pytest
import torch
from torch import nn

from bitcl.quant import BitLinear, project_


def two_moons(n, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g) * 3.1416
    label = torch.randint(0, 2, (n,), generator=g)
    x = torch.stack([torch.cos(t) + label, torch.sin(t) * (1 - 2 * label) + 0.5 * label], 1)
    return x + 0.1 * torch.randn(n, 2, generator=g), label


def train(model, opt_name, quantised):
    x, y = two_moons(600, 0)
    xt, yt = two_moons(400, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.2) if opt_name == "sgd" else torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if quantised:
            project_(model)
    return (model(xt).argmax(1) == yt).float().mean().item()


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_bit_mlp_matches_float_mlp(opt_name):
    """Same init, same data: the Bit MLP's accuracy is within 2 points of the float MLP's."""
    torch.manual_seed(0)
    bit = nn.Sequential(BitLinear(2, 64, bits=12), nn.ReLU(), BitLinear(64, 2, bits=12))
    flt = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 2))
    flt.load_state_dict({k: v for k, v in bit.state_dict().items() if not k.endswith(("_codes", "_frozen"))})
    acc_bit, acc_float = train(bit, opt_name, True), train(flt, opt_name, False)
    assert acc_float > 0.95
    assert acc_bit >= acc_float - 0.02
