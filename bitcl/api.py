"""``bitcl.fit``: the whole continual loop on a user's model and data, with any bitcl method.

``tasks`` is a sequence of ``(train, test)`` pairs, each a torch Dataset or DataLoader of
``(input, label)`` items. For every task: ``before_task`` -> per step ``loss + penalty``,
backward, ``after_backward``, optimiser step, bit projection, ``after_step`` -> ``end_task``;
then every task's test split is evaluated, and (with ``out``) a checkpoint is written. The
results (:class:`~bitcl.train.results.RunResult`) and the files in ``out`` are those of
``bitcl run``: the same results.json contract (ACC, BWT and forgetting as in DESIGN.md) and
the same safetensors checkpoints.

Scenarios with a user's model:

* ``heads=[...]`` (one module per task, mapping the model's features to that task's
  classes): task-incremental, the model is the shared backbone (protected), each head is
  trained on its own task only (not protected), as bitcl's own multi-head models;
* no heads: one output layer shared by all tasks, ``scenario="domain"`` (default) or
  ``"class"``. Every trainable parameter is protected. Unlike the CLI, outputs of classes
  not seen yet are not masked in the class-incremental scenario.

For users who keep their own loop: :func:`make_strategy` builds a strategy object and
:class:`~bitcl.api_context.DataContext` the per-task context its hooks take (see
``examples/own_loop.py``).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bitcl.interop  # noqa: F401  (makes torchvision importable for users' models and datasets)
from bitcl.api_context import DataContext, TaskData, check_task_data, generator, is_map_style, split_batch
from bitcl.errors import ConfigError, DataError
from bitcl.models import ContinualModel
from bitcl.quant import bit_states
from bitcl.strategies import RunInfo, Strategy, check_supported, get_strategy, make_options, resolved_options
from bitcl.train.results import RunResult
from bitcl.train.resume import resume_latest
from bitcl.train.rundir import RunDirectory
from bitcl.train.step import StepRunner, make_optimizer, make_scheduler
from bitcl.train.task import evaluate_and_save, train_and_consolidate

FIT_SERVICES = frozenset({"independent_gradient", "retrain"})
OptimizerSpec = Union[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]]


class HeadedModel(nn.Module):
    """A user's backbone with one head per task: ``forward(x, task)``; ``backbone_parameters()``
    (the shared, protected part) excludes the heads, as bitcl's ContinualModel does."""

    def __init__(self, backbone: nn.Module, heads: Sequence[nn.Module]):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleList(heads)

    def forward(self, x: torch.Tensor, task: int = 0) -> torch.Tensor:
        return self.heads[task](self.backbone(x))

    def backbone_parameters(self):
        return self.backbone.named_parameters(prefix="backbone")


@dataclasses.dataclass
class FitConfig:
    """Every setting that shaped a ``fit`` run (results.json ``config``)."""

    method: str
    scenario: str
    seed: int
    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    momentum: float
    lr_schedule: str
    eval_batch_size: int
    device: str
    benchmark: str = "user"
    method_options: dict = dataclasses.field(default_factory=dict)
    model: str = ""
    heads: int = 0
    loop: str = "bitcl.fit"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def benchmark_tasks(benchmark: str = "split-mnist", data: Optional[str] = None, scenario: str = "task",
                    tasks: Optional[int] = None, seed: int = 0,
                    classes: Optional[list[int]] = None) -> list[tuple[TensorDataset, TensorDataset]]:
    """The tasks ``bitcl run --benchmark B --data D --scenario S --tasks T --seed S --classes C`` trains
    on, as ``(train, test)`` TensorDatasets of ``(image, label)`` (labels as the CLI's heads see them;
    ``data=None``: the embedded MNIST subset). For trying ``fit`` and comparing it with the CLI."""
    from bitcl.data import build_scenario, load_source
    built = build_scenario(benchmark, load_source(data), scenario, tasks, seed, classes)
    return [(TensorDataset(t.inputs(t.x_train), t.y_train), TensorDataset(t.inputs(t.x_test), t.y_test))
            for t in built.tasks]


def make_strategy(method: str, model: nn.Module, num_tasks: int, scenario: str = "domain",
                  device: Union[str, torch.device] = "cpu", **options) -> Strategy:
    """A bitcl strategy object for a user's own loop (explicit hooks; module docstring of
    ``bitcl.strategies.base``). ``options`` are the method's options (``fisher_prior=1e-8``);
    unknown or invalid ones raise ConfigError, as does a method that needs Bit layers on a
    model without them (``bitcl.quantize_`` first)."""
    cls = get_strategy(method)
    _check_method(cls, model, scenario)
    return cls(make_options(cls, options), model, RunInfo(num_tasks, scenario, torch.device(device)))


