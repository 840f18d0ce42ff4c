"""BitLinear / BitConv2d behave as nn.Linear / nn.Conv2d and guard their bits."""
import io

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from bitcl.quant import BitConv2d, BitLinear, bit_states, project_


def test_same_outputs_and_shapes_as_torch_layers():
    """Forward equals the parent layer's with the same weights; shapes as nn.Linear / nn.Conv2d."""
    lin = BitLinear(5, 3)
    ref = nn.Linear(5, 3)
    ref.load_state_dict({"weight": lin.weight.data, "bias": lin.bias.data})
    x = torch.randn(4, 2, 5)
    assert torch.equal(lin(x), ref(x))
    conv = BitConv2d(3, 4, 3, padding=1, bias=False)
    assert conv(torch.randn(2, 3, 8, 8)).shape == (2, 4, 8, 8)
    assert isinstance(lin, nn.Linear) and isinstance(conv, nn.Conv2d)


@pytest.mark.parametrize("bits", [0, 1, 25, 64, 3.5, "8", True])
def test_bad_bit_widths_name_layer_and_value(bits):
    """Bit widths outside 2..24, or not integers, raise ValueError naming layer and value."""
    with pytest.raises(ValueError, match=r"BitLinear: bits must be an integer in \[2, 24\], got"):
        BitLinear(4, 4, bits=bits)
    with pytest.raises(ValueError, match="BitConv2d"):
        BitConv2d(1, 1, 3, bits=bits)


def test_bit_states_names_match_state_dict():
    """bit_states yields every quantised parameter under its state_dict name."""
    model = nn.Sequential(BitLinear(4, 4), nn.ReLU(), BitConv2d(1, 2, 3, bias=False))
    names = [n for n, _ in bit_states(model)]
    assert names == ["0.weight", "0.bias", "2.weight"]
    assert set(names) <= set(model.state_dict())


@given(st.integers(2, 24), st.integers(0, 2**31))
def test_views_agree(bits, seed):
    """quant_weight().int() == codes; freeze_mask agrees with frozen; bitplanes rebuild u."""
    torch.manual_seed(seed % 1000)
    layer = BitLinear(6, 5, bits=bits)
    state = layer.bit_states()[0]
    state.freeze(torch.randint(0, bits + 1, state.codes.shape))
    qt = state.quant_weight()
    assert torch.equal(qt.int().to(torch.int32), state.codes)
    assert float(qt.scale) == pytest.approx(state.scale, rel=1e-7)
    mask = state.freeze_mask()
    assert mask.shape == (bits, 5, 6)
    assert torch.equal(mask.sum(0).to(torch.uint8), state.frozen)
    assert not mask[1:][~mask[:-1]].any()  # frozen planes form a prefix (MSB first)
    weights = (2 ** torch.arange(bits - 1, -1, -1)).view(-1, 1, 1)
    assert torch.equal((state.bitplanes().long() * weights).sum(0), state.offset_codes().long())


@given(st.integers(2, 24), st.integers(0, 2**31), st.floats(-1e6, 1e6))
def test_optimiser_steps_never_change_frozen_bits(bits, seed, step):
    """After arbitrary latent updates and project_(), every frozen bit is identical."""
    torch.manual_seed(seed % 1000)
    layer = BitLinear(8, 4, bits=bits)
    for state in layer.bit_states():
        state.freeze(torch.randint(0, bits + 1, state.codes.shape))
    before = [(s.freeze_mask(), s.bitplanes()) for s in layer.bit_states()]
    with torch.no_grad():
        layer.weight.add_(torch.randn_like(layer.weight) * step)
        layer.bias.mul_(-step)
    layer.project_()
    for (mask, planes), state in zip(before, layer.bit_states()):
        assert torch.equal(state.bitplanes()[mask], planes[mask])
        assert torch.equal(state.latent.data.abs() <= layer.value_range() * (1 + 1e-6),
                           torch.ones_like(state.latent, dtype=torch.bool))


