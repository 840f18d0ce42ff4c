"""pad_images and random_crop_flip: shapes, content, reproducibility, and a per-sample loop reference."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from bitcl.data.transforms import pad_images, random_crop_flip
from bitcl.errors import ConfigError


def test_pad_centres_the_image_in_zeros():
    """28x28 -> 32x32: the image sits at rows/cols 2..29, everything else is zero."""
    x = torch.rand(3, 1, 28, 28) + 0.1
    out = pad_images(x, 32)
    assert out.shape == (3, 1, 32, 32)
    assert torch.equal(out[:, :, 2:30, 2:30], x)
    mask = torch.ones(32, 32, dtype=torch.bool)
    mask[2:30, 2:30] = False
    assert bool((out[:, :, mask] == 0).all())


def test_pad_odd_difference_and_identity():
    """An odd margin puts the extra pixel bottom/right; the target size itself is a no-op."""
    x = torch.rand(2, 3, 5, 6)
    out = pad_images(x, 8)
    assert torch.equal(out[:, :, 1:6, 1:7], x)
    same = torch.rand(2, 3, 8, 8)
    assert pad_images(same, 8) is same


@pytest.mark.parametrize("size", [27, 0, "32", True])
def test_pad_refuses_a_smaller_or_bad_size(size):
    """A size below the image side (or not an int) is a ConfigError."""
    with pytest.raises(ConfigError):
        pad_images(torch.zeros(1, 1, 28, 28), size)


def test_pad_refuses_flat_inputs():
    """Flat vectors are not images: ConfigError."""
    with pytest.raises(ConfigError):
        pad_images(torch.zeros(4, 784), 32)


def naive_crop_flip(x, padding, generator):
    """One sample at a time, with the draws in the same order as the vectorised version."""
    n, _, h, w = x.shape
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.randint(0, 2, (n,), generator=generator).bool()
    padded = F.pad(x, (padding,) * 4)
    out = []
    for i in range(n):
        crop = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out.append(crop.flip(-1) if flip[i] else crop)
    return torch.stack(out)


@pytest.mark.parametrize("padding", [0, 1, 4])
def test_crop_flip_equals_per_sample_loop(padding):
    """The vectorised gather equals cropping and flipping each sample in a loop."""
    x = torch.rand(16, 3, 9, 7)
    fast = random_crop_flip(x, padding, torch.Generator().manual_seed(5))
    slow = naive_crop_flip(x, padding, torch.Generator().manual_seed(5))
    assert torch.equal(fast, slow)


def test_crop_flip_is_reproducible_and_random():
    """Same generator seed: same batch; another seed: a different batch; some samples flip."""
    x = torch.rand(64, 1, 32, 32)
    a = random_crop_flip(x, 4, torch.Generator().manual_seed(1))
    b = random_crop_flip(x, 4, torch.Generator().manual_seed(1))
    c = random_crop_flip(x, 4, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    flips = random_crop_flip(x, 0, torch.Generator().manual_seed(3))
    flipped = [bool(torch.equal(flips[i], x[i].flip(-1))) for i in range(64)]
    kept = [bool(torch.equal(flips[i], x[i])) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept)) and 10 < sum(flipped) < 54


@given(n=st.integers(1, 6), c=st.integers(1, 3), h=st.integers(1, 8), w=st.integers(1, 8),
       padding=st.integers(0, 3), seed=st.integers(0, 2**31))
def test_crop_flip_keeps_shape_and_only_moves_pixels(n, c, h, w, padding, seed):
    """Output has the input's shape; every pixel is an input pixel of the same sample and channel, or zero."""
    x = torch.rand(n, c, h, w) + 1.0
    out = random_crop_flip(x, padding, torch.Generator().manual_seed(seed))
    assert out.shape == x.shape
    for i in range(n):
        for ch in range(c):
            values = set(x[i, ch].flatten().tolist()) | {0.0}
            assert set(out[i, ch].flatten().tolist()) <= values


def test_crop_flip_refuses_negative_padding():
    """A negative padding is a ConfigError."""
    with pytest.raises(ConfigError):
        random_crop_flip(torch.zeros(1, 1, 4, 4), -1, torch.Generator())
