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
more bit of every weight whose Fisher dominates the prior. The count does not
depend on the quantisation range ``[-R, R]``, so the window a weight keeps for later
tasks, ``2R / 2^k``, scales with R: a model quantised to a tight range keeps little
room (``bitcl.interop.quantize``'s range rule ``auto``; ``range_left`` below).

An absolute prior suits one kind of model only: the per-sample Fisher of a weight depends on
the architecture. A convolution weight is shared by every output position, so its gradient sums
over them (26 x 26 = 676 positions for a 3x3 kernel on a 28x28 image): its Fisher was ~2000x
that of a dense weight in the same network, and at F_0 = 1e-10 it froze 12 of 20 bits after one
task (issue 22). ``--prior relative`` sets each tensor's prior from the first task instead:
``F_0 = relative_prior * mean(F_1)`` over that tensor, so a weight freezes
``ceil(0.5 log2((F_0 + F_1) / (2 F_0)))`` bits by how its Fisher compares with its own tensor's
mean: the count does not change when a tensor's Fisher is scaled (weight sharing, loss scale,
fan-in), and one ``relative_prior`` fits different models. (The authors' code scales F_0 by each
layer's fan-in, i.e. by 1/R^2 at their range 6/sqrt(fan_in): that equalises the window's
loss bound ``0.5 F h^2 <= F_0 R^2`` across ranges, not the Fisher's scale, and would freeze the
shared convolution weights even more.) ``bitcl.fit`` uses it for a user's own model
(``bitcl.api.USER_MODEL_OPTIONS``); bitcl's CLI keeps the absolute prior it was tuned with.

State between tasks: int32 codes and uint8 frozen counts (in the model) plus a
float32 running Fisher per weight: 9 bytes per weight, whatever the number of
tasks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bitcl.errors import ConfigError
from bitcl.importance import FISHER_KINDS, batch_fisher_sums, layers_of, task_mean
from bitcl.quant import bit_states
from bitcl.settings import setting

from .base import Strategy, register
from .context import RunInfo, TaskContext
from .regularizer import batch_field, samples_field
from .state import TASKS_SEEN, StateEntry


PRIORS = ("absolute", "relative")
# --prior relative's default: chosen on validation digits over a conv net and an MLP by
# benchmarks/search_fit_defaults.py (benchmarks/results/search_fit_defaults.json)
RELATIVE_PRIOR = 0.1


@dataclass
class BlipOptions:
    fisher: str = setting("sampled", "Fisher estimate: sampled (labels drawn from the prediction), exact "
                          "(expectation over classes), empirical (true labels)", choices=FISHER_KINDS)
    # --samples / --batch as every other method's (called --fisher-samples / --fisher-batch before 0.3)
    samples: int = samples_field(0, "the Fisher", aliases=("fisher_samples",))
    batch: int = batch_field(500, "the Fisher estimation", aliases=("fisher_batch",))
    fisher_prior: float = setting(1e-10, "prior Fisher F_0 per weight, in per-sample Fisher units", above=0.0,
                                  high=float(torch.finfo(torch.float32).max))  # the running Fisher is float32
    prior: str = setting("absolute", "F_0: absolute (--fisher-prior for every weight), or relative (--relative-prior "
                         "times the mean first-task Fisher of the weight's tensor: one value fits any model)",
                         choices=PRIORS)
    relative_prior: float = setting(RELATIVE_PRIOR, "--prior relative: F_0 as a fraction of each tensor's mean "
                                    "first-task Fisher", above=0.0, high=1e30)
    accumulate: str = setting("mean", "running mean of prior and Fishers (the authors'), or their running sum",
                              choices=("mean", "sum"))
    rounding: str = setting("ceil", "bits from the information gain: ceil of each task's gain (the authors'), "
                            "round (half-up), or once: ceil of the gain accumulated since the prior, so per-task "
                            "round-ups never add up", choices=("ceil", "round", "once"))
    reset_free_bits: bool = setting(False, "after freezing, set each weight's free bits to the middle of its window "
                                    "(off by default: a weight that gains its first bits would jump by up to a "
                                    "quarter of the range; README)")


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
        if options.prior == "relative" and options.rounding == "once":
            raise ConfigError("BLIP's rounding 'once' needs an absolute prior (prior 'relative' sets F_0 per tensor "
                              "from the first task, which the running Fisher does not keep)")
        prior = options.fisher_prior  # prior "relative": replaced at the end of the first task
        for name, state in self.quantized.items():
            self.state[f"fisher/{name}"] = torch.full(state.codes.shape, prior, dtype=torch.float32,
                                                      device=state.codes.device)
        self.state["tasks_seen"] = torch.zeros((), dtype=torch.int64)

    def estimate_fisher(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        """Per-sample mean diagonal Fisher of every quantised weight on the task's data (Eq. 6)."""
        opts = self.options
        return task_mean(ctx, opts.samples, opts.batch, "fisher",
                         lambda x, y, u: batch_fisher_sums(self.model, self.layers, ctx.logits, x, y,
                                                           opts.fisher, u), self.quantized)

    def end_task(self, ctx: TaskContext) -> None:
        with torch.enable_grad():
            fisher = self.estimate_fisher(ctx)
        seen = int(self.state["tasks_seen"])
        for name, state in self.quantized.items():
            old = self.state[f"fisher/{name}"]
            if seen == 0 and self.options.prior == "relative":
                old = self.relative_prior(fisher[name], old)
            if self.options.accumulate == "mean":  # prior counts as one term of the mean
                new = (old * (seen + 1) + fisher[name]) / (seen + 2)
            else:
                new = old + fisher[name]
            extra = extra_bits(old, new, state.frozen, self.options.fisher_prior, self.options.rounding)
            state.freeze(extra, reset_free_bits=self.options.reset_free_bits)
            self.state[f"fisher/{name}"] = new
        self.state["tasks_seen"] = torch.tensor(seen + 1)

    def relative_prior(self, fisher: torch.Tensor, absolute: torch.Tensor) -> torch.Tensor:
        """F_0 of one tensor under ``prior="relative"``: ``relative_prior`` times the mean of its
        first-task Fisher (a tensor no sample reached, or whose prior would underflow float32, keeps
        the absolute prior)."""
        prior = self.options.relative_prior * float(fisher.double().mean())
        if not prior >= torch.finfo(torch.float32).tiny:
            return absolute
        return torch.full_like(absolute, min(prior, float(torch.finfo(torch.float32).max)))

    def task_results(self) -> dict:
        """``range_left`` per quantised tensor after this task's freezing: the mean of ``2^-k`` over its
        weights (k frozen bits), the fraction of its range ``[-R, R]`` the free bits still let a weight
        cross in the next task (its window is ``2R / 2^k`` wide); ``bitcl.train.learned`` quotes it
        when a task is not learned."""
        return {"range_left": {name: float(torch.exp2(-state.frozen.to(torch.float64)).mean())
                               for name, state in self.quantized.items()}}

    def run_results(self) -> dict:
        """``value_range``: R per quantised tensor (a weight can never leave ``[-R, R]``)."""
        return {"value_range": {name: state.layer.value_range() for name, state in self.quantized.items()}}

    def state_bytes(self) -> int:
        """Running Fisher (4 B) plus the codes (4 B) and frozen counts (1 B) the method keeps."""
        bit_state = sum(s.codes.numel() * (s.codes.element_size() + s.frozen.element_size())
                        for s in self.quantized.values())
        return super().state_bytes() + bit_state

