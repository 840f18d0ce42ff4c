"""The one continual runner of every driver: ``bitcl run``, ``bitcl.fit`` and ``bitcl rl``.

:class:`ContinualRun` owns everything around the training of a task: ``--resume`` (the
newest checkpoint of the run directory, same settings required), then for each task

    context -> ``before_task`` -> training (the driver's, every optimiser step through
    :class:`~bitcl.train.step.StepRunner`) -> ``end_task`` (the method's consolidation: BLIP's
    frozen bits, EWC's Fisher...) and the backbone's own end of task (batch norm policies)
    -> the driver's check of the consolidated state -> evaluation of every task (a row of
    the accuracy or return matrix) -> the task's checkpoint -> its log line,

each timed, and at the end results.json. A driver supplies only a :class:`TaskLoop`: how to
build a task's context, how to train one task, how to evaluate every task. The Avalanche
plugins (``bitcl.avalanche``) cannot own Avalanche's loop; they call the same hooks in the
same order, which ``tests/train/test_hook_order.py`` checks for all four drivers.

A checkpoint's progress (``bitcl_progress``, what ``--resume`` reads back) is, for every
driver, ``{"task", "config", "result"[, "model"]}``: the last complete task, the run's
settings, the result so far (``result.progress()``) and what rebuilds the model.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Optional, Protocol

from torch import nn

from bitcl.strategies import Strategy, TaskContext
from bitcl.train import learned
from bitcl.train.results import bit_capacity
from bitcl.train.resume import resume_latest
from bitcl.train.rundir import RunDirectory


class TaskLoop(Protocol):
    """What a driver supplies to :class:`ContinualRun`.

    ``hook_seconds`` sums the time its steps spent in the strategy's per-step hooks (the runner
    zeroes it before each task); ``train`` returns what the result records of the training
    (seconds per epoch for supervised runs, environment steps for ``bitcl rl``)."""

    hook_seconds: float

    def task_context(self, index: int) -> TaskContext:
        """The context of task ``index`` (also where a loop readies the model for the task)."""

    def train(self, index: int, ctx: TaskContext) -> Any:
        """Train task ``index``; every optimiser step through the one step."""

    def evaluate_all(self) -> list[float]:
        """The score of every task of the sequence (accuracy, or mean return)."""

    def after_consolidation(self, index: int) -> None:
        """Called between consolidation and evaluation (the engine checks its ranks agree)."""


class RunRecord(Protocol):
    """What :class:`ContinualRun` records into: ``RunResult`` or ``bitcl.rl``'s ``RLResult``."""

    def record_training(self, seconds: float, hook_seconds: float, trained: Any) -> None: ...

    def record_consolidation(self, seconds: float) -> None: ...

    def record_evaluation(self, row: list[float], seconds: float, capacity, state_bytes: int,
                          task_results: dict) -> None: ...

    def task_line(self) -> str: ...

    def progress(self) -> dict: ...

    def restore(self, progress: dict) -> None: ...


class ContinualRun:
    """Runs ``loop`` over tasks ``0..tasks-1`` with ``strategy`` on ``model``, recording into
    ``result`` and writing into ``rundir`` (module docstring).

    ``config`` is the run's settings as recorded (``config.to_dict()``): a resumed run must
    match them but for the names in ``free``; ``flag`` starts the message that refuses other
    settings. ``model_spec`` (when given) is stored in every checkpoint. ``barrier`` (the
    engine's process group) is called after the main rank opened the run directory."""

    def __init__(self, loop: TaskLoop, strategy: Strategy, model: nn.Module, tasks: int, result: RunRecord,
                 rundir: RunDirectory, config: dict, *, quiet: bool = True, resume: bool = False,
                 free: Iterable[str] = (), flag: str = "--resume", model_spec: Optional[dict] = None,
                 barrier: Optional[Callable[[], None]] = None, restore_scales: bool = False):
        self.loop, self.strategy, self.model, self.tasks, self.result = loop, strategy, model, tasks, result
        self.rundir, self.config, self.quiet, self.resume = rundir, config, quiet, resume
        self.free, self.flag, self.model_spec, self.barrier = tuple(free), flag, model_spec, barrier
        self.restore_scales = restore_scales  # fit: a user's rebuilt model takes the checkpoint's scales
        self.next_task = 0

    def run(self, before: Optional[Callable[[], None]] = None) -> RunRecord:
        """Resume (when asked), call ``before`` (once the results so far are known), run the
        remaining tasks, write results.json; the run directory is released on success and on
        error alike (``--overwrite`` keeps the old run unless this one completes)."""
        if self.rundir.is_main:
            self.rundir.open()
        if self.barrier is not None:
            self.barrier()
        success = False
        try:
            if self.resume:
                self._resume()
            if before is not None:
                before()
            for t in range(self.next_task, self.tasks):
                self.run_task(t)
            self.result.extra.update(self.strategy.run_results())
            self.rundir.write_results(self.result)
            success = True
        finally:
            self.rundir.close(success)
        return self.result

    def _resume(self) -> None:
        resumed = resume_latest(self.rundir, self.config, self.model, self.strategy, free=self.free, flag=self.flag,
                                restore_scales=self.restore_scales)
        if resumed is None:
            return
        self.result.restore(resumed.progress["result"])
        self.next_task = resumed.task + 1
        self.rundir.log(f"resumed from {resumed.path} (tasks 0..{resumed.task} complete)", self.quiet)

    def run_task(self, t: int) -> None:
        """Train, consolidate, evaluate and checkpoint task ``t`` (module docstring)."""
        loop, strategy, model, result = self.loop, self.strategy, self.model, self.result
        ctx = loop.task_context(t)
        strategy.before_task(ctx)
        start = time.perf_counter()
        loop.hook_seconds = 0.0
        trained = loop.train(t, ctx)
        # the hooks' time is read before consolidation, which may train again (ANPyC)
        result.record_training(time.perf_counter() - start, loop.hook_seconds, trained)
        start = time.perf_counter()
        strategy.end_task(ctx)
        if hasattr(model, "end_task"):  # backbones whose batch norm changes after a task
            model.end_task(t)
        result.record_consolidation(time.perf_counter() - start)
        loop.after_consolidation(t)
        start = time.perf_counter()
        row = loop.evaluate_all()
        result.record_evaluation(row, time.perf_counter() - start, bit_capacity(model), strategy.state_bytes(),
                                 strategy.task_results())
        progress = {"task": t, "config": self.config, "result": result.progress()}
        if self.model_spec is not None:
            progress["model"] = self.model_spec
        self.rundir.save_checkpoint(t, model, strategy.state_tensors(), progress)
        self.rundir.log(result.task_line(), self.quiet)
        for line in learned.warning_lines([f for f in getattr(result, "not_learned", []) if f["task"] == t]):
            self.rundir.log(line, self.quiet)
        self.next_task = t + 1


__all__ = ["ContinualRun", "RunRecord", "TaskLoop"]
