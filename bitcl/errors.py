"""Exceptions for bad input. The CLI prints them as one line and exits with status 2."""


class BitclError(ValueError):
    """Base class: a user-facing problem with input, configuration or files."""


class DataError(BitclError):
    """Missing, corrupt or inconsistent data."""


class ConfigError(BitclError):
    """An invalid run configuration (unknown method, bad option, unsupported scenario...)."""


class CheckpointError(BitclError):
    """A checkpoint that is missing, truncated, corrupt or written for another model."""


class TrainingDiverged(BitclError, FloatingPointError):
    """A NaN or infinite loss: the run stops; checkpoints already written stay intact."""


class BitError(BitclError):
    """Invalid bit-level state or arguments: codes outside the N-bit window, frozen counts
    above N, bit widths outside 2..24, tensors whose shapes disagree, non-positive scales."""


class BitTypeError(BitError, TypeError):
    """A tensor of the wrong dtype or device (or not a tensor) given to the bit kernels or layers."""


class NonFiniteError(BitError, FloatingPointError):
    """A NaN or infinite latent weight met by the projection: nothing was changed."""
