"""Projection kernel: frozen bits never change; idempotent; fast path == reference."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bitcl import kernels
from bitcl.kernels import reference
from bitcl.quant import max_code, scale_for


def random_state(seed: int, n: int, bits: int):
    g = torch.Generator().manual_seed(seed)
    m = max_code(bits)
    codes = torch.randint(-m, m + 1, (n,), generator=g, dtype=torch.int32)
    frozen = torch.randint(0, bits + 1, (n,), generator=g, dtype=torch.int32).to(torch.uint8)
    scale = scale_for(0.3, bits)
    # latent anywhere: inside, far outside, huge, either sign
    latent = codes.float() * scale + torch.randn(n, generator=g) * scale * (2.0 ** torch.randint(0, bits + 8, (n,), generator=g))
    return latent, codes, frozen, scale


def top_bits(codes, frozen, bits):
    u = codes + (1 << (bits - 1))
    shift = bits - frozen.to(torch.int32)
    return torch.where(frozen > 0, u >> shift.clamp(max=31), torch.zeros_like(u))


@given(st.integers(0, 2**31), st.integers(1, 3000), st.integers(2, 24))
def test_projection_keeps_frozen_bits_and_is_idempotent(seed, n, bits):
    """Whatever the latent, no frozen bit changes and a second projection changes nothing."""
    latent, codes, frozen, scale = random_state(seed, n, bits)
    before = top_bits(codes, frozen, bits)
    kernels.project_(latent, codes, frozen, bits, scale)
    assert torch.equal(top_bits(codes, frozen, bits), before)
    assert codes.abs().max() <= max_code(bits)
    latent2, codes2 = latent.clone(), codes.clone()
    kernels.project_(latent2, codes2, frozen, bits, scale)
    assert torch.equal(latent2, latent) and torch.equal(codes2, codes)


@given(st.integers(0, 2**31), st.integers(1, 200_000), st.integers(2, 24))
def test_fast_path_equals_reference_bit_for_bit(seed, n, bits):
    """The C kernel and the torch reference agree exactly on latents and codes."""
    if kernels.backend() != "c":
        pytest.skip("C fast path not available on this machine")
    latent, codes, frozen, scale = random_state(seed, n, bits)
    inv = float(torch.tensor(1 / scale, dtype=torch.float32))
    l_ref, c_ref = latent.clone(), codes.clone()
    reference.project_(l_ref, c_ref, frozen, bits, scale, inv)
    kernels.project_(latent, codes, frozen, bits, scale, inv)
    assert torch.equal(latent, l_ref) and torch.equal(codes, c_ref)


def test_codes_are_the_rounded_latent_within_window():
    """With nothing frozen, codes are round-half-even(latent / scale) clamped to the range."""
    bits, scale = 8, scale_for(1.0, 8)
    latent = torch.tensor([0.0, 0.5 * scale, 1.5 * scale, -2.6 * scale, 10.0, -10.0])
    codes = torch.zeros(6, dtype=torch.int32)
    kernels.project_(latent, codes, torch.zeros(6, dtype=torch.uint8), bits, scale)
    assert codes.tolist() == [0, 0, 2, -3, 127, -127]


def test_first_nonfinite_finds_nan_and_inf():
    """The finiteness check reports the first bad index, or -1."""
    x = torch.zeros(10_000)
    assert kernels.first_nonfinite(x) == -1
    x[7777] = float("inf")
    x[9000] = float("nan")
    assert kernels.first_nonfinite(x) == 7777
