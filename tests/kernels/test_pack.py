"""Bit-plane packing: exact round trip, exact size, fast path == reference."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bitcl import kernels
from bitcl.kernels import reference


@given(st.integers(0, 2**31), st.integers(0, 5000), st.integers(1, 24))
def test_pack_then_unpack_is_identity(seed, n, bits):
    """unpack(pack(c)) == c over the whole plane range [-2^(N-1), 2^(N-1) - 1] (export packs
    top bits, which reach -2^(N-1)), one plane included; the size is bits * ceil(n / 8) bytes."""
    g = torch.Generator().manual_seed(seed)
    half = 1 << (bits - 1)
    codes = torch.randint(-half, half, (n,), generator=g, dtype=torch.int32)
    packed = kernels.pack_bitplanes(codes, bits)
    assert packed.dtype == torch.uint8 and tuple(packed.shape) == (bits, (n + 7) // 8)
    assert torch.equal(kernels.unpack_bitplanes(packed, bits, n), codes)
    assert torch.equal(packed, reference.pack_bitplanes(codes, bits))
    assert torch.equal(reference.unpack_bitplanes(packed, bits, n), codes)


def test_plane_layout_is_msb_first_offset_binary():
    """Plane 0 is the top bit of u = c + 2^(N-1); first element is the byte's top bit."""
    codes = torch.tensor([-3, 3], dtype=torch.int32)  # u = 1 (001), 7 (111) at 3 bits
    packed = kernels.pack_bitplanes(codes, 3)
    assert packed[:, 0].tolist() == [0b01000000, 0b01000000, 0b11000000]


def test_unpack_rejects_wrong_shape():
    """A packed tensor of the wrong shape is refused with a precise message."""
    with pytest.raises(ValueError, match="shape"):
        kernels.unpack_bitplanes(torch.zeros(3, 2, dtype=torch.uint8), 4, 16)