def test_freeze_resets_free_bits_to_window_middle():
    """freeze() sets the free bits to 100..0 (or keeps them) and the latent to scale * code."""
    layer = BitLinear(1, 1, bias=False, bits=4)
    state = layer.bit_states()[0]
    state.codes.fill_(3)  # u = 11 = 1011
    state.freeze(torch.tensor([[2]]))  # keep 10, free 11 -> 10|10 = 10 -> c = 2
    assert state.codes.item() == 2 and state.frozen.item() == 2
    assert layer.weight.item() == pytest.approx(2 * state.scale)
    state.freeze(torch.tensor([[5]]))  # clamped to N
    assert state.frozen.item() == 4 and state.codes.item() == 2
    keep = BitLinear(1, 1, bias=False, bits=4).bit_states()[0]
    keep.codes.fill_(3)
    keep.freeze(torch.tensor([[1]]), reset_free_bits=False)
    assert keep.codes.item() == 3


def test_freeze_rejects_bad_extra():
    """Wrong shape, float dtype or negative counts are refused with precise errors."""
    state = BitLinear(3, 2).bit_states()[0]
    with pytest.raises(ValueError, match="shape"):
        state.freeze(torch.zeros(3, 2, dtype=torch.int32))
    with pytest.raises(TypeError, match="integer"):
        state.freeze(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=">= 0"):
        state.freeze(-torch.ones(2, 3, dtype=torch.int32))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_update_raises_and_keeps_state(bad):
    """A NaN/inf latent raises FloatingPointError naming the layer; codes and frozen stay."""
    model = nn.Sequential(BitLinear(4, 3))
    state = dict(bit_states(model))["0.weight"]
    state.freeze(torch.full((3, 4), 3, dtype=torch.uint8))
    codes, frozen = state.codes.clone(), state.frozen.clone()
    with torch.no_grad():
        model[0].weight.add_(0.01)
        model[0].weight[1, 2] = bad
    with pytest.raises(FloatingPointError, match="0.weight"):
        project_(model)
    assert torch.equal(state.codes, codes) and torch.equal(state.frozen, frozen)


