"""The supervised training loop: steps, evaluation, and the task context strategies see.

Reproducibility: every random choice of task t (batch order per epoch, a strategy's
sampling, augmentation) comes from a generator seeded by ``(seed, purpose, t, ...)``
(``bitcl.train.seeds``), never from global RNG state, so ``--resume`` gives bit-identical results on CPU.

Data parallel (``torchrun``): the global batch is drawn from the shared generator and
rank r takes every world_size-th sample; the loss is summed over the shard and divided
by the global batch (times the world size, since DDP averages gradients), so uneven or
empty shards give exactly the single-process gradient. All parts of a step (joint
training's tasks) go through ONE forward call of the DDP module.
"""
from __future__ import annotations

import inspect
import math
import sys
import time
from typing import Optional

import numpy as np
import torch
from torch import nn

from bitcl.data.scenarios import Scenario, Task
from bitcl.distributed import DistContext
from bitcl.errors import ConfigError
from bitcl.quant import bit_states, project_latents_
from bitcl.strategies import RunInfo, Strategy, TaskContext
from bitcl.train import seeds
from bitcl.train.seeds import derived_seed  # noqa: F401  (re-exported: older imports of it from here)
from bitcl.train.step import StepRunner, make_optimizer, make_scheduler


class PartsForward(nn.Module):
    """``forward(inputs, tasks) -> ([net(x, t) ...], penalty)``: every part of a step and the
    strategy's penalty in one call, so that DDP sees one forward per backward (joint training's
    several tasks included) and sees every parameter the penalty touches: a parameter used only
    by the penalty (DLCFT's past task heads) would otherwise be marked unused by DDP and then
    reach its gradient hook too ("marked ready twice")."""

    def __init__(self, net: nn.Module, penalty):
        super().__init__()
        self.net = net
        self.penalty = penalty

    def forward(self, inputs: list[torch.Tensor], tasks: list[int]):
        return [self.net(x, t) for x, t in zip(inputs, tasks)], self.penalty()


class SupervisedContext(TaskContext):
    """The engine's task context: every optional service is available."""

    provides = frozenset({"retrain", "independent_gradient", "replay", "linearized_training"})

    def __init__(self, trainer: "Trainer", task: Task):
        super().__init__(trainer.model, task.index, trainer.info)
        self.trainer, self.task = trainer, task

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.task.index)

    def importance_batches(self, samples: int, batch_size: int, purpose: str):
        return self.trainer.importance_batches(self.task, samples, batch_size, purpose)

    def project(self) -> None:
        self.trainer.project()

    def retrain(self, epochs: int, tag: str) -> None:
        self.trainer.train_task(self.task, epochs=epochs, tag=tag, ctx=self)

    def independent_gradient(self, params):
        return self.trainer.independent_gradient(params)

    def task_data_bytes(self) -> int:
        t = self.task
        return sum(v.numel() * v.element_size() for v in (t.x_train, t.y_train))


