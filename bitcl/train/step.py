"""One optimiser step of continual training, shared by ``bitcl run`` (``Trainer``) and ``bitcl.fit``.

Per step: ``loss + penalty`` -> refuse a non-finite value -> backward -> the strategy's
``after_backward`` -> gradient-norm clipping (an option: PPO's) -> optimiser step -> lr
schedule -> projection of every quantised weight
onto the window its frozen bits allow (BLIP, Shi et al., CVPR 2021, arXiv 2105.04444: the
latent weights are kept in their frozen-bit intervals after every update; docs/methods.md "Bits,
planes and freezing") -> the strategy's ``after_step``. Each loop computes its own loss
(the engine's is sharded over ranks, ``fit``'s is a user's batch, ``bitcl rl``'s is PPO's
clipped surrogate of a minibatch): everything after the forward pass lives here, so a fix to
the step reaches every loop.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Iterable, Optional

import torch
from torch import nn

from bitcl.errors import TrainingDiverged
from bitcl.strategies import Strategy, TaskContext


def make_optimizer(params: Iterable[nn.Parameter], name: str, lr: float, momentum: float = 0.0
                   ) -> torch.optim.Optimizer:
    """A fresh optimiser for one task: ``"adam"`` or SGD with ``momentum`` (``--optimizer``)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=momentum)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, steps: int
                   ) -> Optional[torch.optim.lr_scheduler.LRScheduler]:
    """``"cosine"``: the learning rate annealed to 0 over the task's ``steps``; ``"none"``: None."""
    if schedule != "cosine":
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))


class StepRunner:
    """The step (module docstring) for one task's optimiser, context and strategy.

    ``project`` re-projects the quantised weights (the loop's cached list of bit states, or
    ``ctx.project``); ``hint`` ends the divergence message (``"lower --lr?"`` for the CLI).
    ``max_grad_norm`` (None: no clipping) clips the gradient norm of the optimiser's parameters
    after ``after_backward``, before the optimiser step (``torch.nn.utils.clip_grad_norm_``).
    :attr:`hook_seconds` sums the time spent in the strategy's per-step hooks."""

    def __init__(self, strategy: Strategy, ctx: TaskContext, optimizer: torch.optim.Optimizer,
                 scheduler: Optional[torch.optim.lr_scheduler.LRScheduler], project: Callable[[], None],
                 hint: str = "lower lr?", max_grad_norm: Optional[float] = None):
        self.strategy, self.ctx, self.optimizer, self.scheduler = strategy, ctx, optimizer, scheduler
        self.project, self.hint, self.max_grad_norm = project, hint, max_grad_norm
        self.clipped = [p for group in optimizer.param_groups for p in group["params"]] \
            if max_grad_norm is not None else []
        self.hook_seconds = 0.0

    def __call__(self, loss: torch.Tensor, penalty: Optional[torch.Tensor], task: int, epoch: int,
                 step: int) -> float:
        """Take the step for ``loss`` (+ ``penalty``, None: none); returns the total's value.
        TrainingDiverged (naming task, epoch and step) before any update when it is not finite."""
        total = loss if penalty is None else loss + penalty
        value = total.item()
        if not math.isfinite(value):
            raise TrainingDiverged(f"task {task}, epoch {epoch}, step {step}: loss is {value} "
                                   f"({self.hint}); checkpoints of earlier tasks are intact")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        start = time.perf_counter()
        self.strategy.after_backward(self.ctx)
        self.hook_seconds += time.perf_counter() - start
        if self.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.clipped, self.max_grad_norm)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.project()
        start = time.perf_counter()
        self.strategy.after_step(self.ctx)
        self.hook_seconds += time.perf_counter() - start
        return value


__all__ = ["StepRunner", "make_optimizer", "make_scheduler"]
