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
