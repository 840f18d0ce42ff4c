"""``bitcl.fit``: the whole continual loop on a user's model and data, with any bitcl method.

``tasks`` is a sequence of ``(train, test)`` pairs, each a torch Dataset or DataLoader of
``(input, label)`` items. For every task: ``before_task`` -> per step ``loss + penalty``,
backward, ``after_backward``, optimiser step, bit projection, ``after_step`` -> ``end_task``;
then every task's test split is evaluated, and (with ``out``) a checkpoint is written. The
results (:class:`~bitcl.train.results.RunResult`) and the files in ``out`` are those of
``bitcl run``: the same results.json contract (ACC, BWT and forgetting as in docs/contracts/results.md) and
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
import warnings
from typing import Callable, Iterable, Optional, Sequence, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bitcl.interop  # noqa: F401  (makes torchvision importable for users' models and datasets)
from bitcl.api_context import (DataContext, TaskData, check_task_data, generator, is_map_style, plain_tensors,
                                split_batch)
from bitcl.constants import LR_SCHEDULES, MAX_SEED, OPTIMIZERS, SCENARIOS
from bitcl.errors import ConfigError, DataError
from bitcl.models import ContinualModel
from bitcl.quant import bit_states, project_latents_
from bitcl.settings import check_values, setting
from bitcl.strategies import RunInfo, Strategy, check_supported, get_strategy, make_options, resolved_options
from bitcl.train.results import RunResult
from bitcl.train.rundir import RunDirectory
from bitcl.train.runner import ContinualRun
from bitcl.train.step import StepRunner, make_optimizer, make_scheduler

FIT_SERVICES = frozenset({"independent_gradient", "retrain"})
# Method options that differ on a user's own model (not a ContinualModel): BLIP's prior relative
# to each tensor's first-task Fisher (bitcl/strategies/blip.py), chosen on validation data by
# benchmarks/search_fit_defaults.py; an absolute F_0 tuned on bitcl's MLP froze 12 of 20 bits of
# a user's convolution after one task (issue 22). bitcl's own models keep the CLI's defaults, so
# that fit reproduces `bitcl run`.
USER_MODEL_OPTIONS = {"blip": {"prior": "relative"}}
# naming one of these chooses the prior yourself: fisher_prior alone means an absolute prior
USER_CHOSEN_PRIOR = ("prior", "fisher_prior")
OptimizerSpec = Union[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]]


class NotLearnedWarning(UserWarning):
    """A task's accuracy after its own training was confidently at or below chance + margin
    (``bitcl.train.learned``); the message says how much was frozen and how much range was left."""


class HeadedModel(nn.Module):
    """A user's backbone with one head per task: ``forward(x, task)``; ``backbone_parameters()``
    (the shared, protected part) excludes the heads, as bitcl's ContinualModel does."""

    output_modules = ("heads",)

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
    """Every setting that shaped a ``fit`` run (results.json ``config``); ``fit`` checks its
    arguments against these fields' schema (:func:`bitcl.settings.check_values`)."""

    method: str = setting("blip", "the method (`bitcl list`)")
    scenario: str = setting("task", "how tasks relate", choices=SCENARIOS)
    seed: int = setting(0, "seed of every random choice", low=0, high=MAX_SEED)
    epochs: int = setting(1, "epochs per task", low=1)
    batch_size: int = setting(64, "batch size", low=1)
    lr: float = setting(1e-3, "learning rate", above=0.0)
    optimizer: str = setting("adam", "optimiser ('custom': a callable)", choices=OPTIMIZERS + ("custom",))
    momentum: float = setting(0.0, "SGD momentum", low=0.0, below=1.0)
    lr_schedule: str = setting("cosine", "learning-rate schedule within each task", choices=LR_SCHEDULES)
    eval_batch_size: int = setting(1000, "batch size of evaluation", low=1)
    device: str = setting("cpu", "torch device")
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
    ``data=None``: the benchmark's own data, the embedded MNIST subset or a dataset fetched on
    first use, as ``bitcl run``). For trying ``fit`` and comparing it with the CLI."""
    from bitcl.data import build_scenario
    from bitcl.data.benchmarks import BENCHMARKS, load_benchmark_data
    from bitcl.data.readers import load_data
    spec = BENCHMARKS.get(benchmark)  # an unknown name is refused by build_scenario
    source = load_benchmark_data(spec, data) if spec else load_data(data)
    built = build_scenario(benchmark, source, scenario, tasks, seed, classes)
    return [(TensorDataset(t.inputs(t.x_train), t.y_train), TensorDataset(t.inputs(t.x_test), t.y_test))
            for t in built.tasks]


def make_strategy(method: str, model: nn.Module, num_tasks: int, scenario: str = "domain",
                  device: Union[str, torch.device] = "cpu", **options) -> Strategy:
    """A bitcl strategy object for a user's own loop (explicit hooks; module docstring of
    ``bitcl.strategies.base``). ``options`` are the method's options (``fisher_prior=1e-8``);
    unknown or invalid ones raise ConfigError, as does a method that needs Bit layers on a
    model without them (``bitcl.quantize_`` first). BLIP's prior defaults as in :func:`fit`."""
    cls = get_strategy(method)
    _check_method(cls, model, scenario)
    return cls(make_options(cls, user_model_options(cls, model, options), warn=True), model,
               RunInfo(num_tasks, scenario, torch.device(device)))


