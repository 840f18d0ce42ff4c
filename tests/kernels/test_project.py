"""Projection kernel: frozen bits never change; idempotent; C (both instruction sets) == reference."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bitcl import kernels
from bitcl.kernels import reference
from bitcl.quant import codes as bitcodes
from bitcl.quant import max_code, scale_for

needs_c = pytest.mark.skipif(kernels.backend() != "c", reason="C kernels not in use (extension not built, or BITCL_KERNELS=reference)")


def random_state(seed: int, n: int, bits: int):
    g = torch.Generator().manual_seed(seed)
    m = max_code(bits)
    codes = torch.randint(-m, m + 1, (n,), generator=g, dtype=torch.int32)
    frozen = torch.randint(0, bits + 1, (n,), generator=g, dtype=torch.int32).to(torch.uint8)
    scale = scale_for(0.3, bits)
    # latent anywhere: inside, far outside, huge, either sign
    latent = codes.float() * scale + torch.randn(n, generator=g) * scale * (2.0 ** torch.randint(0, bits + 8, (n,), generator=g))
    return latent, codes, frozen, scale


def frozen_top(codes, frozen, bits):
    """The frozen top bits of each offset code (0 where nothing is frozen)."""
    return bitcodes.offset_codes(codes, bits) >> (bits - frozen.to(torch.int32))


@given(st.integers(0, 2**31), st.integers(1, 3000), st.integers(2, 24))
def test_projection_keeps_frozen_bits_and_is_idempotent(seed, n, bits):
    """Whatever the latent, no frozen bit changes and a second projection changes nothing."""
    latent, codes, frozen, scale = random_state(seed, n, bits)
    before = frozen_top(codes, frozen, bits)
    kernels.project_(latent, codes, frozen, bits, scale)
    assert torch.equal(frozen_top(codes, frozen, bits), before)
    assert codes.abs().max() <= max_code(bits)
    lo, hi = bitcodes.code_window(codes, frozen, bits)
    assert bool(((latent >= lo * scale) & (latent <= hi * scale)).all())
    latent2, codes2 = latent.clone(), codes.clone()
    kernels.project_(latent2, codes2, frozen, bits, scale)
    assert torch.equal(latent2, latent) and torch.equal(codes2, codes)


@needs_c
@given(st.integers(0, 2**31), st.integers(1, 200_000), st.integers(2, 24), st.booleans())
def test_c_equals_reference_bit_for_bit(seed, n, bits, avx2):
    """The C kernel (AVX2 and baseline loops) and the torch reference agree exactly."""
    from bitcl.kernels import _bitops
    latent, codes, frozen, scale = random_state(seed, n, bits)
    inv = float(torch.tensor(1 / scale, dtype=torch.float32))
    l_ref, c_ref = latent.clone(), codes.clone()
    reference.project_(l_ref, c_ref, frozen, bits, scale, inv)
    forced = _bitops.set_isa(avx2)
    try:
        kernels.project_(latent, codes, frozen, bits, scale, inv)
    finally:
        _bitops.set_isa(True)
    assert forced or avx2  # the baseline can always be forced
    assert torch.equal(latent, l_ref) and torch.equal(codes, c_ref)


def test_reference_chunks_agree_with_one_pass(monkeypatch):
    """The chunked reference gives the same result whatever the chunk size."""
    latent, codes, frozen, scale = random_state(3, 10_007, 20)
    outs = []
    for chunk in (1 << 10, 1 << 18):
        monkeypatch.setattr(reference, "CHUNK", chunk)
        l, c = latent.clone(), codes.clone()
        reference.project_(l, c, frozen, 20, scale)
        outs.append((l, c))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_codes_are_the_rounded_latent_within_window():
    """With nothing frozen, codes are round-half-even(latent / scale) clamped to the range."""
    bits, scale = 8, scale_for(1.0, 8)
    latent = torch.tensor([0.0, 0.5 * scale, 1.5 * scale, -2.6 * scale, 10.0, -10.0])
    codes = torch.zeros(6, dtype=torch.int32)
    kernels.project_(latent, codes, torch.zeros(6, dtype=torch.uint8), bits, scale)
    assert codes.tolist() == [0, 0, 2, -3, 127, -127]


def test_non_contiguous_tensors_are_projected_and_written_back():
    """Strided views give the same result as contiguous tensors, written into the views."""
    latent, codes, frozen, scale = random_state(7, 64 * 32, 12)
    expect_l, expect_c = latent.clone().view(64, 32), codes.clone().view(64, 32)
    kernels.project_(expect_l, expect_c, frozen.view(64, 32), 12, scale)
    l_t = latent.view(64, 32).t().contiguous().t()  # same values, column-major strides
    c_t = codes.view(64, 32).t().contiguous().t()
    assert not l_t.is_contiguous()
    kernels.project_(l_t, c_t, frozen.view(64, 32).t().contiguous().t(), 12, scale)
    assert torch.equal(l_t, expect_l) and torch.equal(c_t, expect_c)


def test_parameter_with_grad_is_accepted():
    """A latent that requires grad (an nn.Parameter) is projected in place on both paths."""
    latent, codes, frozen, scale = random_state(1, 100, 8)
    p = torch.nn.Parameter(latent.clone())
    kernels.project_(p, codes.clone(), frozen, 8, scale)
    q = torch.nn.Parameter(latent.clone())
    reference.project_(q, codes.clone(), frozen, 8, scale)
    assert torch.equal(p.data, q.data)


def test_first_nonfinite_finds_nan_and_inf():
    """The finiteness check reports the first bad index, or -1, on both paths."""
    x = torch.zeros(10_000)
    assert kernels.first_nonfinite(x) == -1 == reference.first_nonfinite(x)
    x[7777] = float("inf")
    x[9000] = float("nan")
    assert kernels.first_nonfinite(x) == 7777 == reference.first_nonfinite(x)


@needs_c
@given(st.integers(0, 2**31), st.integers(1, 200_000), st.integers(2, 24), st.booleans(), st.booleans())
def test_latent_only_projection_equals_the_full_one(seed, n, bits, avx2, validated):
    """project_latent_ clamps every latent exactly as project_ does (AVX2 and baseline loops), writes no
    code, and project_ afterwards (the lazy refresh) gives project_'s codes and changes no latent."""
    from bitcl.kernels import _bitops
    latent, codes, frozen, scale = random_state(seed, n, bits)
    l_full, c_full = latent.clone(), codes.clone()
    kernels.project_(l_full, c_full, frozen, bits, scale)
    c_before = codes.clone()
    forced = _bitops.set_isa(avx2)
    try:
        assert kernels.project_latent_(latent, codes, frozen, bits, scale, validated=validated) is True
    finally:
        _bitops.set_isa(True)
    assert forced or avx2
    assert torch.equal(latent, l_full) and torch.equal(codes, c_before)
    refreshed = latent.clone()
    kernels.project_(refreshed, codes, frozen, bits, scale)
    assert torch.equal(refreshed, latent) and torch.equal(codes, c_full)


