"""quantize_ / dequantize_ on the models users bring: torchvision's ResNet-18 and a timm-style ViT."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from bitcl.checkpoint import load_model_state, model_tensors
from bitcl.errors import ConfigError
from bitcl.interop import BitConfig, dequantize_, quantize_, quantized_names
from bitcl.quant import BitConv2d, BitLinear, bit_states

from .models import TinyViT, resnet18


def _plain_layers(model):
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))
            and not isinstance(m, (BitLinear, BitConv2d))]


def _top_bits(state):
    """The frozen top bits of each weight's offset code (all other bits zeroed)."""
    k = state.frozen.to(torch.int64)
    free = state.bits - k
    return (state.offset_codes().to(torch.int64) >> free) << free


def _freeze_some(model, seed=0, top=8):
    gen = torch.Generator().manual_seed(seed)
    for _, state in bit_states(model):
        state.freeze(torch.randint(0, top + 1, state.codes.shape, generator=gen, dtype=torch.int32),
                     reset_free_bits=False)


@pytest.mark.slow
def test_resnet18_converts_every_conv_and_keeps_the_head_float():
    """torchvision's ResNet-18: every Conv2d becomes a BitConv2d, fc stays float, outputs unchanged."""
    torch.manual_seed(0)
    model = resnet18().eval()
    x = torch.randn(2, 3, 32, 32)
    before = model(x)
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    same, report = quantize_(model, BitConfig(bits=8, skip=("fc",)))
    assert same is model
    assert sum(isinstance(m, BitConv2d) for m in model.modules()) == convs == len(report.layers) == 20
    assert type(model.fc) is nn.Linear and report.kept_float == ["fc"]
    assert all(r.clipped_fraction == 0 and r.clip_max_error == 0 for r in report.layers.values())
    # codes lie within half a step of the float weights
    assert all(r.code_max_error <= r.scale / 2 + 4e-7 * r.value_range for r in report.layers.values())
    assert torch.equal(model(x), before)  # range "max" clips nothing: the latent is the float weight


def test_vit_converts_patch_embedding_and_linears_with_a_filter():
    """A timm-style ViT: filter_fn selects every layer but the head; qkv/proj/mlp and patch conv convert."""
    torch.manual_seed(1)
    model = TinyViT().eval()
    x = torch.randn(3, 3, 16, 16)
    before = model(x)
    _, report = quantize_(model, BitConfig(bits=12, filter_fn=lambda m, name: name != "head"))
    assert isinstance(model.patch_embed, BitConv2d) and isinstance(model.blocks[1].attn.qkv, BitLinear)
    assert isinstance(model.blocks[0].mlp[2], BitLinear) and type(model.head) is nn.Linear
    assert set(report.layers) == {"patch_embed"} | {f"blocks.{b}.{n}" for b in range(2)
                                                     for n in ("attn.qkv", "attn.proj", "mlp.0", "mlp.2")}
    assert torch.equal(model(x), before)
    assert "blocks.0.attn.qkv" in str(report) and report.to_json()["layers"]["patch_embed"]["kind"] == "BitConv2d"


def test_percentile_range_clips_the_largest_weights_and_reports_it():
    """range='percentile' clips about (100 - p)% of the values; the report counts them and the clip error."""
    torch.manual_seed(2)
    layer = nn.Linear(1000, 100)
    _, report = quantize_(nn.Sequential(layer), BitConfig(bits=6, range="percentile", percentile=99.0))
    r = report.layers["0"]
    assert 0.005 < r.clipped_fraction < 0.02
    assert r.clip_max_error > 0
    _, full = quantize_(nn.Sequential(nn.Linear(1000, 100)), BitConfig(bits=6))
    assert full.layers["0"].clipped_fraction == 0


def test_dequantize_latent_reproduces_the_bit_model_exactly():
    """dequantize_(weights='latent') gives plain layers whose forward equals the Bit model's, after training."""
    torch.manual_seed(3)
    model = TinyViT().eval()
    quantize_(model, BitConfig(bits=8, headroom=2.0))
    _freeze_some(model)
    x = torch.randn(2, 3, 16, 16)
    model(x).square().sum().backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.05 * p.grad
    for _, state in bit_states(model):
        state.project_()
    quantised_out = model(x)
    dequantize_(model, weights="latent")
    assert not list(bit_states(model)) and len(_plain_layers(model)) == 10
    assert torch.equal(model(x), quantised_out)


