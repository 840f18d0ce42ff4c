"""The typed run configuration shared by the CLI, the Python API and results.json.

Every field is a :func:`bitcl.settings.setting` (help, type, range, choices); ``bitcl run``
builds its flags from these fields (:func:`bitcl.settings.add_flags`), so a setting has one
name, one default, one validation and one place in results.json. ``RunConfig.resolved()`` fills what the user
left unset from the benchmark's preset (``bitcl.presets``) or the engine default and
expands the method's options to every value, defaults included: the resolved config
is what a run records and what ``bitcl run --config results.json`` (or ``bitcl rerun
DIR``) replays.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from bitcl.constants import (BN_SETTINGS, LAYER_KINDS, LR_SCHEDULES, MAX_BITS, MAX_SEED, MIN_BITS, OPTIMIZERS,
                             SCENARIOS)
from bitcl.errors import ConfigError
from bitcl.settings import setting, validate

DEVICES = ("cpu", "cuda", "auto")
MAX_TASKS = 10_000
MAX_WIDTH = 1 << 16
MAX_BATCH = 1 << 24

# settings that may differ between an interrupted run and its resumption
RESUME_FREE = frozenset({"out", "overwrite", "resume", "quiet", "debug"})

ENGINE_DEFAULTS = {"epochs": 10, "batch_size": 64, "lr": 3e-3, "optimizer": "adam", "momentum": 0.0}
# settings a backbone may default (bitcl.models.factory.TRAINING_KEYS): its optimiser, chosen on validation data
ARCH_DEFAULTED = ("optimizer", "lr", "momentum")


def _number(value) -> str:
    return f"{value:.0e}".replace("e-0", "e-") if isinstance(value, float) and value else str(value)


def _preset_or(name: str) -> str:
    """What ``--help`` shows as the default of an ENGINE_DEFAULTS setting."""
    by_arch = ", else the --arch's (bitcl list)" if name in ARCH_DEFAULTED else ""
    return f"preset{by_arch}, else {_number(ENGINE_DEFAULTS[name])}"


def arch_training_defaults(arch: str, optimizer: Optional[str]) -> dict:
    """The backbone's default optimiser, learning rate and momentum (``bitcl list``), to fill what the
    user left unset. They were chosen together, so a user who names another optimiser gets none of
    them (the engine's lr and momentum then apply); ``{}`` for a backbone without defaults."""
    from bitcl.models.factory import training_defaults
    chosen = training_defaults(arch)
    if optimizer is not None and chosen.get("optimizer") != optimizer:
        return {}
    return chosen


@dataclass
class RunConfig:
    """Every setting that shapes a run; serialised into results.json as ``config``.

    ``None`` for ``epochs``, ``batch_size``, ``lr``, ``optimizer`` and ``momentum`` means: the
    benchmark/method preset if one exists (``bitcl list``), else, for the optimiser, learning rate
    and momentum, the backbone's defaults (:func:`arch_training_defaults`, ``bitcl list``), else
    the engine default (10, 64, 3e-3, Adam, 0). Each field is declared
    with :func:`bitcl.settings.setting` (type, range, choices, help), which validates it and
    makes its ``bitcl run`` flag.
    """

    method: str = setting("blip", "continual-learning method (see `bitcl list`)")
    benchmark: str = setting("split-mnist", "benchmark (see `bitcl list`)")
    scenario: str = setting("task", "task: a head per task; domain: one shared head; class: one growing head; "
                            "data: the same classes in T chunks", choices=SCENARIOS)
    tasks: Optional[int] = setting(None, "number of tasks", shown="the benchmark's", low=1, high=MAX_TASKS)
    epochs: Optional[int] = setting(None, "epochs per task", shown=_preset_or("epochs"), low=0, high=100_000)
    batch_size: Optional[int] = setting(None, "global batch size", shown=_preset_or("batch_size"), low=1,
                                        high=MAX_BATCH)
    lr: Optional[float] = setting(None, "learning rate, cosine-annealed within each task", shown=_preset_or("lr"),
                                  low=1e-12)
    optimizer: Optional[str] = setting(None, "optimiser", choices=OPTIMIZERS, shown=_preset_or("optimizer"))
    momentum: Optional[float] = setting(None, "SGD momentum in [0, 1)", low=0.0, below=1.0,
                                        shown=_preset_or("momentum"))
    lr_schedule: str = setting("cosine", "learning-rate schedule within each task", choices=LR_SCHEDULES)
    seed: int = setting(0, "seed of every random choice (batch order, initialisation, sampling)", low=0,
                        high=MAX_SEED)
    data: Optional[str] = setting(None, ".npz file, MNIST IDX folder or CIFAR folder", shown="embedded MNIST")
    classes: Optional[list[int]] = setting(None, "keep only these classes, e.g. 5,6,7,8,9", items_low=0)
    validation: float = setting(0.0, "hold out this fraction of each class's training data and evaluate on it "
                                "instead of the test split (for choosing hyper-parameters)", low=0.0, high=0.5)
    pad_to: Optional[int] = setting(None, "zero-pad images to this size (e.g. 32: MNIST in CIFAR's shape)", low=1,
                                    high=1024)
    augment: bool = setting(False, "random crop (padding 4) and horizontal flip of training batches")
    arch: str = setting("mlp", "backbone architecture (see `bitcl list`)")
    hidden: list[int] = setting([1200], "MLP hidden widths, e.g. 1200 or 400,400", nonempty=True, items_low=1,
                                items_high=MAX_WIDTH)
    width: int = setting(0, "base width of conv backbones (0: the architecture's default)", low=0, high=MAX_WIDTH)
    bn: str = setting("auto", "batch-norm policy of backbones that have it; auto: per-task in task-incremental "
                      "runs, train otherwise (docs/methods.md)", choices=BN_SETTINGS)
    dropout: float = setting(0.0, "dropout of backbones that have it (training only)", low=0.0, high=0.95)
    backbone: str = setting("quant", "quant: N-bit Bit layers; float: plain layers (baselines)", choices=LAYER_KINDS)
    bits: int = setting(20, "bits per quantised weight", low=MIN_BITS, high=MAX_BITS)
    device: str = setting("cpu", "cpu, cuda, or auto (cuda when available)", choices=DEVICES)
    eval_batch_size: int = setting(1000, "batch size of evaluation", low=1, high=MAX_BATCH)
    method_options: dict = setting({}, "the method's options", flag=False)
    pretrained: Optional[str] = setting(None, "start from these backbone weights (`bitcl pretrain` file, "
                                        "safetensors or weights-only .pt)")
    preset: bool = setting(True, "use the benchmark/method preset for settings left unset")
    out: Optional[str] = setting(None, "run directory (results.json, checkpoints/, log)")
    overwrite: bool = setting(False, "replace the run already in --out")
    resume: bool = setting(False, "continue the run in --out from its last complete task")
    quiet: bool = setting(False, "no progress bars or per-task lines")

    # -- validation ------------------------------------------------------------------------
    def validate(self) -> "RunConfig":
        """Check every field's type and range (:func:`bitcl.settings.validate`) and the relations
        between fields; ConfigError names the flag."""
        validate(self)
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other")
        if self.out is not None and str(self.out).strip() == "":
            raise ConfigError("--out must name a directory, got an empty string")
        return self

    def resolved(self) -> "RunConfig":
        """A validated copy with presets and defaults applied and the method's options expanded."""
        from bitcl.models.norm import resolve_policy
        from bitcl.presets import resolve_preset
        from bitcl.strategies import get_strategy, make_options, resolved_options
        self.validate()
        out = dataclasses.replace(self, hidden=list(self.hidden), method_options=dict(self.method_options),
                                  classes=None if self.classes is None else list(self.classes),
                                  bn=resolve_policy(self.bn, self.scenario))
        preset = resolve_preset(out.benchmark, out.method, out.scenario) if out.preset else {}
        by_arch = arch_training_defaults(out.arch, preset.get("optimizer", out.optimizer))
        for key, default in ENGINE_DEFAULTS.items():
            if getattr(out, key) is None:
                setattr(out, key, preset.get(key, by_arch.get(key, default)))
        options = {**preset.get("method_options", {}), **out.method_options}
        out.method_options = resolved_options(make_options(get_strategy(out.method), options))
        return out.validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> "RunConfig":
        """A RunConfig from a results.json ``config`` (extra keys that describe the run, such as
        ``data_source``, are ignored; unknown settings are refused)."""
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: expected an object of settings, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        descriptive = {"data_source", "bitcl_version", "evaluated_on"}
        unknown = sorted(set(values) - known - descriptive)
        if unknown:
            raise ConfigError(f"{where}: unknown settings {unknown[:5]}")
        return cls(**{k: v for k, v in values.items() if k in known}).validate()