def test_state_dict_round_trip_and_device_moves():
    """state_dict/load_state_dict round-trip codes, frozen counts and latents exactly."""
    a = nn.Sequential(BitLinear(4, 3), nn.ReLU(), BitConv2d(1, 2, 3))
    for _, s in bit_states(a):
        s.freeze(torch.randint(0, 21, s.codes.shape))
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = nn.Sequential(BitLinear(4, 3), nn.ReLU(), BitConv2d(1, 2, 3))
    b.load_state_dict(torch.load(buffer, weights_only=True))
    for (_, sa), (_, sb) in zip(bit_states(a), bit_states(b)):
        assert torch.equal(sa.codes, sb.codes) and torch.equal(sa.frozen, sb.frozen)
        assert torch.equal(sa.latent, sb.latent)
    b.to("cpu").eval()
    x = torch.ones(1, 4)
    with torch.no_grad():
        assert torch.equal(b[0](x), a[0](x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_projection_uses_reference_and_matches_cpu():
    """On CUDA the reference kernel runs and agrees with the CPU result."""
    layer = BitLinear(16, 8)
    for s in layer.bit_states():
        s.freeze(torch.randint(0, 21, s.codes.shape))
    gpu = BitLinear(16, 8).cuda()
    gpu.load_state_dict(layer.state_dict())
    with torch.no_grad():
        layer.weight.add_(0.05)
        gpu.weight.add_(0.05)
    layer.project_()
    gpu.project_()
    assert torch.equal(gpu.weight_codes.cpu(), layer.weight_codes)


LINEAR_BAD_ARGS = {
    "in 0": ((0, 3), {}, "in_features must be a positive integer"),
    "out 0": ((4, 0), {}, "out_features must be a positive integer"),
    "negative": ((-4, 3), {}, "in_features must be a positive integer"),
    "size str": (("4", 3), {}, "in_features must be a positive integer, got str"),
    "size float": ((4.0, 3), {}, "in_features must be a positive integer, got float"),
    "range nan": ((4, 3), {"range_factor": float("nan")}, "range_factor must be a finite number > 0"),
    "range inf": ((4, 3), {"range_factor": float("inf")}, "range_factor must be a finite number > 0"),
    "range 0": ((4, 3), {"range_factor": 0.0}, "range_factor must be a finite number > 0"),
    "range str": ((4, 3), {"range_factor": "6"}, "range_factor must be a positive number, got str"),
    "bits str": ((4, 3), {"bits": "8"}, r"bits must be an integer in \[2, 24\]"),
}


@pytest.mark.parametrize("name", sorted(LINEAR_BAD_ARGS))
def test_bit_linear_bad_arguments_raise_config_error(name):
    """Zero/negative sizes, strings for numbers, non-finite ranges: ConfigError naming the argument."""
    from bitcl.errors import ConfigError
    args, kwargs, match = LINEAR_BAD_ARGS[name]
    with pytest.raises(ConfigError, match=f"BitLinear: {match}"):
        BitLinear(*args, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"in_channels": 0, "out_channels": 2, "kernel_size": 3}, "in_channels"),
    ({"in_channels": 1, "out_channels": 2, "kernel_size": 0}, "kernel_size"),
    ({"in_channels": 1, "out_channels": 2, "kernel_size": "3"}, "kernel_size"),
    ({"in_channels": 1, "out_channels": 2, "kernel_size": (3, 3, 3)}, "kernel_size"),
    ({"in_channels": 3, "out_channels": 2, "kernel_size": 3, "groups": 2}, "in_channels must be divisible"),
    ({"in_channels": 1, "out_channels": 2, "kernel_size": 3, "stride": 0}, "stride"),
    ({"in_channels": 1, "out_channels": 2, "kernel_size": 3, "padding": -1}, "padding"),
])
def test_bit_conv_bad_arguments_raise_config_error(kwargs, match):
    """BitConv2d refuses bad sizes and inconsistent groups with ConfigError, not a torch error."""
    from bitcl.errors import ConfigError
    with pytest.raises(ConfigError, match=match):
        BitConv2d(**kwargs)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex64, torch.int32])
def test_non_float32_weights_are_refused(dtype):
    """Latent weights are float32: other dtypes (complex, integer, double) are a BitTypeError."""
    from bitcl.errors import BitTypeError
    with pytest.raises(BitTypeError, match="float32"):
        BitLinear(4, 3, dtype=dtype)
    with pytest.raises(BitTypeError, match="float32"):
        BitConv2d(1, 2, 3, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.int64, torch.uint8, torch.bool, torch.float64])
def test_inputs_of_the_wrong_dtype_are_refused(dtype):
    """Complex, integer, bool or double inputs raise BitTypeError instead of a wrong result or a torch crash."""
    from bitcl.errors import BitTypeError
    with pytest.raises(BitTypeError, match="input must be torch.float32"):
        BitLinear(4, 3)(torch.ones(2, 4, dtype=dtype))
    with pytest.raises(BitTypeError, match="input must be torch.float32"):
        BitConv2d(1, 2, 3)(torch.ones(1, 1, 5, 5, dtype=dtype))


def test_autocast_inputs_still_work():
    """Under autocast a bfloat16 input is accepted (torch casts it), as for nn.Linear."""
    layer = BitLinear(4, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(torch.ones(2, 4, dtype=torch.bfloat16))
    assert out.shape == (2, 3)


def test_corrupt_codes_are_refused_at_projection_and_freeze():
    """Codes outside the window or frozen counts above N (e.g. loaded from a bad file) raise BitError."""
    from bitcl.errors import BitError
    layer = BitLinear(4, 3, bits=8)
    layer.weight_codes[0, 1] = 300
    with pytest.raises(BitError, match="weight: code 300 at flat index 1"):
        layer.project_()
    layer.weight_codes[0, 1] = 0
    layer.weight_frozen[2, 0] = 9
    with pytest.raises(BitError, match="frozen count 9 at flat index 8 exceeds bits = 8"):
        layer.bit_states()[0].freeze(torch.zeros(3, 4, dtype=torch.int32))