def _check_method(cls: type[Strategy], model: nn.Module, scenario: str) -> None:
    if scenario not in cls.scenarios:
        raise ConfigError(f"method {cls.name!r} does not support the {scenario!r} scenario "
                          f"(supported: {', '.join(cls.scenarios)})")
    if cls.requires_quantized and not any(True for _ in bit_states(model)):
        raise ConfigError(f"method {cls.name!r} needs Bit layers: call bitcl.quantize_(model, BitConfig(...)) first")


def known_labels(data: TaskData) -> Optional[torch.Tensor]:
    """All labels of a TensorDataset (or a DataLoader over one) without iterating it; else None."""
    dataset = data.dataset if isinstance(data, DataLoader) else data
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        return dataset.tensors[1]
    return None


def check_labels_fit(task: int, labels: Optional[torch.Tensor], logits: torch.Tensor) -> None:
    """DataError naming the task, its labels and the head size when a label has no output to go to
    (e.g. labels 2, 3 given to a 2-way head), instead of torch's ``IndexError: Target 2 is out of bounds``."""
    if labels is None or labels.numel() == 0 or logits.ndim != 2:
        return
    outputs = logits.shape[1]
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= outputs:
        present = torch.unique(labels.detach().cpu()).tolist()
        shown = ", ".join(map(str, present[:8])) + (", ..." if len(present) > 8 else "")
        raise DataError(f"tasks[{task}] train: labels {shown} do not fit the model's {outputs} outputs for task "
                        f"{task} (labels must lie in 0..{outputs - 1}; number each task's classes from 0, "
                        "or give the head more outputs)")


def _check_tasks(tasks) -> list[tuple[TaskData, TaskData]]:
    if isinstance(tasks, (str, bytes)) or not hasattr(tasks, "__len__") or len(tasks) == 0:
        raise ConfigError("tasks must be a non-empty sequence of (train, test) pairs")
    pairs = []
    for t, pair in enumerate(tasks):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ConfigError(f"tasks[{t}] must be a (train, test) pair of Datasets or DataLoaders")
        check_task_data(pair[0], f"tasks[{t}] train")
        check_task_data(pair[1], f"tasks[{t}] test")
        pairs.append((pair[0], pair[1]))
    return pairs


def _positive(name: str, value, kind=int) -> None:
    ok = (isinstance(value, int) and not isinstance(value, bool)) if kind is int else \
        (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))
    if not ok or value <= 0:
        raise ConfigError(f"{name} must be a positive {'integer' if kind is int else 'number'}, got {value!r}")


def _resolve_scenario(model: nn.Module, heads, scenario: Optional[str], num_tasks: int):
    """``(scenario, heads)`` for this model, or ConfigError for a combination fit cannot run."""
    if isinstance(model, ContinualModel):  # bitcl's own backbone and heads
        if heads is not None or scenario not in (None, model.setting):
            raise ConfigError(f"this ContinualModel was built for the {model.setting!r} scenario and has its heads")
        if model.setting == "class":
            raise ConfigError("class-incremental runs of bitcl's own models need the CLI's growing head "
                              "(bitcl run --scenario class)")
        return model.setting, None
    if heads is not None:
        heads = list(heads)
        if len(heads) != num_tasks or not all(isinstance(h, nn.Module) for h in heads):
            raise ConfigError(f"heads must hold one nn.Module per task ({num_tasks}), got {len(heads)}")
        if scenario not in (None, "task"):
            raise ConfigError(f"heads=[...] means the task-incremental scenario, not {scenario!r}")
        return "task", heads
    scenario = scenario or "domain"
    if scenario == "task":
        raise ConfigError("task-incremental learning with a user's model needs heads=[one module per task]; "
                          "without heads use scenario='domain' or 'class' (one shared output layer)")
    if scenario not in ("domain", "class"):
        raise ConfigError(f"scenario must be 'task', 'domain' or 'class', got {scenario!r}")
    return scenario, None


