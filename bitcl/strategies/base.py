"""The strategy interface and registry (after FACIL's approaches and Mammoth's models).

A strategy is one small file: a subclass of :class:`Strategy` with a ``name``, the
scenarios it supports, an ``Options`` dataclass (each field becomes a CLI flag,
``fisher_prior`` -> ``--fisher-prior``; ``metadata={"help": ..., "choices": ...}``)
and the hooks it needs. The engine calls, per task::

    before_task(task) -> [per step: loss + penalty(); backward; after_backward();
    optimiser step; bit projection; after_step()] -> after_task(task)

Everything a strategy keeps between tasks lives in ``self.state`` (a dict of
tensors): it is saved in every checkpoint (so ``--resume`` restores it), counted
in ``memory.state_bytes``, and must be identical on every rank under DDP.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import torch

from bitcl.data.scenarios import SCENARIOS, Task
from bitcl.errors import ConfigError

if TYPE_CHECKING:
    from bitcl.engine import Engine


@dataclasses.dataclass
class NoOptions:
    """A method without options."""


class Strategy:
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    scenarios: ClassVar[tuple[str, ...]] = SCENARIOS
    Options: ClassVar[type] = NoOptions
    requires_quantized: ClassVar[bool] = False

    def __init__(self, options: Any, engine: "Engine"):
        self.options = options
        self.engine = engine
        self.model = engine.model
        self.state: dict[str, torch.Tensor] = {}

    # -- hooks ------------------------------------------------------------------
    def training_module(self) -> Optional[torch.nn.Module]:
        """The module trained and evaluated, ``forward(x, task) -> outputs`` (None: the model).
        DLCFT returns its linearised model; under DDP the engine wraps this module."""
        return None

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The task loss *summed* over the samples (the engine divides by the batch size)."""
        return torch.nn.functional.cross_entropy(outputs, targets, reduction="sum")

    def training_tasks(self, task_index: int) -> list[int]:
        """Indices of the tasks whose training data this task trains on."""
        return [task_index]

    def before_task(self, task: Task) -> None:
        """Start of a task (before its optimiser is built)."""

    def penalty(self) -> Optional[torch.Tensor]:
        """A loss term added to the task loss at every step, or None."""
        return None

    def after_backward(self) -> None:
        """Gradients are in ``.grad``; the optimiser has not stepped yet."""

    def after_step(self) -> None:
        """After the optimiser step and the bit projection."""

    def after_task(self, task: Task) -> None:
        """End of a task: consolidation (importance, freezing, anchors)."""

    # -- persistent state -------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        return self.state

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.state = {k: v.to(self.engine.device) for k, v in tensors.items()}

    def state_bytes(self) -> int:
        """Bytes kept between tasks beyond the model itself."""
        return sum(t.numel() * t.element_size() for t in self.state_tensors().values())

    def extra_results(self) -> dict:
        """Method-specific entries for results.json (e.g. per-layer capacity)."""
        return {}


_REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy available by ``cls.name``."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"strategy name {cls.name!r} is empty or taken")
    _REGISTRY[cls.name] = cls
    return cls


def get_strategy(name: str) -> type[Strategy]:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def strategy_names() -> list[str]:
    return sorted(_REGISTRY)


def make_options(cls: type[Strategy], values: Optional[dict] = None):
    """Build ``cls.Options`` from a dict, refusing unknown keys and bad choices/values."""
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls.Options)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        raise ConfigError(f"method {cls.name!r} has no option(s) {flags}")
    for key, value in values.items():
        choices = fields[key].metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"--{key.replace('_', '-')} must be one of {', '.join(map(str, choices))}, got {value!r}")
    options = cls.Options(**values)
    check = getattr(options, "validate", None)
    if check:
        check()
    return options
