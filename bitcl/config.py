"""The typed run configuration shared by the CLI, the Python API and results.json.

Every field carries its CLI help in ``metadata``; ``bitcl run`` builds its flags from
these fields (``cli.config_flags``), so a setting has one name, one default, one
validation and one place in results.json. ``RunConfig.resolved()`` fills what the user
left unset from the benchmark's preset (``bitcl.presets``) or the engine default and
expands the method's options to every value, defaults included: the resolved config
is what a run records and what ``bitcl run --config results.json`` (or ``bitcl rerun
DIR``) replays.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from bitcl.errors import ConfigError

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("none", "cosine")
DEVICES = ("cpu", "cuda", "auto")
BN_POLICIES = ("first-task", "per-task", "train")
MAX_SEED = 2**63 - 1
MAX_TASKS = 10_000
MAX_WIDTH = 1 << 16

# settings that may differ between an interrupted run and its resumption
RESUME_FREE = frozenset({"out", "overwrite", "resume", "quiet", "debug"})


def _f(default: Any, help: str, **meta) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class RunConfig:
    """Every setting that shapes a run; serialised into results.json as ``config``.

    ``None`` for ``epochs``, ``batch_size`` and ``lr`` means: the benchmark/method preset if
    one exists (``bitcl list``), else the engine default (10, 64, 3e-3).
    """

    method: str = _f("blip", "continual-learning method (see `bitcl list`)")
    benchmark: str = _f("split-mnist", "benchmark (see `bitcl list`)")
    scenario: str = _f("task", "task: a head per task; domain: one shared head; class: one growing head; "
                       "data: the same classes in T chunks", choices=("task", "domain", "class", "data"))
    tasks: Optional[int] = _f(None, "number of tasks (default: the benchmark's)", min=1, max=MAX_TASKS)
    epochs: Optional[int] = _f(None, "epochs per task (default: preset, else 10)", min=0, max=100_000)
    batch_size: Optional[int] = _f(None, "global batch size (default: preset, else 64)", min=1, max=1 << 24)
    lr: Optional[float] = _f(None, "learning rate, cosine-annealed within each task (default: preset, else 3e-3)",
                             min=1e-12)
    optimizer: str = _f("adam", "optimiser", choices=OPTIMIZERS)
    momentum: float = _f(0.0, "SGD momentum in [0, 1)", min=0.0, max=0.999999)
    lr_schedule: str = _f("cosine", "learning-rate schedule within each task", choices=LR_SCHEDULES)
    seed: int = _f(0, "seed of every random choice (batch order, initialisation, sampling)", min=0, max=MAX_SEED)
    data: Optional[str] = _f(None, ".npz file, MNIST IDX folder or CIFAR folder (default: embedded MNIST)")
    classes: Optional[list[int]] = _f(None, "keep only these classes, e.g. 5,6,7,8,9")
    validation: float = _f(0.0, "hold out this fraction of each class's training data and evaluate on it "
                           "instead of the test split (for choosing hyper-parameters)", min=0.0, max=0.5)
    pad_to: Optional[int] = _f(None, "zero-pad images to this size (e.g. 32: MNIST in CIFAR's shape)", min=1, max=1024)
    augment: bool = _f(False, "random crop (padding 4) and horizontal flip of training batches")
    arch: str = _f("mlp", "backbone architecture (see `bitcl list`)")
    hidden: list[int] = _f([1200], "MLP hidden widths, e.g. 1200 or 400,400")
    width: int = _f(0, "base width of conv backbones (0: the architecture's default)", min=0, max=MAX_WIDTH)
    bn: str = _f("first-task", "batch-norm policy of backbones that have it", choices=BN_POLICIES)
    dropout: float = _f(0.0, "dropout of backbones that have it (training only)", min=0.0, max=0.95)
    backbone: str = _f("quant", "quant: N-bit Bit layers; float: plain layers (baselines)", choices=("quant", "float"))
    bits: int = _f(20, "bits per quantised weight", min=2, max=24)
    device: str = _f("cpu", "cpu, cuda, or auto (cuda when available)", choices=DEVICES)
    eval_batch_size: int = _f(1000, "batch size of evaluation", min=1, max=1 << 24)
    method_options: dict = field(default_factory=dict, metadata={"help": "the method's options"})
    pretrained: Optional[str] = _f(None, "start from these backbone weights (`bitcl pretrain` file, safetensors "
                                   "or weights-only .pt)")
    preset: bool = _f(True, "use the benchmark/method preset for settings left unset")
    out: Optional[str] = _f(None, "run directory (results.json, checkpoints/, log)")
    overwrite: bool = _f(False, "replace the run already in --out")
    resume: bool = _f(False, "continue the run in --out from its last complete task")
    quiet: bool = _f(False, "no progress bars or per-task lines")

    # -- validation ------------------------------------------------------------------------
    def validate(self) -> "RunConfig":
        """Check every field's type and range; ConfigError names the flag."""
        hints = {f.name: f for f in dataclasses.fields(self)}
        for name, f in hints.items():
            value = getattr(self, name)
            _check_field(name, f, value)
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other")
        if self.out is not None and str(self.out).strip() == "":
            raise ConfigError("--out must name a directory, got an empty string")
        return self

    def resolved(self) -> "RunConfig":
        """A validated copy with presets and defaults applied and the method's options expanded."""
        from bitcl.presets import resolve_preset
        from bitcl.strategies import get_strategy, make_options, resolved_options
        self.validate()
        out = dataclasses.replace(self, hidden=list(self.hidden), method_options=dict(self.method_options),
                                  classes=None if self.classes is None else list(self.classes))
        preset = resolve_preset(out.benchmark, out.method, out.scenario) if out.preset else {}
        for key, default in ENGINE_DEFAULTS.items():
            if getattr(out, key) is None:
                setattr(out, key, preset.get(key, default))
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


ENGINE_DEFAULTS = {"epochs": 10, "batch_size": 64, "lr": 3e-3}


def _check_field(name: str, f: dataclasses.Field, value: Any) -> None:
    flag = "--" + name.replace("_", "-")
    meta = f.metadata
    annotation = str(f.type)
    optional = annotation.startswith("Optional")
    if value is None:
        if optional:
            return
        raise ConfigError(f"{flag} must be set")
    if "list[int]" in annotation:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                            for v in value):
            raise ConfigError(f"{flag} must be a list of integers, got {value!r}")
        if name == "hidden" and (not value or any(not 1 <= v <= MAX_WIDTH for v in value)):
            raise ConfigError(f"{flag} widths must lie in 1..{MAX_WIDTH}, got {list(value)}")
        if name == "classes" and any(v < 0 for v in value):
            raise ConfigError(f"{flag} must list non-negative class labels, got {list(value)}")
        return
    if annotation.endswith("int]") or annotation == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{flag} must be an integer, got {value!r}")
    elif annotation.endswith("float]") or annotation == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{flag} must be a finite number, got {value!r}")
    elif annotation == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{flag} must be true or false, got {value!r}")
    elif annotation.endswith("str]") or annotation == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{flag} must be a string, got {value!r}")
    elif annotation == "dict" and not isinstance(value, dict):
        raise ConfigError(f"{flag} must be a mapping of option names to values, got {value!r}")
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{flag} must be one of {', '.join(meta['choices'])}, got {value!r}")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"{flag} must be >= {meta['min']}, got {value!r}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"{flag} must be <= {meta['max']}, got {value!r}")
