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

Biases are consolidated but not pruned. State between tasks: Ω, θ* and the kept mask
(one bool per prunable weight): constant in the number of tasks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from bitcl.errors import ConfigError
from bitcl.importance import entropy_scores

from .base import register
from .regularizer import ImportanceRegularizer, batch_field, samples_field


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


@dataclass
class AnpycOptions:
    lam: float = field(default=1000.0, metadata={"help": "consolidation strength λ (search on Permuted-MNIST, README)"})
    prune_first: float = field(default=50.0, metadata={"help": "P_0: percent of free weights pruned after task 0"})
    prune_decay: float = field(default=0.8, metadata={"help": "P_t = prune_decay * P_{t-1}"})
    prune_step: float = field(default=10.0, metadata={"help": "percentage points pruned per pruning step"})
    retrain_epochs: int = field(default=1, metadata={"help": "retraining epochs after each pruning step"})
    accumulate: str = field(default="sum", metadata={"help": "how Ω accumulates over tasks",
                                                     "choices": ("sum", "max")})
    samples: int = samples_field()
    batch: int = batch_field()

    def validate(self) -> None:
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ConfigError(f"--lam must be a non-negative number, got {self.lam}")
        if not 0 <= self.prune_first <= 100:
            raise ConfigError(f"--prune-first must lie in 0..100 (percent), got {self.prune_first}")
        if not 0 < self.prune_decay <= 1:
            raise ConfigError(f"--prune-decay must lie in (0, 1], got {self.prune_decay}")
        if not 0 < self.prune_step <= 100:
            raise ConfigError(f"--prune-step must lie in (0, 100], got {self.prune_step}")
        if self.retrain_epochs < 0 or self.samples < 0 or self.batch < 1:
            raise ConfigError("--retrain-epochs and --samples must be >= 0 and --batch >= 1")


@register
class Anpyc(ImportanceRegularizer):
    name = "anpyc"
    summary = "ANPyC: entropy-score pruning + synaptic consolidation for long task sequences (TNNLS)"
    scenarios = ("task", "domain", "class")
    Options = AnpycOptions

    def __init__(self, options, engine):
        super().__init__(options, engine)
        self.prunable = {n: p for n, p in self.params.items() if n.endswith("weight")}
        for name, p in self.prunable.items():
            self.state[f"kept/{name}"] = torch.zeros(p.shape, dtype=torch.bool, device=p.device)
        self.pruned: dict[str, torch.Tensor] = {}

    @property
    def strength(self) -> float:
        return self.options.lam

    # -- scores and pruning ---------------------------------------------------------------
    def scores(self, task) -> dict[str, torch.Tensor]:
        """Mean entropy score of every backbone parameter over ``samples`` training samples."""
        opts, engine = self.options, self.engine
        batches, _ = engine.importance_batches(task, opts.samples, opts.batch, "importance")
        was_training = self.model.training
        self.model.eval()
        total = {n: torch.zeros_like(p) for n, p in self.params.items()}
        with torch.enable_grad():
            for x, _, _ in batches:
                for n, v in entropy_scores(self.params, self.logits_fn(task), x).items():
                    total[n] += v
        self.model.train(was_training)
        count = torch.tensor(float(len(batches)))
        engine.dist.all_reduce_(count)
        return {n: engine.dist.all_reduce_(v) / max(float(count), 1.0) for n, v in total.items()}

    @torch.no_grad()
    def prune_to(self, percent: float, scores: dict[str, torch.Tensor]) -> None:
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
        self.engine.project()  # codes follow: a pruned weight is code 0

    def after_backward(self):
        for name, mask in self.pruned.items():
            grad = self.prunable[name].grad
            if grad is not None:
                grad.masked_fill_(mask, 0.0)

    @torch.no_grad()
    def after_step(self):
        if self.pruned:  # optimiser momentum must not revive a pruned weight
            for name, mask in self.pruned.items():
                self.prunable[name].masked_fill_(mask, 0.0)
            self.engine.project()

    def after_task(self, task):
        opts, engine = self.options, self.engine
        schedule = pruning_schedule(opts.prune_first, opts.prune_decay, opts.prune_step, len(engine.scenario))
        self.pruned = {}
        for i, percent in enumerate(schedule[task.index]):
            self.prune_to(percent, self.scores(task))
            if opts.retrain_epochs:
                engine.train_task(task, epochs=opts.retrain_epochs, tag=f"retrain-{i}")
        omega = self.scores(task)  # pruned weights are zero, so they score 0
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

    def extra_results(self) -> dict:
        kept = sum(int(self.state[f"kept/{n}"].sum()) for n in self.prunable)
        total = sum(p.numel() for p in self.prunable.values())
        free = self.engine.result.extra.get("free_fraction", [])
        return {"free_fraction": free + [1 - kept / total]}
