"""Batch normalisation in a continual sequence: three policies, chosen with ``--bn``.

Batch norm keeps state that is not a weight: running statistics, updated by every
training batch, and an affine pair (gamma, beta) that bit freezing does not cover
(they stay float). In a sequence of tasks both drift towards the newest task, so a
network whose quantised weights are perfectly protected still forgets through its
norms. bitcl offers three policies, and a default that picks one per scenario:

* ``auto`` (the default of ``bitcl run``): ``per-task`` in task-incremental runs, where the test
  gives a task id, ``train`` in the others (:func:`resolve_policy`; results.json records the
  policy it resolved to). ``first-task`` would protect every scenario, but a ResNet-18 whose norms
  are frozen cannot learn a second task at the training defaults (the search of
  ``benchmarks/search_backbones.py``, docs/methods.md).
* ``first-task``: statistics and affine parameters are learnt on task 0,
  then frozen: every later forward pass, in training too, normalises with the
  stored running statistics and gives the affine pair no gradient. Works in
  every scenario; later tasks adapt only through the (protected) weights.
* ``per-task``: one norm (statistics and affine) per task, selected by the task id
  (``set_task``), as PackNet and Piggyback keep task-specific batch norms (Mallya &
  Lazebnik, CVPR 2018, arXiv 1711.05769; Mallya et al., ECCV 2018, arXiv 1801.06519).
  Exact isolation at 4 floats per channel per task, so task-incremental only: the other
  scenarios give no task id at test time and are refused with a :class:`ConfigError`.
* ``train``: plain batch norm, always trained. Forgetting-prone: the statistics
  follow the latest task (the baseline that shows why a policy is needed).

Importance estimators (per-sample Fisher, MAS, ...) run with ``model.eval()``, so
every policy normalises with running statistics there and samples never interact
(the per-sample gradients of ``bitcl.importance.per_sample`` are exact).

Data parallelism (``torchrun``, any default process group of more than one rank, gloo
on CPU or nccl on CUDA): a norm that learns (training mode, not frozen) normalises with
the mean and variance of the *global* batch, every rank's shard together, as
``torch.nn.SyncBatchNorm`` does on CUDA only (Ioffe & Szegedy, "Batch Normalization",
ICML 2015, arXiv 1502.03167, Alg. 1, with the mini-batch the union of the shards). The
per-channel sums, sums of squares and counts are all-reduced by a differentiable sum
over ranks, so gradients and running statistics equal those of one process on the
global batch; shards may be uneven or empty. Eval mode and frozen norms communicate
nothing.

The continual model calls ``bind_tasks(setting, tasks)`` once when it wraps the
backbone, ``set_task(t)`` on every forward pass and ``end_task(t)`` after each
task's consolidation; :class:`TaskAware` gives a backbone those three methods.

Running statistics at the end of a task (:func:`recalibrate_`): training updates them as an
exponential moving average (momentum 0.1) that starts from mean 0 and variance 1, so after
``s`` steps the initial values still weigh ``0.9^s``: 0.23 after the 14 steps of a small task.
:func:`recalibrate_` recomputes the statistics of every norm that is still learning from one pass
over a task's training data at the final weights, in training mode and without gradients, as a
cumulative average (``momentum=None``) of the batches' means and unbiased variances (the "BN
update" of SWA, Izmailov et al., UAI 2018, arXiv 1803.05407). The continual runner does not call
it yet: under torchrun each rank would recalibrate on its own shard, and 2 ranks would no longer
equal 1 process. DLCFT does not depend on it: it calibrates never-used norms itself and runs every
norm in eval mode inside the linearised model (bitcl/strategies/dlcft.py).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
# private torch.func helpers: the only way to keep running statistics under a transform (see below)
from torch._C._functorch import get_unwrapped, is_functorch_wrapped_tensor, peek_interpreter_stack

from bitcl.constants import BN_AUTO, BN_SETTINGS
from bitcl.errors import ConfigError

from .factory import BN_POLICIES


def resolve_policy(setting: str, scenario: str) -> str:
    """The policy ``--bn setting`` means in a ``scenario`` run: ``auto`` is ``per-task`` where a task
    id is given at test time (task-incremental), else ``train``; any other setting is itself."""
    if setting not in BN_SETTINGS:
        raise ConfigError(f"--bn must be one of {', '.join(BN_SETTINGS)}, got {setting!r}")
    if setting != BN_AUTO:
        return setting
    return "per-task" if scenario == "task" else "train"


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
                              f"(this run is {setting}-incremental); use --bn auto (train here) or first-task")
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
        if norm.training and _data_parallel():
            return _global_batch_norm(norm, x)
        if norm.training and peek_interpreter_stack() is not None:
            return _batch_norm_in_transform(norm, x)
        return norm(x)

    def extra_repr(self) -> str:
        return f"{self.channels}, policy={self.policy}, norms={len(self.norms)}"


def data_parallel_refusal(arch: str, model: nn.Module) -> Optional[str]:
    """Why ``model`` (built for ``--arch arch``) cannot train under torchrun, or None.

    bitcl's batch norms (:class:`bitcl.models.norm.ContinualBatchNorm2d`, every built-in backbone's)
    normalise with the statistics of the global batch under torchrun, on CPU (gloo) and CUDA alike.
    A torch batch norm outside them (a user's backbone) would normalise each rank's shard with that
    shard's statistics, so ranks (and the one-process run) would drift apart: refused."""
    synchronised = {id(inner) for m in model.modules() if isinstance(m, ContinualBatchNorm2d) for inner in m.modules()}
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and id(m) not in synchronised
           for m in model.modules()):
        return (f"--arch {arch} has a torch batch norm, whose statistics would differ between ranks under "
                "torchrun: build it with bitcl.models.norm.ContinualBatchNorm2d (synchronised over ranks) "
                "or run it in one process")
    return None


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
        _update_running_stats(norm, mean, var)
    return out


