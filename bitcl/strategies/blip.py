"""BLIP: Bit-Level Information Preserving.

Shi, Yuan, Shen, Wang & Lu (Kuo-Chin), "Continual Learning via Bit-Level
Information Preserving", CVPR 2021, arXiv 2105.04444.

During a task the optimiser updates the latent weights and the engine projects
them after every step, so frozen bits never change. After the task, the
diagonal Fisher F_t of each quantised weight is estimated from vectorised
per-sample gradients (true Fisher by default). With F̄ the running mean of a
prior F_0 and the Fishers seen so far, F̄_t = (F_0 + F_1 + ... + F_t) / (t + 1),
each weight freezes ``ceil(0.5 log2(F̄_t / F̄_{t-1}))`` more bits (Eq. 8-9 of the
paper: the information gain in bits), clamped to [0, N - k]. ``--accumulate
sum`` uses the running sum F_0 + ... + F_t instead of the mean; ``--rounding
once`` rounds the gain accumulated since the prior instead of each task's gain.

The prior ``--fisher-prior`` is in per-sample Fisher units (the Fisher here is a
mean over samples, not a sum), so its meaning does not depend on batch size or
on how many samples are used. Roughly: after the first task a weight freezes
``ceil(0.5 log2((F_0 + F_1) / (2 F_0)))`` bits, so raising the prior 4x frees one
more bit of every weight whose Fisher dominates the prior.

State between tasks: int32 codes and uint8 frozen counts (in the model) plus a
float32 running Fisher per weight: 9 bytes per weight, whatever the number of
tasks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bitcl.errors import ConfigError
from bitcl.importance import FISHER_KINDS, batch_fisher_sums, layers_of, task_mean
from bitcl.quant import bit_states

from .context import RunInfo, TaskContext

from .base import Strategy, register
from .state import TASKS_SEEN, StateEntry


@dataclass
class BlipOptions:
    fisher: str = field(default="sampled", metadata={
        "help": "Fisher estimate: sampled (labels drawn from the prediction), exact (expectation over classes), "
                "empirical (true labels)", "choices": FISHER_KINDS})
    fisher_samples: int = field(default=0, metadata={"help": "training samples for the Fisher (0: all)"})
    fisher_batch: int = field(default=500, metadata={"help": "batch size of the Fisher estimation"})
    fisher_prior: float = field(default=1e-10, metadata={
        "help": "prior Fisher F_0 per weight, in per-sample Fisher units", "min": 1e-300,
        "max": float(torch.finfo(torch.float32).max)})  # the running Fisher is float32
    accumulate: str = field(default="mean", metadata={
        "help": "running mean of prior and Fishers (the authors'), or their running sum",
        "choices": ("mean", "sum")})
    rounding: str = field(default="ceil", metadata={
        "help": "bits from the information gain: ceil of each task's gain (the authors'), round (half-up), "
                "or once: ceil of the gain accumulated since the prior, so per-task round-ups never add up",
        "choices": ("ceil", "round", "once")})
    reset_free_bits: bool = field(default=False, metadata={
        "help": "after freezing, set each weight's free bits to the middle of its window (off by default: "
                "a weight that gains its first bits would jump by up to a quarter of the range; README)"})

    def validate(self) -> None:
        if not self.fisher_prior > 0:
            raise ConfigError(f"--fisher-prior must be positive, got {self.fisher_prior}")
        if self.fisher_samples < 0:
            raise ConfigError(f"--fisher-samples must be >= 0, got {self.fisher_samples}")
        if self.fisher_batch < 1:
            raise ConfigError(f"--fisher-batch must be >= 1, got {self.fisher_batch}")


def bits_to_freeze(fisher_old: torch.Tensor, fisher_new: torch.Tensor, rounding: str = "ceil") -> torch.Tensor:
    """``max(0, ceil(0.5 log2(F_new / F_old)))`` as int32: BLIP's information gain in bits
    (``rounding="round"`` rounds half-up instead of up)."""
    gain = 0.5 * torch.log2(fisher_new / fisher_old)
    gain = torch.ceil(gain) if rounding == "ceil" else torch.floor(gain + 0.5)
    return torch.nan_to_num(gain, nan=0.0, posinf=32.0).clamp_(0, 32).to(torch.int32)


def extra_bits(fisher_old: torch.Tensor, fisher_new: torch.Tensor, frozen: torch.Tensor, prior: float,
               rounding: str = "ceil") -> torch.Tensor:
    """Bits to freeze after a task, given the running Fisher before and after it.

    ``ceil`` / ``round``: the task's own information gain, rounded (Eq. 8-9 of the paper).
    ``once``: the gain accumulated since the prior, ``ceil(0.5 log2(F_new / F_0))``, minus the
    bits already frozen. Rounding every task up adds close to half a bit per task to every
    weight whose Fisher grew at all; rounding once keeps the total within one bit of the
    information actually gained.
    """
    if rounding == "once":
        total = bits_to_freeze(fisher_new.new_tensor(prior), fisher_new)
        return (total - frozen.to(torch.int32)).clamp_(min=0)
    return bits_to_freeze(fisher_old, fisher_new, rounding)


@register
class Blip(Strategy):
    name = "blip"
    summary = "BLIP: freeze each weight's most significant bits by Fisher information gain (CVPR 2021)"
    Options = BlipOptions
    requires_quantized = True
    rl = True
    state_entries = (StateEntry("fisher/{param}", "nonneg"), TASKS_SEEN)  # running Fisher F̄ >= 0

    def __init__(self, options: BlipOptions, model, info: RunInfo):
        super().__init__(options, model, info)
        self.quantized = dict(bit_states(self.model))
        self.layers = layers_of(self.model, self.quantized)
        prior = options.fisher_prior
        for name, state in self.quantized.items():
            self.state[f"fisher/{name}"] = torch.full(state.codes.shape, prior, dtype=torch.float32,
                                                      device=state.codes.device)
        self.state["tasks_seen"] = torch.zeros((), dtype=torch.int64)

    def estimate_fisher(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        """Per-sample mean diagonal Fisher of every quantised weight on the task's data (Eq. 6)."""
        opts = self.options
        return task_mean(ctx, opts.fisher_samples, opts.fisher_batch, "fisher",
                         lambda x, y, u: batch_fisher_sums(self.model, self.layers, ctx.logits, x, y,
                                                           opts.fisher, u), self.quantized)

    def end_task(self, ctx: TaskContext) -> None:
        with torch.enable_grad():
            fisher = self.estimate_fisher(ctx)
        seen = int(self.state["tasks_seen"])
        for name, state in self.quantized.items():
            old = self.state[f"fisher/{name}"]
            if self.options.accumulate == "mean":  # prior counts as one term of the mean
                new = (old * (seen + 1) + fisher[name]) / (seen + 2)
            else:
                new = old + fisher[name]
            extra = extra_bits(old, new, state.frozen, self.options.fisher_prior, self.options.rounding)
            state.freeze(extra, reset_free_bits=self.options.reset_free_bits)
            self.state[f"fisher/{name}"] = new
        self.state["tasks_seen"] = torch.tensor(seen + 1)

    def state_bytes(self) -> int:
        """Running Fisher (4 B) plus the codes (4 B) and frozen counts (1 B) the method keeps."""
        bit_state = sum(s.codes.numel() * (s.codes.element_size() + s.frozen.element_size())
                        for s in self.quantized.values())
        return super().state_bytes() + bit_state