@pytest.mark.slow
def test_dequantize_codes_exports_the_deployed_values():
    """dequantize_(weights='codes') holds scale * codes: equal to the Bit model with latents set to them."""
    torch.manual_seed(4)
    model = resnet18(num_classes=5).eval()
    quantize_(model, BitConfig(bits=6, skip=("fc",)))
    for _, state in bit_states(model):
        state.latent.data.copy_(state.dequantized())
    x = torch.randn(1, 3, 32, 32)
    deployed = model(x)
    codes = {name: s.dequantized().clone() for name, s in bit_states(model)}
    dequantize_(model)
    assert torch.equal(model(x), deployed)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[name], value) for name, value in codes.items())


def test_state_dict_round_trip_into_a_fresh_model():
    """A quantised model's state_dict (codes, frozen counts) loads into a fresh model quantised with
    report.same_layers(), and into bitcl's checkpoint form; both reproduce its outputs and bits."""
    torch.manual_seed(5)
    source = TinyViT().eval()
    _, report = quantize_(source, BitConfig(bits=10, skip=("head",)))
    _freeze_some(source, seed=1)
    torch.manual_seed(99)  # different float weights, hence different "max" ranges without same_layers()
    target = TinyViT().eval()
    quantize_(target, report.same_layers())
    target.load_state_dict(source.state_dict())
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(target(x), source(x))
    for (name, a), (_, b) in zip(bit_states(source), bit_states(target)):
        assert a.scale == b.scale and torch.equal(a.codes, b.codes) and torch.equal(a.frozen, b.frozen), name
    tensors, meta = model_tensors(source)
    assert set(meta) == set(quantized_names(source))
    again = TinyViT().eval()
    quantize_(again, report.same_layers())
    load_model_state(again, tensors)
    assert torch.equal(again(x), source(x))


@pytest.mark.slow
def test_one_training_step_of_resnet18_keeps_every_frozen_bit():
    """An SGD step with a large learning rate on a quantised ResNet-18, then project_: frozen bits unchanged."""
    torch.manual_seed(6)
    model = resnet18()
    quantize_(model, BitConfig(bits=8, skip=("fc",)))
    _freeze_some(model, seed=2, top=6)
    before = {name: _top_bits(s).clone() for name, s in bit_states(model)}
    codes_before = {name: s.codes.clone() for name, s in bit_states(model)}
    opt = torch.optim.SGD(model.parameters(), lr=10.0)
    nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    for _, state in bit_states(model):
        state.project_()
    moved = sum(int((s.codes != codes_before[name]).sum()) for name, s in bit_states(model))
    assert moved > 0  # the step did change free bits
    for name, state in bit_states(model):
        assert torch.equal(_top_bits(state), before[name]), name


@given(bits=st.integers(2, 16), headroom=st.floats(1.0, 4.0), seed=st.integers(0, 2**16),
       rng=st.sampled_from(["max", "percentile", "fixed"]))
def test_codes_stay_in_range_and_reproduce_the_latent(bits, headroom, seed, rng):
    """For any bit width and range rule: codes are valid N-bit codes within half a step of the latent."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(12, 4))
    _, report = quantize_(model, BitConfig(bits=bits, headroom=headroom, range=rng, percentile=90.0))
    limit = 2 ** (bits - 1) - 1
    for name, state in bit_states(model):
        assert int(state.codes.abs().max()) <= limit
        latent = state.latent.detach()
        ulps = 4 * torch.finfo(torch.float32).eps * float(latent.abs().max())  # float32 rounding of latent / scale
        assert float((latent - state.dequantized()).abs().max()) <= state.scale / 2 + ulps
    if rng == "max":
        assert all(r.clipped_fraction == 0 for r in report.layers.values())


@pytest.mark.parametrize("config, needle", [
    (BitConfig(bits=1), "bits"),
    (BitConfig(range="minmax"), "range"),
    (BitConfig(headroom=0), "headroom"),
    (BitConfig(percentile=0), "percentile"),
    (BitConfig(skip="fc"), "skip"),
    (BitConfig(filter_fn=lambda m, n: False), "selects no"),
])
def test_bad_configs_raise_config_error(config, needle):
    """Each invalid config is refused with a ConfigError naming the problem, before any layer changes."""
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ConfigError, match=needle):
        quantize_(model, config)


def test_half_precision_layer_is_refused():
    """A float16 layer raises ConfigError (Bit layers keep float32 latents) rather than silently casting."""
    with pytest.raises(ConfigError, match="float32"):
        quantize_(nn.Sequential(nn.Linear(4, 4).half()))


def test_shared_module_is_converted_once_and_stays_shared():
    """A layer reachable under two names becomes one Bit layer referenced by both."""
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    quantize_(model)
    assert isinstance(model[0], BitLinear) and model[0] is model[2]
