"""ANPyC: adversarial neural pruning and synaptic consolidation.

Peng, Zhao, Zhang et al., "Overcoming Long-term Catastrophic Forgetting through
Adversarial Neural Pruning and Synaptic Consolidation", IEEE TNNLS
(arXiv 1912.09091). Reimplemented from the method (no code ported).

* Consolidation (long-term potentiation): training task t minimises
  CE + λ Σ Ω (θ − θ*)², θ* the parameters at the start of the task, Ω the
  accumulated importance (sum over tasks by default, element-wise max as an option).
* Importance, with no labels: s = max(0, g θ + ½ g² θ²), g = ∂H/∂θ, H the entropy of
  the output distribution over a batch, averaged over ``samples`` training samples
  (``bitcl.importance.entropy``), with the model in eval mode.
* Pruning (long-term depression), after every task except the last: the task prunes
  P_t percent of the weights no earlier task kept, P_0 = 50 and P_t = 0.8 P_{t-1},
  reached in steps of 10 percentage points (50 -> 10, 20, 30, 40, 50; 32 -> 10, 20,
  30, 32). At each step, per weight tensor, the lowest-scored free weights are set to
  zero (code 0 on the quantised backbone) and the task is retrained for
  ``retrain_epochs`` with their gradients masked and their values held at zero.
  Weights kept by earlier tasks are never pruned; weights a task prunes are free for
  the next task. Then Ω_t is computed (pruned weights score 0) and accumulated.

On the quantised backbone a pruned weight is held at code 0 by freezing all N of its bits
while the task retrains (the bit projection, which runs once per step anyway, keeps it
there); they are unfrozen when the task ends. On the float backbone ``after_step`` zeroes
them instead. Either way each step projects once.

Every shared weight tensor is prunable, normalisation scales included, but not the output heads
(``prunable_weights``); biases and heads are consolidated but not pruned. State between tasks: Ω,
θ* and the kept mask (one bool per prunable weight): constant in the number of tasks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bitcl.importance import entropy_scores
from bitcl.quant import bit_states
from bitcl.settings import setting

from .base import register
from .regularizer import SEARCHED, ImportanceRegularizer, batch_field, samples_field
from .state import StateEntry


def pruning_schedule(first: float, decay: float, step: float, tasks: int) -> list[list[float]]:
    """The pruning steps (cumulative percentages) after each task; none after the last."""
    out = []
    for t in range(tasks):
        if t == tasks - 1:
            out.append([])
            continue
        target = first * decay ** t
        steps, level = [], step
        while level < target - 1e-9:
            steps.append(level)
            level += step
        if target > 0:
            steps.append(round(target, 6))
        out.append(steps)
    return out


def prunable_weights(model, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors ANPyC may prune: every shared weight tensor (Linear/Conv2d weights and
    normalisation scales) less the model's ``output_modules`` (its heads). A head maps features to
    class scores: pruning a shared class-incremental head removes half of every class's evidence
    (task 0 fell from 0.99 to 0.39 on ResNet-18) rather than spare capacity. Normalisation scales
    stay prunable: with per-task normalisation (``--bn per-task``) a pruned scale silences a channel
    for that task alone, which keeps the channels of tasks apart; leaving them unpruned made ANPyC
    forget far more in task-incremental AlexNet runs."""
    outputs = tuple(getattr(model, "output_modules", ()))  # a user's plain model declares none

    def is_output(name: str) -> bool:
        module = name.rsplit(".", 1)[0]
        return any(module == o or module.startswith(o + ".") for o in outputs)

    return {n: p for n, p in params.items() if n.endswith("weight") and not is_output(n)}


@dataclass
class AnpycOptions:
    lam: float = setting(10000.0, f"consolidation strength λ ({SEARCHED})", low=0.0)
    prune_first: float = setting(50.0, "P_0: percent of free weights pruned after task 0", low=0.0, high=100.0)
    prune_decay: float = setting(0.8, "P_t = prune_decay * P_{t-1}", above=0.0, high=1.0)
    prune_step: float = setting(10.0, "percentage points pruned per pruning step", above=0.0, high=100.0)
    retrain_epochs: int = setting(1, "retraining epochs after each pruning step", low=0)
    accumulate: str = setting("sum", "how Ω accumulates over tasks", choices=("sum", "max"))
    samples: int = samples_field()
    batch: int = batch_field()