def _update_running_stats(norm: nn.BatchNorm2d, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
    """``nn.BatchNorm2d``'s update of the running statistics from a batch's mean and unbiased variance
    (call under ``no_grad``, outside any torch.func transform)."""
    norm.num_batches_tracked.add_(1)
    momentum = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
    norm.running_mean.mul_(1 - momentum).add_(mean.to(norm.running_mean.dtype), alpha=momentum)
    norm.running_var.mul_(1 - momentum).add_(unbiased_var.to(norm.running_var.dtype), alpha=momentum)


def _data_parallel() -> bool:
    """A default process group of more than one rank: training statistics span every rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) seen through by autograd and by torch.func: the sum over ranks is linear, so
    its gradient is the sum over ranks of the gradients (every rank's loss depends on every rank's
    samples through the shared statistics), and its tangent the sum of the tangents (DLCFT's jvp).
    Every rank must call it the same number of times, in the same order."""

    @staticmethod
    def forward(tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _SumOverRanks.apply(grad)

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor) -> torch.Tensor:
        return _SumOverRanks.apply(tangent)


def _global_batch_norm(norm: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """Training-mode batch norm over the union of every rank's shard (module docstring).

    Two all-reduces: the per-channel sums and counts (no gradient) give the global mean m0; then the
    sums of ``x - m0`` and of its square, in a differentiable all-reduce, give the mean (m0 plus a
    correction that carries the gradient) and the variance. Centring on m0 first matters in float32:
    ``E[x^2] - E[x]^2`` of raw sums, forward and backward, lost 2% of some gradients of a resnet18 to
    cancellation. The running statistics take the global mean and unbiased variance, as
    ``nn.BatchNorm2d`` on the global batch would, identical on every rank (the same reduced sums).
    Works inside a torch.func transform too (the sums' tangents are reduced the same way)."""
    channels = x.shape[1]
    view = (1, channels) + (1,) * (x.dim() - 2)
    dims = [0] + list(range(2, x.dim()))
    with torch.no_grad(), torch._C._DisableFuncTorch():
        value = _primal(x)
        first = torch.cat([value.sum(dims).double(),
                           torch.full((1,), value.numel() / channels, dtype=torch.float64, device=x.device)])
        dist.all_reduce(first, op=dist.ReduceOp.SUM)
    n = float(first[-1])  # equal on every rank, so every rank returns or raises (or not) together
    if n == 0:  # a part of a step that no rank holds (a replayed task absent from this global batch):
        return x  # one process would not have called the norm at all, so no statistics move
    if n == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got {n:g} over all ranks "
                         f"(input size {list(x.shape)} on this rank)")
    shift = (first[:channels] / n).to(x.dtype)
    centred = x - shift.view(view)
    total = _SumOverRanks.apply(torch.cat([centred.sum(dims), centred.square().sum(dims)]).double())
    offset = total[:channels] / n
    var = (total[channels:] / n - offset.square()).clamp_min(0)
    mean = shift + offset.to(x.dtype)
    scale = torch.rsqrt(var + norm.eps).to(x.dtype)
    if norm.affine:
        out = (x - mean.view(view)) * (scale * norm.weight).view(view) + norm.bias.view(view)
    else:
        out = (x - mean.view(view)) * scale.view(view)
    if norm.track_running_stats:
        with torch.no_grad(), torch._C._DisableFuncTorch():
            _update_running_stats(norm, _primal(mean), _primal(var) * (n / (n - 1)))
    return out


def learning_norms(net: nn.Module) -> list[nn.BatchNorm2d]:
    """The ``nn.BatchNorm2d`` that a forward pass of ``net`` in training mode would update now: per
    policy norm that is not frozen, the one its current task selects."""
    chosen = []
    for module in net.modules():
        if isinstance(module, ContinualBatchNorm2d) and not module._frozen:
            chosen.append(module.norms[module.task if module.policy == "per-task" else 0])
    return chosen


@torch.no_grad()
def recalibrate_(net: nn.Module, batches, task: int) -> int:
    """Recompute the running statistics of ``net``'s learning norms from ``batches`` (module docstring).

    ``net(x, task)`` is run in training mode on every batch ``(x, ...)``, each learning norm
    accumulating a cumulative average; ``momentum`` and the train/eval mode are restored. Returns
    the number of norms recalibrated (0: nothing ran)."""
    for module in net.modules():  # select the task's per-task norms before choosing
        if isinstance(module, ContinualBatchNorm2d) and module.policy == "per-task":
            module.set_task(task)
    norms = learning_norms(net)
    if not norms:
        return 0
    modes = {m: m.training for m in net.modules()}
    momenta = [n.momentum for n in norms]
    try:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average over the pass
        net.train()
        for batch in batches:
            net(batch[0], task)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        for module, training in modes.items():
            module.training = training
    return len(norms)


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