class _FitLoop:
    """One ``fit`` run: the model (wrapped with its heads), the strategy, the task data."""

    def __init__(self, net: nn.Module, strategy: Strategy, tasks, config: FitConfig,
                 optimizer: OptimizerSpec, task_aware: bool, rundir: RunDirectory, quiet: bool):
        self.net, self.strategy, self.tasks, self.config = net, strategy, tasks, config
        self.optimizer_spec, self.task_aware, self.rundir, self.quiet = optimizer, task_aware, rundir, quiet
        self.device = torch.device(config.device)
        self.hook_seconds = 0.0
        self.result = RunResult(config, len(tasks), params=sum(p.numel() for p in net.parameters()))

    def forward_for(self, task: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return (lambda x: self.net(x, task)) if self.task_aware else self.net

    def context(self, t: int) -> DataContext:
        return DataContext(self.net, self.tasks[t][0], t, self.strategy.info, seed=self.config.seed,
                           forward=self.forward_for(t), strategy=self.strategy, batch_size=self.config.batch_size,
                           retrain=lambda epochs, tag: self.train_task(t, epochs, tag))

    def _optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.net.parameters() if p.requires_grad]
        if callable(self.optimizer_spec):
            return self.optimizer_spec(params)
        return make_optimizer(params, self.optimizer_spec, self.config.lr, self.config.momentum)

    def _batches(self, data: TaskData, t: int, epoch: int, tag: str):
        """The epoch's batches: a user's DataLoader as it is; a Dataset shuffled by the seeded
        generator of ``(seed, tag, task, epoch)`` (the CLI's reproducibility rule)."""
        if isinstance(data, DataLoader):
            return data
        if not is_map_style(data):
            return DataLoader(data, batch_size=self.config.batch_size)
        # the order as a plain list: a DataLoader given a generator would first draw its worker seed
        # from it, so the permutation would no longer be the CLI's
        order = torch.randperm(len(data), generator=generator(self.config.seed, tag, t, epoch))
        return DataLoader(data, batch_size=self.config.batch_size, sampler=order.tolist())

    def _steps_per_epoch(self, data: TaskData) -> int:
        if isinstance(data, DataLoader) or not is_map_style(data):
            try:
                return len(data)
            except TypeError:
                raise ConfigError("lr_schedule='cosine' needs data whose length is known; "
                                  "use lr_schedule='none' for iterable datasets") from None
        return math.ceil(len(data) / self.config.batch_size)

    def train_task(self, t: int, epochs: Optional[int] = None, tag: str = "order", ctx=None) -> list[float]:
        ctx = ctx or self.context(t)
        forward, strategy = self.forward_for(t), self.strategy
        epochs = self.config.epochs if epochs is None else epochs
        optimizer = self._optimizer()
        steps = 0
        if self.config.lr_schedule == "cosine":  # annealed over the task's steps, as the CLI does
            steps = epochs * self._steps_per_epoch(self.tasks[t][0])
        step_once = StepRunner(strategy, ctx, optimizer, make_scheduler(optimizer, self.config.lr_schedule, steps),
                               ctx.project, hint="lower lr?")
        self.net.train()
        seconds = []
        for epoch in range(epochs):
            start = time.perf_counter()
            for step, batch in enumerate(self._batches(self.tasks[t][0], t, epoch, tag)):
                x, y = split_batch(batch, f"tasks[{t}] train")
                x, y = x.to(self.device), y.to(self.device)
                logits = forward(x)
                if epoch == 0 and step == 0:  # before the task's first update: every label the data declares
                    check_labels_fit(t, known_labels(self.tasks[t][0]), logits)
                check_labels_fit(t, y, logits)  # one min/max per batch: data whose labels are not known upfront
                loss = strategy.loss(logits, y) * (1 / len(y))  # the CLI's arithmetic, to the last bit
                step_once(loss, strategy.penalty(), t, epoch, step)
            seconds.append(time.perf_counter() - start)
        self.hook_seconds += step_once.hook_seconds
        return seconds

    @torch.no_grad()
    def evaluate(self, t: int) -> float:
        was_training = self.net.training
        self.net.eval()
        data, forward = self.tasks[t][1], self.forward_for(t)
        loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=self.config.eval_batch_size)
        correct = total = 0
        for batch in loader:
            x, y = split_batch(batch, f"tasks[{t}] test")
            pred = forward(x.to(self.device)).argmax(1)
            correct += int((pred == y.to(self.device)).sum())
            total += len(y)
        self.net.train(was_training)
        if total == 0:
            raise ConfigError(f"tasks[{t}] test data is empty")
        return correct / total

    def run_task(self, t: int) -> None:
        train_and_consolidate(self, t, t, self.context(t), self.strategy, self.net, self.result)
        evaluate_and_save(t, lambda: [self.evaluate(j) for j in range(len(self.tasks))], self.strategy, self.net,
                          self.result, self.rundir, self.config.to_dict(), self.quiet)

    def resume(self) -> int:
        """Load the newest checkpoint of ``out`` (same settings required); returns the next task."""
        # a user's model is rebuilt by the user, maybe unseeded: weights and scales come from the checkpoint,
        # and only the architecture (tensor names, shapes, bit widths) must match
        resumed = resume_latest(self.rundir, self.config.to_dict(), self.net, self.strategy, flag="resume",
                                restore_scales=True)
        if resumed is None:
            return 0
        self.result.restore(resumed.progress["result"])
        self.rundir.log(f"resumed from {resumed.path} (tasks 0..{resumed.task} complete)", self.quiet)
        return resumed.task + 1