def user_model_options(cls: type[Strategy], model: nn.Module, options: Optional[dict]) -> dict:
    """``options`` with :data:`USER_MODEL_OPTIONS`'s defaults for ``cls`` added when ``model`` is a
    user's own model (not a ContinualModel) and ``options`` choose no prior themselves."""
    options = dict(options or {})
    defaults = USER_MODEL_OPTIONS.get(cls.name)
    if not defaults or isinstance(model, ContinualModel) or any(k in options for k in USER_CHOSEN_PRIOR):
        return options
    return {**defaults, **options}


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


def _loader_seed_draw(generator: Optional[torch.Generator]) -> None:
    """The one number a DataLoader's iterator draws when it starts (its workers' base seed): drawn
    where a fast path bypasses the iterator, so that the RNG (a shuffling loader's generator, or
    the global one that dropout reads) advances exactly as with the loader."""
    torch.empty((), dtype=torch.int64).random_(generator=generator)


def _indexed(tensors: tuple[torch.Tensor, ...], batches: Iterable[Sequence[int]]):
    """``(x, y)`` batches of ``tensors`` at each list of item indices."""
    for indices in batches:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        yield tensors[0][idx], tensors[1][idx]


class _FitLoop:
    """One ``fit`` run's task loop (``bitcl.train.runner.TaskLoop``): the model (wrapped with its
    heads), the strategy, the task data; how to train one task and evaluate every task."""

    def __init__(self, net: nn.Module, strategy: Strategy, tasks, config: FitConfig,
                 optimizer: OptimizerSpec, task_aware: bool):
        self.net, self.strategy, self.tasks, self.config = net, strategy, tasks, config
        self.optimizer_spec, self.task_aware = optimizer, task_aware
        self.device = torch.device(config.device)
        self.hook_seconds = 0.0
        self.bit_states = [state for _, state in bit_states(net)]
        self.result = RunResult(config, len(tasks), params=sum(p.numel() for p in net.parameters()))
        self.task_facts: dict[int, tuple[float, int]] = {}  # per task: chance level, test samples

    def forward_for(self, task: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return (lambda x: self.net(x, task)) if self.task_aware else self.net

    def task_context(self, t: int) -> DataContext:
        return DataContext(self.net, self.tasks[t][0], t, self.strategy.info, seed=self.config.seed,
                           forward=self.forward_for(t), strategy=self.strategy, batch_size=self.config.batch_size,
                           retrain=lambda epochs, tag: self.train_task(t, epochs, tag))

    def train(self, t: int, ctx: DataContext) -> list[float]:
        return self.train_task(t, ctx=ctx)

    def after_consolidation(self, t: int) -> None:
        """Nothing to check: one process."""

    def evaluate_all(self) -> list[float]:
        row = [self.evaluate(j) for j in range(len(self.tasks))]
        facts = [self.task_facts[j] for j in range(len(self.tasks))]
        self.result.set_task_facts([c for c, _ in facts], [n for _, n in facts])
        return row

    def project(self) -> None:
        """Keep every quantised weight inside the window its frozen bits allow (codes refreshed when read)."""
        project_latents_(self.bit_states)

    def _optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.net.parameters() if p.requires_grad]
        if callable(self.optimizer_spec):
            return self.optimizer_spec(params)
        return make_optimizer(params, self.optimizer_spec, self.config.lr, self.config.momentum)

    def _batches(self, data: TaskData, t: int, epoch: int, tag: str):
        """The epoch's batches: a user's DataLoader as it is; a Dataset shuffled by the seeded
        generator of ``(seed, tag, task, epoch)`` (the CLI's reproducibility rule)."""
        tensors = plain_tensors(data)
        if isinstance(data, DataLoader):
            if tensors is None:
                return data
            _loader_seed_draw(data.generator)
            return _indexed(tensors, data.batch_sampler)
        if not is_map_style(data):
            return DataLoader(data, batch_size=self.config.batch_size)
        # the order as a plain list: a DataLoader given a generator would first draw its worker seed
        # from it, so the permutation would no longer be the CLI's
        order = torch.randperm(len(data), generator=generator(self.config.seed, tag, t, epoch))
        if tensors is not None:
            _loader_seed_draw(None)  # the loader this replaces drew it from the global RNG
            size = self.config.batch_size
            return _indexed(tensors, (order[s:s + size] for s in range(0, len(order), size)))
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
        """Train task ``t`` for ``epochs`` (default: the configured number); seconds per epoch.
        ``tag`` names the batch-order stream (ANPyC's retraining draws its own)."""
        ctx = ctx or self.task_context(t)
        forward, strategy = self.forward_for(t), self.strategy
        epochs = self.config.epochs if epochs is None else epochs
        optimizer = self._optimizer()
        steps = 0
        if self.config.lr_schedule == "cosine":  # annealed over the task's steps, as the CLI does
            steps = epochs * self._steps_per_epoch(self.tasks[t][0])
        step_once = StepRunner(strategy, ctx, optimizer, make_scheduler(optimizer, self.config.lr_schedule, steps),
                               self.project, hint="lower lr?")
        self.net.train()
        seconds = []
        where = f"tasks[{t}] train"
        # batches cut from a TensorDataset's rows carry only labels the first step checks (all of them);
        # any other data's labels are checked batch by batch
        rows = plain_tensors(self.tasks[t][0]) is not None
        for epoch in range(epochs):
            start = time.perf_counter()
            for step, batch in enumerate(self._batches(self.tasks[t][0], t, epoch, tag)):
                x, y = split_batch(batch, where)
                x, y = x.to(self.device), y.to(self.device)
                logits = forward(x)
                if epoch == 0 and step == 0:  # before the task's first update: every label the data declares
                    check_labels_fit(t, known_labels(self.tasks[t][0]), logits)
                if not rows:
                    check_labels_fit(t, y, logits)  # one min/max per batch: labels not known upfront
                loss = strategy.loss(logits, y) * (1 / len(y))  # the CLI's arithmetic, to the last bit
                step_once(loss, strategy.penalty(), t, epoch, step)
            seconds.append(time.perf_counter() - start)
        self.hook_seconds += step_once.hook_seconds
        return seconds

    def _test_batches(self, data: TaskData):
        tensors = plain_tensors(data)
        if tensors is None:
            return data if isinstance(data, DataLoader) else DataLoader(data, batch_size=self.config.eval_batch_size)
        loader = data if isinstance(data, DataLoader) else None
        _loader_seed_draw(loader.generator if loader is not None else None)
        if loader is not None:
            return _indexed(tensors, loader.batch_sampler)
        n, size = len(tensors[0]), self.config.eval_batch_size
        return ((tensors[0][s:s + size], tensors[1][s:s + size]) for s in range(0, n, size))

    @torch.no_grad()
    def evaluate(self, t: int) -> float:
        was_training = self.net.training
        self.net.eval()
        forward = self.forward_for(t)
        correct = total = 0
        for batch in self._test_batches(self.tasks[t][1]):
            x, y = split_batch(batch, f"tasks[{t}] test")
            outputs = forward(x.to(self.device))
            live = int(torch.isfinite(outputs).any(0).sum())  # classes the prediction chooses among
            self.task_facts[t] = (1.0 / max(live, 1), self.task_facts.get(t, (0, 0))[1])
            pred = outputs.argmax(1)
            correct += int((pred == y.to(self.device)).sum())
            total += len(y)
        self.net.train(was_training)
        if total == 0:
            raise ConfigError(f"tasks[{t}] test data is empty")
        self.task_facts[t] = (self.task_facts[t][0], total)
        return correct / total


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

    ``options``: the method's options (``{"fisher_prior": 1e-8}``). On a user's own model BLIP's
    prior is relative by default (``{"prior": "relative"}``: ``F_0`` = ``relative_prior`` times each
    tensor's mean first-task Fisher, ``bitcl/strategies/blip.py``) unless ``options`` name
    ``prior`` or ``fisher_prior``; on bitcl's own models every default is the CLI's. ``heads``: one module per
    task for task-incremental learning (module docstring). ``optimizer``: ``"adam"``, ``"sgd"``
    or a callable ``params -> torch.optim.Optimizer`` (a fresh one per task, as the CLI).
    Bad input raises ConfigError / DataError before any training; a NaN loss raises
    TrainingDiverged naming the task, epoch and step.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    pairs = _check_tasks(tasks)
    check_values(FitConfig, dict(epochs=epochs, batch_size=batch_size, eval_batch_size=eval_batch_size, lr=lr,
                                 momentum=momentum, lr_schedule=lr_schedule, seed=seed), label=str)
    if not callable(optimizer) and optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer must be 'adam', 'sgd' or a callable, got {optimizer!r}")
    scenario, heads = _resolve_scenario(model, heads, scenario, len(pairs))
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    cls = get_strategy(method)
    check_supported(cls, FIT_SERVICES, "bitcl.fit")
    net = HeadedModel(model, heads) if heads is not None else model
    _check_method(cls, net, scenario)
    opts = make_options(cls, user_model_options(cls, model, options), warn=True)
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
    loop = _FitLoop(net, strategy, pairs, config, optimizer, task_aware)
    # a user's model is rebuilt by the user, maybe unseeded: on resume its weights and scales come from the
    # checkpoint, and only the architecture (tensor names, shapes, bit widths) must match
    ContinualRun(loop, strategy, net, len(pairs), loop.result, rundir, config.to_dict(), quiet=quiet, resume=resume,
                 flag="resume", restore_scales=True).run()
    for line in loop.result.warnings():  # a task that was not learned is never silent
        warnings.warn(line, NotLearnedWarning, stacklevel=2)
    return loop.result