@register
class Anpyc(ImportanceRegularizer):
    name = "anpyc"
    summary = "ANPyC: entropy-score pruning + synaptic consolidation for long task sequences (TNNLS)"
    scenarios = ("task", "domain", "class")
    Options = AnpycOptions
    needs = frozenset({"retrain"})
    state_entries = ImportanceRegularizer.state_entries + (StateEntry("kept/{param}", "bool", torch.bool),)

    def __init__(self, options, model, info):
        super().__init__(options, model, info)
        self.prunable = prunable_weights(model, self.params)
        self.bit_states = {n: s for n, s in bit_states(model) if n in self.prunable}
        for name, p in self.prunable.items():
            self.state[f"kept/{name}"] = torch.zeros(p.shape, dtype=torch.bool, device=p.device)
        self.pruned: dict[str, torch.Tensor] = {}

    @property
    def strength(self) -> float:
        return self.options.lam

    # -- scores and pruning ---------------------------------------------------------------
    def scores(self, ctx) -> dict[str, torch.Tensor]:
        """Mean entropy score of every backbone parameter over the batches of ``batch`` samples of
        ``samples`` training samples. Under torchrun each batch's gradient is summed over the ranks'
        shares before scoring (the score is not linear in it), so ranks hold the one-process score."""
        opts, world = self.options, ctx.world
        batches, count = ctx.importance_batches(opts.samples, opts.batch, "importance")
        was_training = self.model.training
        self.model.eval()
        total = {n: torch.zeros_like(p) for n, p in self.params.items()}
        reduce = world.all_reduce_ if world.enabled else None
        try:
            with torch.enable_grad():
                for i, (x, _, _) in enumerate(batches):
                    size = min(opts.batch, count - i * opts.batch)  # the whole batch, over all ranks
                    for n, v in entropy_scores(self.params, ctx.logits, x, size, reduce).items():
                        total[n] += v
        finally:
            self.model.train(was_training)
        return {n: v / max(len(batches), 1) for n, v in total.items()}

    @torch.no_grad()
    def prune_to(self, ctx, percent: float, scores: dict[str, torch.Tensor]) -> None:
        """Per tensor, zero the lowest-scored ``percent`` % of the weights no earlier task kept."""
        for name, p in self.prunable.items():
            free = ~self.state[f"kept/{name}"]
            n_free = int(free.sum())
            k = int(round(percent / 100 * n_free))
            pruned = self.pruned.setdefault(name, torch.zeros_like(free))
            ranked = torch.where(free, scores[name], torch.full_like(scores[name], math.inf))
            ranked = torch.where(pruned, torch.full_like(ranked, -1.0), ranked)  # pruned stay pruned
            order = torch.argsort(ranked.flatten(), stable=True)[:k]
            pruned.view(-1)[order] = True
            p.masked_fill_(pruned, 0.0)
            if name in self.bit_states:  # hold it at code 0: every bit frozen while the task retrains
                state = self.bit_states[name]
                state.codes.masked_fill_(pruned, 0)
                state.frozen.masked_fill_(pruned, state.bits)
        ctx.project()  # codes follow: a pruned weight is code 0

    def after_backward(self, ctx):
        for name, mask in self.pruned.items():
            grad = self.prunable[name].grad
            if grad is not None:
                grad.masked_fill_(mask, 0.0)

    @torch.no_grad()
    def after_step(self, ctx):
        # optimiser momentum must not revive a pruned weight; quantised weights are held at code 0
        # by their frozen bits (the loop's projection), float ones are zeroed here
        for name, mask in self.pruned.items():
            if name not in self.bit_states:
                self.prunable[name].masked_fill_(mask, 0.0)

    def end_task(self, ctx):
        opts = self.options
        schedule = pruning_schedule(opts.prune_first, opts.prune_decay, opts.prune_step, ctx.num_tasks)
        self.pruned = {}
        for i, percent in enumerate(schedule[ctx.task_index]):
            self.prune_to(ctx, percent, self.scores(ctx))
            if opts.retrain_epochs:
                ctx.retrain(opts.retrain_epochs, f"retrain-{i}")
        for name, state in self.bit_states.items():  # pruned weights are free for the next task
            if name in self.pruned:
                state.frozen.masked_fill_(self.pruned[name], 0)
        omega = self.scores(ctx)  # pruned weights are zero, so they score 0
        for name, p in self.params.items():
            if opts.accumulate == "sum":
                self.state[f"omega/{name}"] = self.state[f"omega/{name}"] + omega[name]
            else:
                self.state[f"omega/{name}"] = torch.maximum(self.state[f"omega/{name}"], omega[name])
            self.state[f"anchor/{name}"] = p.detach().clone()
        for name in self.prunable:
            kept = self.state[f"kept/{name}"]
            survivors = ~self.pruned[name] if name in self.pruned else torch.ones_like(kept)
            self.state[f"kept/{name}"] = kept | survivors if self.pruned else kept
        self.state["tasks_seen"] = self.state["tasks_seen"] + 1
        self.pruned = {}

    def task_results(self) -> dict:
        kept = sum(int(self.state[f"kept/{n}"].sum()) for n in self.prunable)
        total = sum(p.numel() for p in self.prunable.values())
        return {"free_fraction": 1 - kept / total}