def fit(model: nn.Module, tasks: Sequence[tuple[TaskData, TaskData]], method: str = "blip", *,
        options: Optional[dict] = None, heads: Optional[Sequence[nn.Module]] = None, scenario: Optional[str] = None,
        epochs: int = 1, batch_size: int = 64, lr: float = 1e-3, optimizer: OptimizerSpec = "adam",
        momentum: float = 0.0, lr_schedule: str = "cosine", seed: int = 0, device: str = "cpu",
        eval_batch_size: int = 1000, out: Optional[str] = None, overwrite: bool = False, resume: bool = False,
        quiet: bool = True) -> RunResult:
    """Train ``model`` on ``tasks`` in order with bitcl's ``method`` (``bitcl list``); evaluate every
    task after every task. Returns the :class:`RunResult` (``.to_json()`` is results.json); with
    ``out``, writes results.json, accuracy_matrix.csv, log.txt and ``checkpoints/task-<t>.safetensors``
    exactly as ``bitcl run --out`` does (``overwrite``/``resume`` as ``--overwrite``/``--resume``).

    ``options``: the method's options (``{"fisher_prior": 1e-8}``). ``heads``: one module per
    task for task-incremental learning (module docstring). ``optimizer``: ``"adam"``, ``"sgd"``
    or a callable ``params -> torch.optim.Optimizer`` (a fresh one per task, as the CLI).
    Bad input raises ConfigError / DataError before any training; a NaN loss raises
    TrainingDiverged naming the task, epoch and step.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    pairs = _check_tasks(tasks)
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
        _positive(name, value)
    _positive("lr", lr, float)
    if not callable(optimizer) and optimizer not in ("adam", "sgd"):
        raise ConfigError(f"optimizer must be 'adam', 'sgd' or a callable, got {optimizer!r}")
    if lr_schedule not in ("cosine", "none"):
        raise ConfigError(f"lr_schedule must be 'cosine' or 'none', got {lr_schedule!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    scenario, heads = _resolve_scenario(model, heads, scenario, len(pairs))
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    cls = get_strategy(method)
    check_supported(cls, FIT_SERVICES, "bitcl.fit")
    net = HeadedModel(model, heads) if heads is not None else model
    _check_method(cls, net, scenario)
    opts = make_options(cls, options or {})
    config = FitConfig(method=method, scenario=scenario, seed=seed, epochs=epochs, batch_size=batch_size,
                       lr=float(lr), optimizer=optimizer if isinstance(optimizer, str) else "custom",
                       momentum=float(momentum), lr_schedule=lr_schedule, eval_batch_size=eval_batch_size,
                       device=str(torch.device(device)), method_options=resolved_options(opts),
                       model=type(model).__name__,
                       heads=len(heads) if heads else 0)
    rundir = RunDirectory(out, overwrite=overwrite, resume=resume)
    rundir.check()
    net.to(torch.device(device))
    torch.manual_seed(seed)
    strategy = cls(opts, net, RunInfo(len(pairs), scenario, torch.device(device)))
    task_aware = heads is not None or isinstance(model, ContinualModel)
    loop = _FitLoop(net, strategy, pairs, config, optimizer, task_aware, rundir, quiet)
    rundir.open()
    success = False
    try:
        first = loop.resume() if resume else 0
        for t in range(first, len(pairs)):
            loop.run_task(t)
        loop.result.extra.update(strategy.run_results())
        rundir.write_results(loop.result)
        success = True
    finally:
        rundir.close(success)
    return loop.result