@needs_c
def test_latent_only_projection_survives_unchecked_garbage():
    """validated=True with codes and frozen counts that were never valid: wrong windows, but no crash
    and nothing written outside the latent (the arithmetic is masked, no undefined behaviour)."""
    n, bits = 4096, 12
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(n, generator=g)
    codes = torch.randint(-2**31, 2**31 - 1, (n,), generator=g, dtype=torch.int32)
    frozen = torch.randint(0, 256, (n,), generator=g, dtype=torch.int32).to(torch.uint8)
    c0, f0 = codes.clone(), frozen.clone()
    kernels.project_latent_(latent, codes, frozen, bits, scale_for(1.0, bits), validated=True)
    assert torch.equal(codes, c0) and torch.equal(frozen, f0) and bool(torch.isfinite(latent).all())


def test_latent_only_projection_of_non_contiguous_tensors_refreshes_the_codes():
    """Paths without the C latent-only kernel project fully and say so (False: codes are fresh)."""
    latent, codes, frozen, scale = random_state(3, 2048, 8)
    expect_l, expect_c = latent.clone().view(64, 32), codes.clone().view(64, 32)
    kernels.project_(expect_l, expect_c, frozen.view(64, 32), 8, scale)
    l, c, f = latent.view(64, 32).t(), codes.view(64, 32).t(), frozen.view(64, 32).t()
    assert kernels.project_latent_(l, c, f, 8, scale) is False
    assert torch.equal(l.t(), expect_l) and torch.equal(c.t(), expect_c)


