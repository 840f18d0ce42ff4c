"""Batch normalisation in a continual sequence: three policies, chosen with ``--bn``.

Batch norm keeps state that is not a weight: running statistics, updated by every
training batch, and an affine pair (gamma, beta) that bit freezing does not cover
(they stay float). In a sequence of tasks both drift towards the newest task, so a
network whose quantised weights are perfectly protected still forgets through its
norms. bitcl offers three policies:

* ``first-task`` (default): statistics and affine parameters are learnt on task 0,
  then frozen: every later forward pass, in training too, normalises with the
  stored running statistics and gives the affine pair no gradient. Works in
  every scenario; later tasks adapt only through the (protected) weights.
* ``per-task``: one norm (statistics and affine) per task, selected by the task id
  (``set_task``). Exact isolation, so task-incremental only: the other scenarios
  give no task id at test time and are refused with a :class:`ConfigError`.
* ``train``: plain batch norm, always trained. Forgetting-prone: the statistics
  follow the latest task (the baseline that shows why a policy is needed).

Importance estimators (per-sample Fisher, MAS, ...) run with ``model.eval()``, so
every policy normalises with running statistics there and samples never interact
(the per-sample gradients of ``bitcl.importance.per_sample`` are exact).

The continual model calls ``bind_tasks(setting, tasks)`` once when it wraps the
backbone, ``set_task(t)`` on every forward pass and ``end_task(t)`` after each
task's consolidation; :class:`TaskAware` gives a backbone those three methods.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
# private torch.func helpers: the only way to keep running statistics under a transform (see below)
from torch._C._functorch import get_unwrapped, is_functorch_wrapped_tensor, peek_interpreter_stack

from bitcl.errors import ConfigError

from .factory import BN_POLICIES


def check_policy(policy: str) -> str:
    if policy not in BN_POLICIES:
        raise ConfigError(f"--bn must be one of {', '.join(BN_POLICIES)}, got {policy!r}")
    return policy


class ContinualBatchNorm2d(nn.Module):
    """``nn.BatchNorm2d`` under a continual policy (module docstring)."""

    def __init__(self, channels: int, policy: str = "first-task", tasks: int = 1):
        super().__init__()
        self.channels = channels
        self.policy = check_policy(policy)
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(self._count(tasks)))
        # a buffer, so that checkpoints (and --resume) keep the freeze
        self.register_buffer("frozen", torch.zeros((), dtype=torch.bool))
        self._frozen = False  # mirror of the buffer: reading a CUDA buffer every forward would sync
        self.task = 0

    def _count(self, tasks: int) -> int:
        return tasks if self.policy == "per-task" else 1

    def bind_tasks(self, setting: str, tasks: int) -> None:
        """Size the per-task norms for ``tasks`` tasks; refuse ``per-task`` outside task-incremental."""
        if self.policy != "per-task":
            return
        if setting != "task":
            raise ConfigError(f"--bn per-task needs a task id at test time: task-incremental only "
                              f"(this run is {setting}-incremental); use --bn first-task")
        if len(self.norms) != tasks:  # before any training: fresh norms (no RNG is consumed)
            device = self.norms[0].weight.device
            self.norms = nn.ModuleList(nn.BatchNorm2d(self.channels, device=device) for _ in range(tasks))

    def set_task(self, task: int) -> None:
        if self.policy == "per-task" and not 0 <= task < len(self.norms):
            raise ConfigError(f"task {task} has no batch norm: this model has {len(self.norms)} per-task norms")
        self.task = task

    def end_task(self, index: int) -> None:
        """After task ``index``'s consolidation: ``first-task`` freezes (from task 0 on)."""
        if self.policy == "first-task":
            self.frozen.fill_(True)
            self._frozen = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._frozen = bool(self.frozen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.norms[self.task if self.policy == "per-task" else 0]
        if self._frozen:
            # running statistics, no update; detached affine: no gradient, so optimisers skip it
            return F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight.detach(),
                                norm.bias.detach(), False, 0.0, norm.eps)
        if norm.training and peek_interpreter_stack() is not None:
            return _batch_norm_in_transform(norm, x)
        return norm(x)

    def extra_repr(self) -> str:
        return f"{self.channels}, policy={self.policy}, norms={len(self.norms)}"


def _primal(t: torch.Tensor) -> torch.Tensor:
    while is_functorch_wrapped_tensor(t):
        t = get_unwrapped(t)
    return t


def _batch_norm_in_transform(norm: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """Training-mode batch norm inside a torch.func transform (DLCFT's ``jvp`` of the linearised
    model): normalise with the batch statistics, and update the running statistics exactly as
    ``nn.BatchNorm2d`` does, from the primal values, outside the transform (an in-place update
    of a captured buffer is refused inside it)."""
    out = F.batch_norm(x, None, None, norm.weight, norm.bias, True, 0.0, norm.eps)
    with torch.no_grad(), torch._C._DisableFuncTorch():
        value = _primal(x)
        n = value.numel() / value.shape[1]
        mean = value.mean((0, 2, 3))
        var = value.var((0, 2, 3), unbiased=True) if n > 1 else torch.zeros_like(mean)
        norm.num_batches_tracked.add_(1)
        momentum = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
        norm.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        norm.running_var.mul_(1 - momentum).add_(var, alpha=momentum)
    return out


class TaskAware:
    """Mixin for backbones: forwards the continual model's task calls to every policy norm."""

    def _policy_norms(self):
        return [m for m in self.modules() if isinstance(m, ContinualBatchNorm2d)]

    def bind_tasks(self, setting: str, tasks: int) -> None:
        for norm in self._policy_norms():
            norm.bind_tasks(setting, tasks)

    def set_task(self, task: int) -> None:
        for norm in self._policy_norms():
            norm.set_task(task)

    def end_task(self, index: int) -> None:
        for norm in self._policy_norms():
            norm.end_task(index)
