"""Lazy codes: the per-step projection (``BitState.project_latent_``) clamps the latent only; every
reader sees codes equal, bit for bit, to those of the eager projection (``BitState.project_``)."""
import copy
import io
import pickle

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from bitcl import kernels
from bitcl.errors import BitError, NonFiniteError
from bitcl.quant import BitLinear, bit_states, project_latents_
from bitcl.quant.state import refresh_codes

needs_c = pytest.mark.skipif(kernels.backend() != "c", reason="C kernels not in use (extension not built, or BITCL_KERNELS=reference)")


def twin_models(seed: int, bits: int):
    """A small BitLinear MLP with random frozen counts, and a deep copy of it."""
    torch.manual_seed(seed)
    model = nn.Sequential(BitLinear(6, 5, bits=bits), nn.ReLU(), BitLinear(5, 3, bits=bits))
    for _, state in bit_states(model):
        state.freeze(torch.randint(0, bits + 1, state.frozen.shape), reset_free_bits=False)
    return model, copy.deepcopy(model)


def buffers_of(model):
    """Every latent, code and frozen count, read straight from the modules (no refresh)."""
    out = {}
    for name, state in bit_states(model):
        out[name] = state.latent.detach().clone()
        out[name + "_codes"] = state.layer._buffers[state.param_name + "_codes"].clone()
        out[name + "_frozen"] = state.frozen.clone()
    return out


def assert_same(lazy, eager):
    """Same latents and frozen counts, and the lazy model's codes (refreshed on read) equal the eager ones."""
    a, b = lazy.state_dict(), eager.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def perturb(model, generator, magnitude):
    """An optimiser-like update: every latent moves by noise of ``magnitude`` times its scale."""
    with torch.no_grad():
        for _, state in bit_states(model):
            noise = torch.randn(state.latent.shape, generator=generator) * state.scale * magnitude
            state.latent.add_(noise)


OPS = st.lists(st.one_of(
    st.tuples(st.just("step"), st.sampled_from([0.3, 4.0, 300.0, 1e6])),
    st.tuples(st.just("read"), st.integers(0, 3)),
    st.tuples(st.just("freeze"), st.integers(0, 3)),
    st.tuples(st.just("roundtrip"), st.integers(0, 2)),
), min_size=1, max_size=12)


@given(st.integers(0, 2**31), st.integers(2, 24), OPS)
def test_any_sequence_of_steps_equals_the_eager_projection(seed, bits, ops):
    """Property: after any sequence of optimiser-like updates (each followed by the per-step projection),
    reads, freezes and state round trips, the lazy model's latents and codes equal the eager model's
    exactly."""
    lazy, eager = twin_models(seed % 1000, bits)
    g_lazy, g_eager = (torch.Generator().manual_seed(seed) for _ in range(2))
    for op, arg in ops:
        if op == "step":
            perturb(lazy, g_lazy, arg)
            perturb(eager, g_eager, arg)
            project_latents_([s for _, s in bit_states(lazy)])
            for _, state in bit_states(eager):
                state.project_()
        elif op == "read":  # every way a reader reaches the codes
            name, state = list(bit_states(lazy))[arg]
            e_state = dict(bit_states(eager))[name]
            got = [lambda: state.codes, lambda: getattr(state.layer, state.param_name + "_codes"),
                   lambda: lazy.state_dict()[name + "_codes"], lambda: state.dequantized() / state.scale][arg]()
            want = e_state.codes if arg < 3 else e_state.dequantized() / e_state.scale
            assert torch.equal(got, want)
        elif op == "freeze":
            extra_seed = seed + arg
            for model in (lazy, eager):
                g = torch.Generator().manual_seed(extra_seed)
                for _, state in bit_states(model):
                    state.freeze(torch.randint(0, 3, state.frozen.shape, generator=g), reset_free_bits=arg % 2 == 0)
        elif op == "roundtrip":
            if arg == 0:
                lazy = copy.deepcopy(lazy)
            elif arg == 1:
                buffer = io.BytesIO()
                torch.save(lazy.state_dict(), buffer)
                buffer.seek(0)
                lazy.load_state_dict(torch.load(buffer, weights_only=True))
            else:
                lazy = pickle.loads(pickle.dumps(lazy))
    assert_same(lazy, eager)


