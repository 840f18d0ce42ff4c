"""What a strategy sees of a run: :class:`RunInfo` (fixed) and a :class:`TaskContext` per task.

Strategies never see the training loop that drives them. The supervised engine
(``bitcl.train``), the reinforcement-learning loop (``bitcl.rl``), the Python
``fit`` API and the Avalanche plugins each build a context of their own and call
the same hooks, so one method file serves all of them.

A loop declares the optional services it provides in :attr:`TaskContext.provides`;
a strategy declares what it needs in ``Strategy.needs``. A method whose needs a
loop cannot meet is refused before training starts (see ``check_supported``).

Services:

* ``logits(x)``: the current task's outputs whose log-softmax is the model's
  log-likelihood (the task head's logits; an agent's policy logits in RL). Every
  Fisher, MAS or entropy measure is defined through it.
* ``importance_batches(samples, batch_size, purpose)``: ``([(x, y, u)], count)``, a fixed
  random subset of the task's data (this rank's share), ``u`` one uniform number per
  sample drawn in global sample order (label sampling that does not depend on the
  number of ranks); ``count`` is the global sample count, so all-reduced sums divide
  into per-sample means.
* ``project()``: re-project every quantised weight into its frozen-bit window.
* ``retrain(epochs, tag)`` (service ``"retrain"``): more training passes on the task.
* ``independent_gradient(params)`` (service ``"independent_gradient"``): the gradient of
  the task loss plus penalty on a fresh minibatch, at the current parameters.
* ``task_data_bytes()`` (service ``"replay"``, with ``Strategy.training_tasks``): bytes of the
  task's training data, for methods that keep it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from bitcl.distributed import DistContext
from bitcl.errors import ConfigError

# optional services a loop may provide, and what each is for
SERVICES = {
    "retrain": "extra training passes on the current task (ANPyC's retraining after pruning)",
    "independent_gradient": "gradients on an independent minibatch (SIU, SIB, SOS)",
    "replay": "training on the data of past tasks (joint training)",
    "linearized_training": "training a strategy-provided module in place of the model (DLCFT)",
}


@dataclass(frozen=True)
class RunInfo:
    """Facts of the run a strategy may read when it is built."""

    num_tasks: int
    setting: str                     # task, domain, class, data (supervised) or "rl"
    device: torch.device = torch.device("cpu")
    world: DistContext = field(default_factory=DistContext)
    pretrained: bool = False         # the model starts from --pretrained weights (DLCFT's linearisation point)


class Unsupported(ConfigError):
    """A strategy asked its context for a service the driving loop does not provide."""


class TaskContext:
    """The narrow view of one task handed to every strategy hook (see module docstring)."""

    provides: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, model: nn.Module, task_index: int, info: RunInfo):
        self.model = model
        self.task_index = task_index
        self.info = info

    @property
    def world(self) -> DistContext:
        return self.info.world

    @property
    def device(self) -> torch.device:
        return self.info.device

    @property
    def num_tasks(self) -> int:
        return self.info.num_tasks

    # -- required ----------------------------------------------------------------------
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def importance_batches(self, samples: int, batch_size: int, purpose: str):
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    def project(self) -> None:
        """Move every quantised latent weight into the window its frozen bits allow (codes refreshed
        when read: ``BitState.project_latent_``)."""
        from bitcl.quant import bit_states
        for _, state in bit_states(self.model):
            state.project_latent_()

    # -- optional services -----------------------------------------------------------------
    def retrain(self, epochs: int, tag: str) -> None:
        raise Unsupported(f"{type(self).__name__} cannot retrain a task ({SERVICES['retrain']})")

    def independent_gradient(self, params: dict[str, nn.Parameter]) -> dict[str, torch.Tensor]:
        raise Unsupported(f"{type(self).__name__} cannot draw independent minibatches")

    def task_data_bytes(self) -> int:
        raise Unsupported(f"{type(self).__name__} keeps no task data")


def check_supported(strategy_cls, provides: frozenset[str], where: str) -> None:
    """ConfigError (before any training) when ``where`` lacks a service the method needs."""
    missing = sorted(set(strategy_cls.needs) - set(provides))
    if missing:
        detail = "; ".join(f"{m}: {SERVICES.get(m, m)}" for m in missing)
        raise ConfigError(f"method {strategy_cls.name!r} cannot run in {where} (needs {detail})")
