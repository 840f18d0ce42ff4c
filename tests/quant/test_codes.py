"""bitcl.quant.codes: windows, window middles, top bits and the state validator."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bitcl.errors import BitError, BitTypeError
from bitcl.quant import codes as bc


def random_codes(seed: int, bits: int, n: int = 500):
    g = torch.Generator().manual_seed(seed)
    m = bc.max_code(bits)
    codes = torch.randint(-m, m + 1, (n,), generator=g, dtype=torch.int32)
    frozen = torch.randint(0, bits + 1, (n,), generator=g, dtype=torch.int32).to(torch.uint8)
    return codes, frozen


def test_window_examples_at_four_bits():
    """u = c + 8; k frozen bits fix the top k bits of u; the window respects u >= 1."""
    codes = torch.tensor([3, 3, 3, 3, -7, -7], dtype=torch.int32)   # u = 11 (1011), 11, 11, 11, 1, 1
    frozen = torch.tensor([0, 1, 2, 4, 1, 3], dtype=torch.uint8)
    lo, hi = bc.code_window(codes, frozen, 4)
    assert lo.tolist() == [-7, 0, 0, 3, -7, -7]       # u_lo = max(1, ...) - 8
    assert hi.tolist() == [7, 7, 3, 3, -1, -7]
    assert bc.window_middle(codes, frozen, 4).tolist() == [0, 4, 2, 3, -4, -7]


@given(st.integers(0, 2**31), st.integers(2, 24))
def test_window_holds_exactly_the_codes_with_the_same_frozen_bits(seed, bits):
    """Every code of the window shares the frozen top bits; its neighbours outside do not."""
    codes, frozen = random_codes(seed, bits)
    lo, hi = bc.code_window(codes, frozen, bits)
    assert bool(((lo <= codes) & (codes <= hi)).all())
    shift = bits - frozen.to(torch.int32)
    top = lambda c: bc.offset_codes(c, bits) >> shift
    for edge in (lo, hi, bc.window_middle(codes, frozen, bits)):
        assert torch.equal(top(edge), top(codes))
    outside_hi = (hi + 1 <= bc.max_code(bits)) & (frozen > 0)
    assert not bool((top(hi + 1) == top(codes))[outside_hi].any())
    assert bool((lo >= -bc.max_code(bits)).all())


@given(st.integers(0, 2**31), st.integers(2, 24), st.integers(1, 24))
def test_top_bits_rebuild_the_window_middle(seed, bits, keep):
    """Keeping B < N top bits rebuilds each weight at its window's middle (as freezing B bits and
    resetting the free ones would); B = N keeps the codes."""
    keep = min(keep, bits)
    codes, _ = random_codes(seed, bits)
    scale = bc.scale_for(1.0, bits)
    value = bc.reduced_value(codes, scale, bits, keep)
    frozen = torch.full_like(codes, keep, dtype=torch.uint8)
    expected = codes if keep == bits else bc.window_middle(codes, frozen, bits)
    assert torch.equal(value, (expected.double() * scale).float())
    assert torch.equal(bc.frozen_value(codes, frozen, scale, bits), value)


def test_frozen_value_keeps_fully_frozen_codes():
    """A weight with every bit frozen is rebuilt exactly; k = 0 rebuilds at 0."""
    codes = torch.tensor([5, -6], dtype=torch.int32)
    value = bc.frozen_value(codes, torch.tensor([8, 0], dtype=torch.uint8), 0.5, 8)
    assert value.tolist() == [2.5, 0.0]


def test_top_bits_refuses_bad_keep():
    """keep outside 1..N (or not an int) is a BitError."""
    for keep in (0, 9, 2.0, True):
        with pytest.raises(BitError, match="keep"):
            bc.top_bits(torch.zeros(2, dtype=torch.int32), 8, keep)


CHECK_CASES = {
    "code above": (lambda c, f: (c.index_fill(0, torch.tensor([2]), 128), f), BitError, "code 128 at flat index 2"),
    "code below": (lambda c, f: (c.index_fill(0, torch.tensor([0]), -128), f), BitError, "code -128 at flat index 0"),
    "frozen above": (lambda c, f: (c, f.index_fill(0, torch.tensor([1]), 9)), BitError, "frozen count 9"),
    "codes int64": (lambda c, f: (c.long(), f), BitTypeError, "int32"),
    "frozen int32": (lambda c, f: (c, f.int()), BitTypeError, "uint8"),
    "shapes": (lambda c, f: (c, f[:3]), BitError, "shape"),
    "not tensors": (lambda c, f: (c.tolist(), f), BitTypeError, "torch.Tensor"),
}


@pytest.mark.parametrize("name", sorted(CHECK_CASES))
def test_check_codes_names_the_problem(name):
    """check_codes raises a precise BitError/BitTypeError naming the tensor, index and value."""
    codes, frozen = random_codes(0, 8, 6)
    change, error, match = CHECK_CASES[name]
    with pytest.raises(error, match=match) as info:
        bc.check_codes(*change(codes, frozen), 8, "layer.weight")
    assert str(info.value).startswith("layer.weight: ")


def test_check_codes_accepts_valid_state_and_bad_bits():
    """A valid state passes (empty too); bits outside 2..24 are refused first."""
    codes, frozen = random_codes(1, 24)
    bc.check_codes(codes, frozen, 24, "w")
    bc.check_codes(codes[:0], frozen[:0], 24, "w")
    with pytest.raises(BitError, match=r"\[2, 24\]"):
        bc.check_codes(codes, frozen, 25, "w")