@needs_c
def test_per_step_projection_leaves_the_codes_buffer_and_a_read_refreshes_it():
    """The point of the change: a step writes no code; the first read writes them once."""
    lazy, eager = twin_models(3, 12)
    perturb(lazy, torch.Generator().manual_seed(0), 300.0)
    perturb(eager, torch.Generator().manual_seed(0), 300.0)
    before = buffers_of(lazy)
    project_latents_([s for _, s in bit_states(lazy)])
    after = buffers_of(lazy)
    for name, state in bit_states(lazy):
        assert torch.equal(after[name + "_codes"], before[name + "_codes"])      # codes not written
        assert not torch.equal(after[name], before[name])                          # latents clamped
        assert state.param_name in state.layer._stale_codes
    for _, state in bit_states(eager):
        state.project_()
    assert_same(lazy, eager)
    assert all(not s.layer._stale_codes for _, s in bit_states(lazy))


@needs_c
def test_refresh_reproduces_eager_codes_when_the_latent_was_already_projected():
    """refresh_codes writes no latent, and is a no-op for fresh codes."""
    lazy, _ = twin_models(5, 16)
    perturb(lazy, torch.Generator().manual_seed(1), 50.0)
    project_latents_([s for _, s in bit_states(lazy)])
    layer = lazy[0]
    latent = layer.weight.detach().clone()
    refresh_codes(layer, "weight")
    assert torch.equal(layer.weight.detach(), latent)
    codes = layer._buffers["weight_codes"].clone()
    refresh_codes(layer, "weight")
    assert torch.equal(layer._buffers["weight_codes"], codes)


def test_nan_latent_raises_and_writes_nothing():
    lazy, _ = twin_models(7, 8)
    state = dict(bit_states(lazy))["0.weight"]
    with torch.no_grad():
        state.latent[1, 2] = float("nan")
    before = buffers_of(lazy)
    with pytest.raises(NonFiniteError, match="flat index 8"):
        state.project_latent_()
    after = buffers_of(lazy)
    for key in before:
        assert torch.allclose(before[key].float(), after[key].float(), rtol=0, atol=0, equal_nan=True), key


def test_codes_changed_in_place_are_checked_again():
    """Codes and frozen counts are re-validated whenever torch's version counter says they changed."""
    lazy, _ = twin_models(9, 8)
    state = dict(bit_states(lazy))["0.weight"]
    state.project_latent_()  # validated once
    state.layer._buffers["weight_codes"][0, 3] = 200  # an in-place write: outside the 8-bit range
    with pytest.raises(BitError, match="code 200 at flat index 3"):
        state.project_latent_()
    state.layer._buffers["weight_codes"][0, 3] = 0
    state.project_latent_()
    state.layer._buffers["weight_frozen"][1, 0] = 9
    with pytest.raises(BitError, match="frozen count 9 at flat index 6"):
        state.project_latent_()


def test_replaced_buffer_is_checked_again():
    """A new codes tensor (not the validated one) is validated even if its version counter matches."""
    lazy, _ = twin_models(11, 8)
    layer = lazy[0]
    dict(bit_states(lazy))["0.weight"].project_latent_()
    bad = torch.full_like(layer._buffers["weight_codes"], 127)
    bad[0, 0] = -128
    layer._buffers["weight_codes"] = bad
    with pytest.raises(BitError, match="code -128 at flat index 0"):
        dict(bit_states(lazy))["0.weight"].project_latent_()


@needs_c
def test_a_diverged_model_can_still_load_a_checkpoint():
    """Stale codes whose latent went NaN cannot be refreshed; loading a state over them must not need to."""
    lazy, eager = twin_models(13, 10)
    saved = eager.state_dict()
    perturb(lazy, torch.Generator().manual_seed(2), 30.0)
    project_latents_([s for _, s in bit_states(lazy)])
    with torch.no_grad():
        lazy[0].weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteError):
        lazy[0].weight_codes  # the refresh refuses the diverged latent
    lazy.load_state_dict(saved)
    assert_same(lazy, eager)


