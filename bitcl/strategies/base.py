"""The strategy interface and registry (after FACIL's approaches and Mammoth's models).

A strategy is one small file in this package: a subclass of :class:`Strategy` with a
``name``, the scenarios it supports, an ``Options`` dataclass (each field becomes a CLI
flag, ``fisher_prior`` -> ``--fisher-prior``, shown with its default in ``--help`` and
recorded with its resolved value in results.json; each made with :func:`bitcl.settings.setting`, which holds its
type, range and choices), the services it needs from the loop (``needs``, see ``context.SERVICES``) and
the hooks it uses. Files are discovered automatically (``discover``): adding a method
is one file with ``@register``.

Whoever drives the training (the supervised engine, the RL loop, ``bitcl.fit``, the
Avalanche plugins) calls, per task, with a :class:`~bitcl.strategies.context.TaskContext`::

    before_task(ctx) -> [per step: loss(...) + penalty(); backward; after_backward(ctx);
    optimiser step; bit projection; after_step(ctx)] -> end_task(ctx)

Everything a strategy keeps between tasks lives in ``self.state`` (a dict of
tensors): it is saved in every checkpoint (so ``--resume`` restores it), counted
in ``memory.state_bytes``, and must be identical on every rank under DDP.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from bitcl import settings
from bitcl.constants import SCENARIOS
from bitcl.errors import ConfigError

from .context import RunInfo, TaskContext
from .state import StateEntry, check_state


@dataclasses.dataclass
class NoOptions:
    """A method without options."""


class Strategy:
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    scenarios: ClassVar[tuple[str, ...]] = SCENARIOS
    Options: ClassVar[type] = NoOptions
    requires_quantized: ClassVar[bool] = False
    needs: ClassVar[frozenset[str]] = frozenset()      # services of the loop (context.SERVICES)
    distributable: ClassVar[bool] = True               # may run under torchrun
    rl: ClassVar[bool] = False                         # offered by `bitcl rl`
    state_entries: ClassVar[tuple[StateEntry, ...]] = ()  # what ``self.state`` may hold (``state.py``)

    def __init__(self, options: Any, model: nn.Module, info: RunInfo):
        self.options = options
        self.model = model
        self.info = info
        self.state: dict[str, torch.Tensor] = {}

    # -- hooks ------------------------------------------------------------------
    def training_module(self) -> Optional[nn.Module]:
        """The module trained and evaluated, ``forward(x, task) -> outputs`` (None: the model).
        DLCFT returns its linearised model; under DDP the loop wraps this module."""
        return None

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The task loss *summed* over the samples (the loop divides by the batch size)."""
        return torch.nn.functional.cross_entropy(outputs, targets, reduction="sum")

    def training_tasks(self, task_index: int) -> list[int]:
        """Indices of the tasks whose training data this task trains on (``replay`` service)."""
        return [task_index]

    def before_task(self, ctx: TaskContext) -> None:
        """Start of a task (before its optimiser is built)."""

    def penalty(self) -> Optional[torch.Tensor]:
        """A loss term added to the task loss at every step, or None."""
        return None

    def after_backward(self, ctx: TaskContext) -> None:
        """Gradients are in ``.grad``; the optimiser has not stepped yet."""

    def after_step(self, ctx: TaskContext) -> None:
        """After the optimiser step and the bit projection."""

    def end_task(self, ctx: TaskContext) -> None:
        """End of a task: consolidation (importance, freezing, anchors)."""

    # -- persistent state -------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        return self.state

    def check_saved_state(self, saved: dict[str, torch.Tensor], done: Optional[int], where: str) -> None:
        """Refuse saved state (a checkpoint's ``strategy/*`` tensors) that this method, freshly built,
        could not have written after ``done`` tasks (``state.check_state``); call before training."""
        check_state(self.state_entries, self.name, self.state, saved, self.model, done, where)

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.state = {k: v.to(self.info.device) for k, v in tensors.items()}

    def state_bytes(self) -> int:
        """Bytes kept between tasks beyond the model itself."""
        return sum(t.numel() * t.element_size() for t in self.state_tensors().values())

    def task_results(self) -> dict:
        """Per-task entries for results.json; each value is appended to a list under its key."""
        return {}

    def run_results(self) -> dict:
        """Entries for results.json that describe the whole run."""
        return {}


_REGISTRY: dict[str, type[Strategy]] = {}
_DISCOVERED = False


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy available by ``cls.name``."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"strategy name {cls.name!r} is empty or taken")
    _REGISTRY[cls.name] = cls
    return cls


def discover() -> None:
    """Import every module of this package once, so each registers its methods."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    package = importlib.import_module(__package__)
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_") and module.name not in ("base", "context"):
            importlib.import_module(f"{__package__}.{module.name}")


def get_strategy(name: str) -> type[Strategy]:
    discover()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def strategy_names() -> list[str]:
    discover()
    return sorted(_REGISTRY)


def protected_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters that tasks share and a method protects: a bitcl ContinualModel's (or an RL
    agent's) ``backbone_parameters()`` (backbone and shared heads, not per-task heads), else every
    trainable parameter of a user's model."""
    if hasattr(model, "backbone_parameters"):
        return dict(model.backbone_parameters())
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def build_options(options_cls: type, values: Optional[dict] = None, owner: str = "method", warn: bool = False):
    """A typed options dataclass from a dict (:func:`bitcl.settings.build`): unknown keys, wrong
    types, non-finite numbers, bad choices and values out of range raise ConfigError naming the
    flag; a deprecated name (``fisher_samples``) is renamed (``warn``: with a FutureWarning)."""
    return settings.build(options_cls, values, owner, warn=warn)


def make_options(cls: type[Strategy], values: Optional[dict] = None, warn: bool = False):
    """Build ``cls.Options`` from a dict (see :func:`build_options`)."""
    return build_options(cls.Options, values, f"method {cls.name!r}", warn)


def upgrade_recorded_options(config: dict) -> dict:
    """A recorded ``config`` (results.json, a checkpoint's progress) whose ``method_options`` use the
    current option names: runs written before an option was renamed (BLIP's ``fisher_samples`` ->
    ``samples``) still compare equal to, resume and rerun as, the same settings today."""
    options, method = config.get("method_options"), config.get("method")
    if not isinstance(options, dict) or not isinstance(method, str):
        return config
    discover()
    if method not in _REGISTRY:
        return config
    names = settings.renamed(_REGISTRY[method].Options)
    if not any(old in options for old in names):
        return config
    upgraded = {names.get(k, k): v for k, v in options.items() if not (k in names and names[k] in options)}
    return {**config, "method_options": upgraded}


def resolved_options(options: Any) -> dict:
    """Every option's value, defaults included (what results.json records)."""
    return dataclasses.asdict(options)
