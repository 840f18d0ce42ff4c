"""quantize_ / dequantize_ on the models users bring: torchvision's ResNet-18 and a timm-style ViT."""
import copy

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
    """torchvision's ResNet-18: every Conv2d becomes a BitConv2d, fc stays float; the converted model computes
    exactly what its export (the codes) computes, within the 8-bit rounding of the float model."""
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
    after = model(x)
    torch.testing.assert_close(after, before, rtol=0.1, atol=0.1)  # 8 bits: close, not equal
    assert torch.equal(after, dequantize_(copy.deepcopy(model))(x))  # the forward pass is what export ships


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
    assert torch.equal(model(x), dequantize_(copy.deepcopy(model))(x))
    torch.testing.assert_close(model(x), before, rtol=0.01, atol=0.01)  # 12 bits
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
       rng=st.sampled_from(["auto", "max", "percentile", "fixed"]))
def test_codes_stay_in_range_and_reproduce_the_latent(bits, headroom, seed, rng):
    """For any bit width and range rule: codes are valid N-bit codes, the latent is exactly on the grid and the
    float weights are within half a step of it (range "max": nothing clipped)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(12, 4))
    floats = {f"{n}": p.detach().clone() for n, p in model.named_parameters()}
    _, report = quantize_(model, BitConfig(bits=bits, headroom=headroom, range=rng, percentile=90.0))
    limit = 2 ** (bits - 1) - 1
    for name, state in bit_states(model):
        assert int(state.codes.abs().max()) <= limit
        assert torch.equal(state.latent.detach(), state.dequantized())
        if rng in ("auto", "max"):
            original = floats[name]
            ulps = 4 * torch.finfo(torch.float32).eps * float(original.abs().max())  # float32 rounding of w / scale
            assert float((original - state.dequantized()).abs().max()) <= state.scale / 2 + ulps
    if rng in ("auto", "max"):
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


def test_four_bit_conversion_computes_what_export_ships():
    """At 4 bits the converted model's outputs equal those of its exported codes exactly (issue 23: they used to
    equal the float model's until the first projection, while the codes differed by up to 0.49 in the logits)."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))
    x = torch.randn(64, 16)
    before = model(x).detach()
    quantize_(model, BitConfig(bits=4))
    after = model(x).detach()
    exported = dequantize_(copy.deepcopy(model))(x).detach()
    assert torch.equal(after, exported)
    assert float((after - before).abs().max()) > 1e-3  # 4 bits do change the outputs: the model says so


def test_report_has_totals_over_every_layer():
    """The report sums the layers: values, bits, values kept float, clipped values and an overall error."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 8), nn.ReLU(), nn.Linear(8, 3))
    _, report = quantize_(model, BitConfig(bits=6, skip=("4",)))
    totals = report.totals
    assert totals["layers"] == 2 and totals["values"] == 4 * 9 + 4 + 4 * 36 * 8 + 8
    assert totals["bits"] == 6 * totals["values"]
    assert totals["kept_float_layers"] == 1 and totals["kept_float_values"] == 8 * 3 + 3
    assert totals["clipped_values"] == 0
    worst = max(r.relative_rms_error for r in report.layers.values())
    best = min(r.relative_rms_error for r in report.layers.values())
    assert best <= totals["relative_rms_error"] <= worst
    assert totals["code_max_error"] == max(r.code_max_error for r in report.layers.values())
    text = str(report)
    assert "total" in text and f"{totals['values']:,} values" in text and "(27 values)" in text
    assert report.to_json()["totals"] == totals


@pytest.mark.parametrize("layer", [nn.Linear(3, 3), nn.Conv2d(2, 3, 3, padding=1)])
def test_a_bare_layer_is_converted_in_place(layer):
    """quantize_(nn.Linear(3, 3)) converts the layer itself (it used to say the config selects no layer);
    the same object, the same parameters, outputs equal to its exported codes; dequantize_ reverses it."""
    torch.manual_seed(5)
    weight = layer.weight
    x = torch.randn(4, 3) if isinstance(layer, nn.Linear) else torch.randn(2, 2, 5, 5)
    same, report = quantize_(layer, BitConfig(bits=8))
    assert same is layer and isinstance(layer, (BitLinear, BitConv2d)) and layer.weight is weight
    assert list(report.layers) == [""] and len(list(bit_states(layer))) == 2
    out = layer(x)
    plain = dequantize_(layer)
    assert plain is layer and type(plain) in (nn.Linear, nn.Conv2d) and not list(plain.buffers())
    assert torch.equal(plain(x), out)


def test_a_subclassed_bare_layer_is_refused_with_advice():
    """A subclass of nn.Linear given bare cannot change class safely: ConfigError says to wrap it."""
    class Mine(nn.Linear):
        pass
    with pytest.raises(ConfigError, match="wrap it"):
        quantize_(Mine(3, 3))


def test_auto_range_gives_blip_room_at_high_bit_widths_and_stays_tight_at_low():
    """range='auto': at >= 16 bits a fresh layer gets exactly BLIP's range 6/sqrt(fan_in) (bitcl's own layers'), a
    layer whose weights exceed it keeps max|w| (nothing clipped); below 16 bits the tight range max|w|."""
    torch.manual_seed(6)
    fresh = nn.Sequential(nn.Linear(100, 10))
    _, report = quantize_(fresh)
    assert report.layers["0"].range_factor == 6.0
    assert report.layers["0"].value_range == pytest.approx(BitLinear(100, 10).value_range())
    big = nn.Sequential(nn.Linear(100, 10))
    with torch.no_grad():
        big[0].weight[0, 0] = 5.0
    _, report = quantize_(big)
    assert report.layers["0"].value_range == pytest.approx(5.0, rel=1e-5) and report.layers["0"].clipped_fraction == 0
    low = nn.Sequential(nn.Linear(100, 10))
    top = float(low[0].weight.detach().abs().max().maximum(low[0].bias.detach().abs().max()))
    _, report = quantize_(low, BitConfig(bits=8))
    assert report.layers["0"].value_range == pytest.approx(top, rel=1e-5)