@needs_c
@given(st.integers(0, 2**31), st.integers(1, 200_000), st.integers(2, 24), st.booleans(), st.booleans())
def test_window_projection_equals_the_latent_only_one(seed, n, bits, narrow, avx2):
    """project_windows_ from build_windows' words clamps every latent exactly as project_latent_ does,
    with 2-byte words (every frozen count <= 15) and 4-byte ones, AVX2 and baseline loops alike."""
    from bitcl.kernels import _bitops
    latent, codes, frozen, scale = random_state(seed, n, bits)
    if narrow:
        frozen = frozen.clamp(max=15)
    windows = kernels.build_windows(codes, frozen, bits, "w")
    assert windows.dtype == (torch.int16 if int(frozen.max()) <= 15 else torch.int32)
    want = latent.clone()
    kernels.project_latent_(want, codes.clone(), frozen, bits, scale)
    forced = _bitops.set_isa(avx2)
    try:
        assert kernels.project_windows_(latent, windows, bits, scale, "w") is True
    finally:
        _bitops.set_isa(True)
    assert forced or avx2
    assert torch.equal(latent.view(torch.int32), want.view(torch.int32))


@needs_c
def test_window_words_of_the_extreme_counts():
    """k = 0 (the whole range), k = N (one code) and k = 15 (the widest 2-byte word) at N = 24, the
    largest words there are: the windows are the code windows."""
    bits = 24
    m = max_code(bits)
    codes = torch.tensor([m, -m, 0, m, -m, 12345, m, -m], dtype=torch.int32)
    frozen = torch.tensor([0, 0, 24, 24, 24, 15, 15, 23], dtype=torch.uint8)
    scale = 1.0
    latent = torch.tensor([3e7, -3e7, 5.0, -3e7, 3e7, 1e9, -1e9, 0.0])
    want = latent.clone()
    kernels.project_latent_(want, codes.clone(), frozen, bits, scale)
    got = latent.clone()
    assert kernels.project_windows_(got, kernels.build_windows(codes, frozen, bits, "w"), bits, scale, "w")
    assert torch.equal(got, want)
    lo, hi = bitcodes.code_window(codes, frozen, bits)
    assert torch.equal(got, torch.maximum(torch.minimum(latent, hi.float()), lo.float()))


@needs_c
def test_window_projection_of_a_nan_raises_and_writes_nothing():
    latent, codes, frozen, scale = random_state(1, 1000, 12)
    windows = kernels.build_windows(codes, frozen, 12, "w")
    latent[700] = float("nan")
    before = latent.clone()
    with pytest.raises(FloatingPointError, match="700"):
        kernels.project_windows_(latent, windows, 12, scale, "layer.weight")
    assert torch.equal(latent.view(torch.int32), before.view(torch.int32))


@needs_c
@pytest.mark.parametrize("what", ["code", "frozen"])
def test_window_words_are_refused_from_bad_codes_or_counts(what):
    from bitcl.errors import BitError
    _, codes, frozen, _ = random_state(2, 1000, 12)
    if what == "code":
        codes[300] = max_code(12) + 1
    else:
        frozen[300] = 13
    with pytest.raises(BitError, match="300"):
        kernels.build_windows(codes, frozen, 12, "w")
