"""Image batch transforms for training: zero padding and random crop + horizontal flip.

``pad_images`` brings small images up to a backbone's input size (MNIST's 28x28 to the
32x32 of the CIFAR AlexNet and ResNet, ``--pad-to 32``); it applies to every split.
``random_crop_flip`` is the standard CIFAR augmentation (He et al., "Deep Residual
Learning for Image Recognition", CVPR 2016, arXiv 1512.03385, Sec. 4.2: pad 4, random
32x32 crop, random horizontal flip), for training batches only (``--augment``).
Both are vectorised over the batch and work on any device; the randomness comes
from a CPU ``torch.Generator`` so a run is reproducible whatever the device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bitcl.errors import ConfigError


def _check_images(x: torch.Tensor, what: str) -> None:
    if x.dim() != 4:
        raise ConfigError(f"{what} needs (n, C, H, W) image batches, got shape {tuple(x.shape)}")


def pad_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad ``(n, C, H, W)`` images, centred, to ``size x size`` (extra odd pixel at the
    bottom/right). Images already ``size x size`` are returned unchanged."""
    _check_images(x, "--pad-to")
    h, w = x.shape[-2:]
    if isinstance(size, bool) or not isinstance(size, int) or size < max(h, w):
        raise ConfigError(f"--pad-to must be an integer >= the image size {h}x{w}, got {size!r}")
    if (h, w) == (size, size):
        return x
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(x, (left, size - w - left, top, size - h - top))


def random_crop_flip(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """A random ``H x W`` crop of each zero-padded image (``padding`` pixels per side), then a
    horizontal flip with probability 1/2; one gather for the whole batch.

    Offsets and flips are drawn from ``generator`` (a CPU generator): the same generator
    state gives the same batch on any device.
    """
    _check_images(x, "random_crop_flip")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ConfigError(f"crop padding must be a non-negative integer, got {padding!r}")
    n, _, h, w = x.shape
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.randint(0, 2, (n,), generator=generator).bool()
    padded = F.pad(x, (padding, padding, padding, padding))
    cols = torch.arange(w)
    cols = torch.where(flip.unsqueeze(1), cols.flip(0), cols) + dx.unsqueeze(1)        # (n, W)
    rows = torch.arange(h) + dy.unsqueeze(1)                                          # (n, H)
    rows, cols = rows.to(x.device), cols.to(x.device)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # advanced indices around a slice put their dims first: (n, H, W, C)
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()