class Trainer:
    """Trains and evaluates one model with one strategy over a scenario's tasks."""

    def __init__(self, model: nn.Module, strategy: Strategy, scenario: Scenario, config, info: RunInfo):
        self.model, self.strategy, self.scenario, self.config, self.info = model, strategy, scenario, config, info
        self.world: DistContext = info.world
        self.device = info.device
        self.net = strategy.training_module() or model        # what is trained and evaluated
        self.parts = PartsForward(self.net, strategy.penalty)
        self.train_model: nn.Module = self.parts
        self.bit_states = [state for _, state in bit_states(model)]
        self.hook_seconds = 0.0
        self._current: Optional[tuple[list[Task], list[int]]] = None
        self._independent: Optional[torch.Generator] = None

    def wrap_ddp(self) -> None:
        from torch.nn.parallel import DistributedDataParallel
        # buffers (codes, frozen counts) are not broadcast every step: the projection is
        # deterministic, so they stay identical; a checksum after each task proves it.
        # Unused parameters: the heads of other tasks.
        # torch >= 2.13 renamed broadcast_buffers (and warns on the old name)
        no_sync = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})
        self.train_model = DistributedDataParallel(
            self.parts, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=True, **no_sync)

    def unwrap(self) -> None:
        self.train_model = self.parts  # drop DDP's reducer (and its gloo work) before the group goes

    # -- randomness --------------------------------------------------------------------
    def generator(self, *purpose) -> torch.Generator:
        """A CPU generator for ``purpose`` (e.g. ``("fisher", task)``) of this run's seed."""
        return seeds.generator(self.config.seed, *purpose)

    def importance_batches(self, task: Task, samples: int, batch_size: int, purpose: str):
        """Batches ``(x, y, u)`` of a fixed random subset of ``task``'s training data and the global
        sample count (see ``TaskContext``). ``samples <= 0`` means all.

        The subset is cut into *global* batches of ``batch_size`` and each rank gets its share
        (every world_size-th sample) of each: every rank gets the same number of batches (a share
        may be empty), and a measure that is not a plain sum over samples (ANPyC's score of a
        batch gradient) can all-reduce per batch and equal the one-process value."""
        n = len(task.y_train)
        k = n if samples <= 0 else min(samples, n)
        generator = self.generator(purpose, task.index)
        idx = torch.randperm(n, generator=generator)[:k]
        uniforms = torch.rand(k, generator=generator, dtype=torch.float64)
        rank, world = self.world.rank, self.world.world_size
        batches = []
        for s in range(0, k, batch_size):
            share, u = idx[s:s + batch_size][rank::world], uniforms[s:s + batch_size][rank::world]
            batches.append((task.inputs(task.x_train[share]).to(self.device), task.y_train[share].to(self.device), u))
        return batches, k

    # -- steps ------------------------------------------------------------------------------
    def project(self) -> None:
        """Keep every quantised weight inside the window its frozen bits allow (codes refreshed when read)."""
        project_latents_(self.bit_states)

    def _optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return make_optimizer(params, self.config.optimizer, self.config.lr, self.config.momentum)

    def _batch(self, task: Task, indices: torch.Tensor, augment: Optional[torch.Generator]):
        x = task.inputs(task.x_train[indices])
        if augment is not None:
            from bitcl.data.transforms import random_crop_flip
            x = random_crop_flip(x, 4, augment)
        y = task.y_train[indices]
        if self.device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def task_loss(self, parts: list[Task], offsets: list[int], indices: torch.Tensor, global_count: int,
                  module: Optional[nn.Module] = None, augment: Optional[torch.Generator] = None
                  ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Loss of this rank's samples ``indices`` (into the concatenated ``parts``), summed and divided
        by the *global* batch size times the world size (DDP averages over ranks), and the strategy's
        penalty (None: no penalty), both from one forward call."""
        scale = self.world.world_size / global_count
        which = torch.bucketize(indices, torch.tensor(offsets[1:]), right=True)
        xs, ys, tasks = [], [], []
        for k, task in enumerate(parts):
            local = indices[which == k] - offsets[k]
            # under torchrun every part is forwarded on every rank, empty or not: a learning batch norm
            # all-reduces once per forward, and ranks must make the same collectives (issue 14)
            if len(local) or self.world.enabled or (k == 0 and len(indices) == 0):
                x, y = self._batch(task, local, augment)
                xs.append(x)
                ys.append(y)
                tasks.append(task.index)
        outputs, penalty = (module or self.train_model)(xs, tasks)
        total = sum(self.strategy.loss(out, y) for out, y in zip(outputs, ys))
        return total * scale, penalty

    def train_task(self, task: Task, epochs: Optional[int] = None, tag: str = "order",
                   ctx: Optional[TaskContext] = None) -> list[float]:
        """Train ``task`` for ``epochs`` (default: the configured number); returns seconds per epoch.
        ``tag`` names the batch-order stream, so extra passes (ANPyC's retraining) draw their own."""
        cfg = self.config
        ctx = ctx or SupervisedContext(self, task)
        epochs = cfg.epochs if epochs is None else epochs
        parts = [self.scenario.tasks[i] for i in self.strategy.training_tasks(task.index)]
        offsets = list(np.cumsum([0] + [len(p.y_train) for p in parts]))
        n = int(offsets[-1])
        self._current = (parts, offsets)
        self._independent = self.generator("independent", task.index)
        if n < self.world.world_size:
            raise ConfigError(f"task {task.index} has {n} training samples, fewer than the {self.world.world_size} ranks")
        optimizer = self._optimizer()
        steps_per_epoch = math.ceil(n / cfg.batch_size)
        step_once = StepRunner(self.strategy, ctx, optimizer,
                               make_scheduler(optimizer, cfg.lr_schedule, epochs * steps_per_epoch),
                               self.project, hint="lower --lr?")
        bar = self._progress_bar(task, epochs * steps_per_epoch)
        self.net.train()
        epoch_seconds = []
        for epoch in range(epochs):
            start = time.perf_counter()
            order = torch.randperm(n, generator=self.generator(tag, task.index, epoch))
            augment = self.generator("augment", tag, task.index, epoch) if cfg.augment else None
            running, seen = 0.0, 0
            for step in range(steps_per_epoch):
                batch = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
                global_count = len(batch)
                if self.world.enabled:
                    batch = batch[self.world.rank::self.world.world_size]
                loss, penalty = self.task_loss(parts, offsets, batch, global_count, augment=augment)
                running += step_once(loss, penalty, task.index, epoch, step)
                seen += 1
                if bar is not None and (step % 20 == 0 or step == steps_per_epoch - 1):
                    bar.update(step + 1 + epoch * steps_per_epoch - bar.n)
                    bar.set_postfix(epoch=epoch, loss=f"{running / seen:.4f}")
            epoch_seconds.append(time.perf_counter() - start)
        self.hook_seconds += step_once.hook_seconds
        if bar is not None:
            bar.close()
        return epoch_seconds

    def independent_gradient(self, params: dict[str, nn.Parameter]) -> dict[str, torch.Tensor]:
        """Gradient of (task loss + penalty) on a fresh minibatch drawn independently of the step's
        batch, at the current parameters (SIU, SIB, SOS). ``.grad`` is untouched.

        Under DDP each rank differentiates its shard's share of the global-mean loss and the shares
        are summed over ranks, which gives exactly the one-process gradient; the penalty, identical
        on every rank, is added once after the sum (not once per rank)."""
        parts, offsets = self._current
        n = int(offsets[-1])
        batch = torch.randint(n, (self.config.batch_size,), generator=self._independent)
        global_count = len(batch)
        if self.world.enabled:
            batch = batch[self.world.rank::self.world.world_size]
        # no DDP reducer for autograd.grad; undo the world-size factor that DDP's averaging needs
        data_loss, penalty = self.task_loss(parts, offsets, batch, global_count, module=self.parts)
        data_loss = data_loss / self.world.world_size
        names = list(params)
        grads = torch.autograd.grad(data_loss, [params[k] for k in names], allow_unused=True)
        penalty_grads = (torch.autograd.grad(penalty, [params[k] for k in names], allow_unused=True)
                         if penalty is not None and penalty.requires_grad else [None] * len(names))
        out = {}
        for name, g, pg in zip(names, grads, penalty_grads):
            g = torch.zeros_like(params[name]) if g is None else g
            g = self.world.all_reduce_(g.contiguous())
            out[name] = g if pg is None else g + pg
        return out

    def _progress_bar(self, task: Task, total: int):
        if self.config.quiet or not self.world.is_main or not sys.stderr.isatty():
            return None
        from tqdm import tqdm
        return tqdm(total=total, desc=f"task {task.index + 1}/{len(self.scenario)}", leave=False, file=sys.stderr)

    # -- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, task: Task) -> float:
        """Accuracy on ``task``'s test split (sharded over ranks, counts all-reduced)."""
        was_training = self.net.training
        self.net.eval()
        n = len(task.y_test)
        indices = torch.arange(self.world.rank, n, self.world.world_size)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for start in range(0, len(indices), self.config.eval_batch_size):
            idx = indices[start:start + self.config.eval_batch_size]
            x = task.inputs(task.x_test[idx]).to(self.device)
            pred = self.net(x, task.index).argmax(1)
            correct += (pred == task.y_test[idx].to(self.device)).sum()
        self.world.all_reduce_(correct)
        self.net.train(was_training)
        return int(correct) / n
