"""Exceptions. Bad input (``BitclError``): the CLI prints one line and exits with status 2.
Environment faults (``EnvironmentFault``, an ``OSError``): one line naming the path, exit status 1."""


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


class EnvironmentFault(OSError):
    """The machine, not the input, failed: a file could not be written (disk full, permission denied,
    read-only file system, quota). The CLI prints it as one line and exits with status 1.

    ``path`` is the file bitcl tried to write and ``reason`` the operating system's words.
    """

    def __init__(self, path: object, reason: str, what: str = "file", kept: str = ""):
        self.path, self.reason = str(path), reason
        message = f"{path}: {what} not written ({reason})" + (f"; {kept}" if kept else "")
        super().__init__(message)

    def __str__(self) -> str:
        return self.args[0]


class IntegrityError(CheckpointError):
    """A stored byte changed since bitcl wrote it: a recorded digest no longer matches."""


def os_reason(error: BaseException) -> str:
    """The operating system's words for ``error`` (``strerror``), else its first line."""
    reason = getattr(error, "strerror", None)
    if reason:
        return reason
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    import re
    wrapped = re.search(r"I/O error: (.*?) \(os error \d+\)", text)  # safetensors' wording of an OSError
    return wrapped.group(1) if wrapped else text
