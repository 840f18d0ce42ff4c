"""Every seed of every driver (``bitcl run``, ``bitcl.fit``, ``bitcl rl``, the Avalanche plugins).

A random choice is drawn from a generator of its own, seeded from the run's seed and a
description of the choice -- never from global RNG state -- so a resumed run replays exactly
what the uninterrupted one would have drawn, and a new purpose never shifts the streams of
the old ones. The seed of ``(seed, purpose, task, epoch...)`` is the first 63 bits of the
SHA-256 of its ``repr`` (:func:`derived_seed`).

``bitcl rl`` names its streams by ``(game, stream number)`` and by a consolidation purpose;
their values (:func:`rl_stream_seed`, :func:`rl_purpose_seed`) are those every published
``bitcl rl`` figure was made with (benchmarks/results/rl_*.json) and are kept so that those
figures reproduce bit for bit; they are defined here, beside the rest, so that no driver
seeds in a way of its own.
"""
from __future__ import annotations

import hashlib

import torch


def derived_seed(seed: int, *parts) -> int:
    """A 63-bit seed for ``(seed, *parts)``: independent streams per purpose, task and epoch."""
    digest = hashlib.sha256(repr((seed,) + parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generator(seed: int, *purpose) -> torch.Generator:
    """A CPU generator of the stream ``(seed, *purpose)`` (e.g. ``(seed, "fisher", task)``)."""
    return torch.Generator().manual_seed(derived_seed(seed, *purpose))


def rl_stream_seed(seed: int, game: int, stream: int) -> int:
    """``bitcl rl``'s seed of stream ``stream`` of game ``game`` (0: the training environments,
    1: action sampling and minibatch order), in ``[0, 2**31)`` as environments require."""
    return (seed * 1_000_003 + game * 1009 + stream) % (2 ** 31)


def rl_purpose_seed(seed: int, game: int, purpose: str) -> int:
    """``bitcl rl``'s seed of a consolidation ``purpose`` (``"fisher"``...) after game ``game``:
    which kept states a method reads and the uniforms that sample their labels."""
    return (seed * 1_000_003 + game * 7919 + sum(map(ord, purpose))) % (2 ** 63)


def rl_generator(seed: int, game: int, stream) -> torch.Generator:
    """A CPU generator of ``bitcl rl``'s stream ``stream`` (a number, or a purpose's name) of ``game``."""
    value = rl_purpose_seed(seed, game, stream) if isinstance(stream, str) else rl_stream_seed(seed, game, stream)
    return torch.Generator().manual_seed(value)


__all__ = ["derived_seed", "generator", "rl_generator", "rl_purpose_seed", "rl_stream_seed"]
