"""What a method keeps between tasks, declared, so that every checkpoint reader checks it the same way.

Each strategy lists its state tensors in ``state_entries`` (a tuple of :class:`StateEntry`): a key
pattern (``{param}`` a model parameter's name, ``{task}`` a finished task's index, ``{layer}`` a
layer's name), the values allowed, and for keys added as tasks end, the dtype. A checkpoint's
``strategy/*`` tensors are checked by :func:`check_state` against those declarations and against
the state of a freshly built strategy for the same model and options (every key it starts with
must be there, of its dtype and shape). Contract: docs/contracts/checkpoint.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Optional

import torch
from torch import nn

from bitcl.errors import CheckpointError

VALUES = ("finite", "nonneg", "count", "bool", "nonneg-int")
_PLACEHOLDER = {"{param}": r"(?P<param>[^/]+)", "{task}": r"(?P<task>\d+)", "{layer}": r"(?P<layer>[^/]+)"}


@dataclass(frozen=True)
class StateEntry:
    """One kind of state tensor of a method.

    ``values``: ``finite`` (floats, no NaN/inf), ``nonneg`` (finite and >= 0: Fisher, importance),
    ``count`` (an integer scalar in 0..tasks finished: ``tasks_seen``), ``bool`` (a mask),
    ``nonneg-int`` (an integer scalar >= 0, e.g. bytes kept). ``dtype``: for keys that appear only
    as tasks end (a fresh strategy does not have them); by default float32.
    """

    pattern: str
    values: str = "finite"
    dtype: Optional[torch.dtype] = None

    def __post_init__(self):
        if self.values not in VALUES:
            raise ValueError(f"StateEntry {self.pattern!r}: values must be one of {', '.join(VALUES)}")

    def regex(self) -> re.Pattern:
        text = re.escape(self.pattern)
        for placeholder, group in _PLACEHOLDER.items():
            text = text.replace(re.escape(placeholder), group)
        return re.compile(text + r"\Z")


# Shared declarations (the regularisers', BLIP's and DLCFT's state are built from these).
TASKS_SEEN = StateEntry("tasks_seen", "count")


def check_state(entries: tuple[StateEntry, ...], method: str, fresh: Mapping[str, torch.Tensor],
                saved: Mapping[str, torch.Tensor], model: nn.Module, done: Optional[int], where: str) -> None:
    """Refuse (CheckpointError, one line naming ``where`` and the tensor) saved strategy state that is not
    what method ``method`` keeps: a missing or undeclared key, another dtype or shape than the fresh
    strategy's (or the named parameter's), a value outside the declared range, a ``{task}`` index or
    ``tasks_seen`` beyond the ``done`` tasks finished."""
    compiled = [(e, e.regex()) for e in entries]
    shapes = {n: (tuple(t.shape), t.dtype) for n, t in model.state_dict().items()}
    shapes.update({n: (tuple(p.shape), p.dtype) for n, p in model.named_parameters()})
    for key, value in fresh.items():
        if key not in saved:
            raise CheckpointError(f"{where}: strategy tensor {key!r} of method {method!r} is missing")
        got = saved[key]
        if got.dtype != value.dtype or tuple(got.shape) != tuple(value.shape):
            raise CheckpointError(f"{where}: strategy tensor {key!r} must be {value.dtype} of shape "
                                  f"{tuple(value.shape)}, got {got.dtype} {tuple(got.shape)}")
    seen = saved.get("tasks_seen")
    tasks_limit = done
    for key, value in saved.items():
        match = next(((e, m) for e, rx in compiled if (m := rx.match(key))), None)
        if match is None:
            raise CheckpointError(f"{where}: strategy tensor {key!r} is not part of method {method!r}'s state")
        entry, m = match
        groups = m.groupdict()
        if key not in fresh:
            want_dtype = entry.dtype or torch.float32
            if "param" in groups:
                if groups["param"] not in shapes:
                    raise CheckpointError(f"{where}: strategy tensor {key!r} names no parameter of the model")
                want_shape, param_dtype = shapes[groups["param"]]
                want_dtype = entry.dtype or param_dtype
                if tuple(value.shape) != want_shape:
                    raise CheckpointError(f"{where}: strategy tensor {key!r} has shape {tuple(value.shape)}, "
                                          f"its parameter {want_shape}")
            if value.dtype != want_dtype:
                raise CheckpointError(f"{where}: strategy tensor {key!r} must be {want_dtype}, got {value.dtype}")
        if "task" in groups:
            limit = int(seen) if seen is not None and seen.dim() == 0 and not seen.is_floating_point() \
                else tasks_limit
            if limit is not None and int(groups["task"]) >= limit:
                raise CheckpointError(f"{where}: strategy tensor {key!r} is for task {groups['task']}, but only "
                                      f"{limit} task(s) are finished")
        _check_values(key, value, entry.values, done, where)


def _check_values(key: str, value: torch.Tensor, rule: str, done: Optional[int], where: str) -> None:
    if rule in ("count", "nonneg-int"):
        if value.dim() != 0 or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise CheckpointError(f"{where}: strategy tensor {key!r} must be an integer scalar, got "
                                  f"{value.dtype} of shape {tuple(value.shape)}")
        n = int(value)
        high = done if rule == "count" else None
        if n < 0 or (high is not None and n > high):
            span = f"0..{high}" if high is not None else ">= 0"
            raise CheckpointError(f"{where}: strategy tensor {key!r} must lie in {span}, got {n}")
        return
    if rule == "bool":
        if value.dtype != torch.bool:
            raise CheckpointError(f"{where}: strategy tensor {key!r} must be a bool mask, got {value.dtype}")
        return
    if not value.is_floating_point():
        raise CheckpointError(f"{where}: strategy tensor {key!r} must be floating point, got {value.dtype}")
    if value.numel() and not bool(torch.isfinite(value).all()):
        raise CheckpointError(f"{where}: strategy tensor {key!r} holds NaN or infinite values")
    if rule == "nonneg" and value.numel() and bool((value < 0).any()):
        raise CheckpointError(f"{where}: strategy tensor {key!r} holds negative values (it must be >= 0)")
