"""One task of a supervised continual run, shared by ``bitcl run`` (``Engine``) and ``bitcl.fit``.

``train_and_consolidate``: ``before_task`` -> training (the loop's own, each step
:class:`~bitcl.train.step.StepRunner`) -> ``end_task`` (the method's consolidation: BLIP's
frozen bits, EWC's Fisher...) and the backbone's own end of task (batch norm policies),
each timed. ``evaluate_and_save``: every task's test accuracy (a row of the accuracy
matrix, docs/contracts/results.md), the capacity and the method's kept state recorded, then the
task's checkpoint and its log line. The engine checks that its ranks agree in between.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional, Protocol

from torch import nn

from bitcl.strategies import Strategy, TaskContext
from bitcl.train import learned
from bitcl.train.results import RunResult, bit_capacity
from bitcl.train.rundir import RunDirectory


class TaskLoop(Protocol):
    """What drives a task's training: ``train_task`` (seconds per epoch) and the seconds its
    steps spent in the strategy's per-step hooks."""

    hook_seconds: float

    def train_task(self, task: Any, epochs: Optional[int] = None, tag: str = "order",
                   ctx: Optional[TaskContext] = None) -> list[float]: ...


def train_and_consolidate(loop: TaskLoop, task: Any, index: int, ctx: TaskContext, strategy: Strategy,
                          model: nn.Module, result: RunResult) -> None:
    """Train task ``index`` (``task`` as ``loop.train_task`` takes it) and consolidate it, recording the timing."""
    strategy.before_task(ctx)
    start = time.perf_counter()
    loop.hook_seconds = 0.0
    epochs = loop.train_task(task, ctx=ctx)
    # the hooks' time is read before consolidation, which may train again (ANPyC)
    result.record_training(time.perf_counter() - start, loop.hook_seconds, epochs)
    start = time.perf_counter()
    _recalibrate_batch_norms(strategy, model, ctx, index)
    strategy.end_task(ctx)
    if hasattr(model, "end_task"):  # backbones whose batch norm changes after a task
        model.end_task(index)
    result.record_consolidation(time.perf_counter() - start)


RECALIBRATION_BATCH = 256


def _recalibrate_batch_norms(strategy: Strategy, model: nn.Module, ctx: TaskContext, index: int) -> None:
    """Running statistics of the batch norms still learning, recomputed at the task's final weights
    (``bitcl.models.norm.recalibrate_``): what eval mode, the consolidation and a frozen norm use.
    Through the strategy's training module (DLCFT: the linearised model, whose norms see θ0)."""
    from bitcl.models.norm import learning_norms, recalibrate_
    net = strategy.training_module() or model
    if not learning_norms(net):
        return  # no policy norm learns (MLP, frozen norms): no pass, no data drawn
    batches, _ = ctx.importance_batches(0, RECALIBRATION_BATCH, "batch-norm")
    recalibrate_(net, batches, index)


def evaluate_and_save(index: int, evaluate_all: Callable[[], list[float]], strategy: Strategy, model: nn.Module,
                      result: RunResult, rundir: RunDirectory, config: dict, quiet: bool,
                      model_spec: Optional[dict] = None) -> None:
    """Evaluate every task after task ``index``, record the row, write ``task-<index>.safetensors``
    and log the task's line. The checkpoint's progress (what ``--resume`` reads back) holds the task,
    the run's ``config``, the results so far and (``model_spec``) what rebuilds the model."""
    start = time.perf_counter()
    row = evaluate_all()
    result.record_evaluation(row, time.perf_counter() - start, bit_capacity(model), strategy.state_bytes(),
                             strategy.task_results())
    progress = {"task": index, "config": config, "result": result.progress()}
    if model_spec is not None:
        progress["model"] = model_spec
    rundir.save_checkpoint(index, model, strategy.state_tensors(), progress)
    rundir.log(result.task_line(), quiet)
    for line in learned.warning_lines([f for f in result.not_learned if f["task"] == index]):
        rundir.log(line, quiet)


__all__ = ["TaskLoop", "evaluate_and_save", "train_and_consolidate"]