def test_moving_the_model_keeps_the_codes_right():
    lazy, eager = twin_models(17, 14)
    for model in (lazy, eager):
        perturb(model, torch.Generator().manual_seed(3), 100.0)
    project_latents_([s for _, s in bit_states(lazy)])
    for _, state in bit_states(eager):
        state.project_()
    lazy.to(torch.float32)  # _apply: runs on every tensor
    assert_same(lazy, eager)


def test_dequantized_layer_keeps_no_lazy_bookkeeping():
    """dequantize_ of a bare layer after lazy steps: the deployed values are the refreshed codes', and the
    layer keeps no reference to its dropped codes and frozen counts."""
    from bitcl.interop import dequantize_
    lazy, eager = twin_models(19, 10)
    for model in (lazy, eager):
        perturb(model, torch.Generator().manual_seed(4), 80.0)
    project_latents_([s for _, s in bit_states(lazy)])
    for _, state in bit_states(eager):
        state.project_()
    layer, expected = lazy[0], eager[0].bit_states()[0].dequantized()
    dequantize_(layer)
    assert type(layer) is nn.Linear and torch.equal(layer.weight.detach(), expected)
    assert "_stale_codes" not in layer.__dict__ and "_bit_checked" not in layer.__dict__


@needs_c
def test_an_extension_built_before_the_latent_kernel_projects_fully(monkeypatch):
    """A stale build without project_latent (e.g. a checkout updated but not reinstalled) falls back to the
    full projection instead of failing: codes fresh every step, same values."""
    import types
    real = kernels._native
    old = types.SimpleNamespace(**{k: getattr(real, k) for k in ("project", "pack", "unpack", "first_nonfinite",
                                                                   "build_info", "set_isa")})
    lazy, eager = twin_models(23, 9)
    for model in (lazy, eager):
        perturb(model, torch.Generator().manual_seed(5), 40.0)
    monkeypatch.setattr(kernels, "_native", old)
    project_latents_([s for _, s in bit_states(lazy)])
    assert all(not s.layer._stale_codes for _, s in bit_states(lazy))
    for _, state in bit_states(eager):
        state.project_()
    assert_same(lazy, eager)


@needs_c
@pytest.mark.parametrize("most", [15, 16])
def test_the_step_reads_window_words_built_at_the_first_step_and_after_a_freeze(most):
    """The per-step projection keeps one window word per weight (2 bytes while every frozen count is at
    most 15, else 4), rebuilt when a freeze changes the counts; the words are bookkeeping, never state."""
    layer = BitLinear(30, 20, bits=20)
    state = layer.bit_states()[0]
    state.project_latent_()
    assert layer.__dict__["_bit_checked"]["weight"][4].dtype == torch.int16  # nothing frozen yet
    extra = torch.zeros(state.frozen.shape, dtype=torch.int64)
    extra[3, 4] = most
    state.freeze(extra)
    state.project_latent_()
    windows = layer.__dict__["_bit_checked"]["weight"][4]
    assert windows.dtype == (torch.int16 if most <= 15 else torch.int32) and windows.shape == state.frozen.shape
    assert not any("window" in key for key in layer.state_dict())


@pytest.mark.parametrize("copy_model", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))])
def test_a_copy_made_after_a_freeze_projects_with_the_new_counts(copy_model):
    """The example hypothesis found: copy, step, freeze, copy, step. The second copy's tensors restart
    their version counters, so a cache carried over from before the freeze would pass for current; a
    copy starts without it."""
    lazy, eager = twin_models(0, 2)
    lazy = copy_model(lazy)
    for step in range(2):
        for model in (lazy, eager):
            perturb(model, torch.Generator().manual_seed(step), 0.3)
        project_latents_([s for _, s in bit_states(lazy)])
        for _, state in bit_states(eager):
            state.project_()
        if step == 0:
            for model in (lazy, eager):
                g = torch.Generator().manual_seed(7)
                for _, state in bit_states(model):
                    state.freeze(torch.randint(0, 3, state.frozen.shape, generator=g))
            lazy = copy_model(lazy)
    assert_same(lazy, eager)
