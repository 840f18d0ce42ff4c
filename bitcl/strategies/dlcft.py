"""DLCFT: continual fine-tuning of a linearised pre-trained network.

Shon, Lee, Kim & Kim, "Deep Linear Continual Fine-Tuning for General Incremental
Learning", ECCV 2022, arXiv 2208.08112 (no public code; written from the paper).

The network is linearised around its (pre-trained) weights θ0,
f_lin(x; θ) = f(x; θ0) + J(x)(θ − θ0), computed with one ``torch.func.jvp`` per
batch (no Jacobian is materialised), and trained with the MSE to scaled one-hot
targets, L_t(θ) = (1/N_t) Σ_n ||f_lin(x_n; θ) − s·onehot(y_n)||² over *all* outputs of the
head: in class-incremental learning the outputs of classes not in the task (past and
future) are trained towards 0 on its data, so the sum of the tasks' losses is the joint
least-squares problem over all classes (the paper's class-incremental extension);
outputs of classes not yet seen are masked only when predicting.
Each L_t is exactly quadratic, so the sum of the past tasks' losses is
½ (θ − θ*)ᵀ A (θ − θ*) + const with A = Σ_t (2/N_t) Σ_n J(x_n)ᵀ J(x_n) and θ* the
parameters after the last task (the minimiser of the past losses): adding it as the
penalty makes sequential training reach the joint solution (Sec. 3). Curvature:
``exact`` (P×P, a few thousand parameters), ``kfac`` (per linear layer, KFC per conv layer;
exact for one linear layer; its factors are kept per task) or ``diagonal``: one
``bitcl.importance.curvature.Curvature`` class each, chosen by name from its registry.

Linearised: the last ``layers`` layers (the heads count as one; 0 = all); the rest is
frozen at θ0. ``--loss ce`` trains the linearised model with cross-entropy instead
(then the penalty is no longer the exact past loss: the paper's point about EWC).

The linearised function must be one function of each input, the same in training and in
evaluation: every batch norm of the network runs with fixed statistics (eval mode) in the
linearised model, the statistics of the linearisation point θ0. Before, training normalised
with each batch's statistics (and moved the running statistics) while evaluation used the
running statistics: a random ResNet-18's features in eval mode, with the initial statistics
(mean 0, variance 1), were 300 times smaller and nearly constant, so the head was trained on
other features than it was evaluated on. Now, before a task, every batch norm the task uses
that has never seen data (a random network; a new per-task norm) has its statistics computed
from the task's training data at θ0 (one pass in training mode, cumulative average:
:func:`bitcl.models.norm.recalibrate_`); pre-trained statistics are kept.

θ0 is a trained network in the paper (an ImageNet-trained ResNet-18; ``--pretrained``). A
random network is not one. A random ResNet-18's features are global averages of random channels: a
linear model on them stayed near chance (split-mnist, 2 tasks of 5 digits, 800 training digits a
task, 1 epoch, seed 0: 0.19 and 0.20 before this change, chance 0.2). So without pre-trained weights, on the
ResNet-18s, ``--warmup auto`` (the default) means ``first-task``: the whole network is first trained
on the first task in the ordinary way (cross-entropy, the run's optimiser, ``--warmup-epochs``,
default the run's ``--epochs``), its batch norms are recalibrated on that task, and the result is θ0:
the stream's first task stands in for the paper's pre-training data (on that setting: 0.92 and
0.43). This warm-up is not in the paper; the run records it (``results.json``:
``linearisation_point``). Elsewhere ``auto`` means ``none``: the random network is linearised as it
is; AlexNet's random features (2048 wide, spatial) serve a linear head (0.90 and 0.78 on that
setting, 0.18 and 0.34 before this change; with the warm-up 0.73 and 0.38). Under torchrun the warm-up is refused (the data-parallel
wrapper is built while the backbone's gradients are off): use ``--pretrained`` there.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp

from bitcl.importance.curvature import CURVATURES
from bitcl.errors import ConfigError
from bitcl.importance.per_sample import layers_of
from bitcl.models.norm import ContinualBatchNorm2d, recalibrate_
from bitcl.models.resnet import ResNet18
from bitcl.quant import bit_states
from bitcl.settings import setting

from .base import Strategy, register
from .regularizer import batch_field, samples_field
from .state import TASKS_SEEN, StateEntry


WARMUPS = ("auto", "first-task", "none")


@dataclass
class DlcftOptions:
    curvature: str = setting("kfac", "curvature of the quadratic penalty", choices=CURVATURES)
    layers: int = setting(1, "linearise the last N layers (heads = 1 layer; 0: all)", low=0)
    loss: str = setting("mse", "task loss of the linearised model", choices=("mse", "ce"))
    target_scale: float = setting(1.0, "one-hot target value s for the MSE", above=0.0)
    c: float = setting(1.0, "penalty multiplier (1: exactly the past tasks' losses)", low=0.0)
    samples: int = samples_field(0, "the curvature")
    batch: int = batch_field(256, "the curvature computation")
    warmup: str = setting("auto", "how θ0 is set without pre-trained weights: first-task (train the whole network on "
                          "the first task, then linearise), none (linearise the random network), auto (first-task "
                          "for the ResNet-18s unless --pretrained, else none)", choices=WARMUPS)
    warmup_epochs: int = setting(0, "epochs of the first-task warm-up (0: the run's --epochs)", low=0)


class LinearizedModel(nn.Module):
    """f(x; θ0) + J(x)(θ − θ0) for the parameters in ``names``; forward(x, task) like the model."""

    def __init__(self, model: nn.Module, names: list[str], theta0: dict[str, torch.Tensor]):
        super().__init__()
        self.model, self.names, self.theta0 = model, names, theta0
        self.plain = False  # the warm-up trains the network itself (no linearisation)

    def forward(self, x: torch.Tensor, task: int = 0) -> torch.Tensor:
        if self.plain:
            return self.model(x, task)
        with fixed_norms(self.model):
            return self._linearised(x, task)

    def _linearised(self, x: torch.Tensor, task: int) -> torch.Tensor:
        params = dict(self.model.named_parameters())
        primal = {n: self.theta0[n] for n in self.names}
        tangent = {n: params[n] - self.theta0[n] for n in self.names}
        out0, change = jvp(lambda p: functional_call(self.model, p, (x, task), {"mask": False}), (primal,), (tangent,))
        out = out0 + change
        if not self.training and self.model.setting == "class":  # predict among the classes seen
            live = int(self.model.active_outputs)
            out = out.masked_fill(torch.arange(out.shape[1], device=out.device) >= live, float("-inf"))
        return out


@contextmanager
def fixed_norms(model: nn.Module):
    """Every batch norm of ``model`` in eval mode (its stored statistics, no update) for the block:
    with batch statistics the output of one input would depend on the rest of its batch, and a
    linearisation of f(x; θ) needs one function of x, the same in training and evaluation."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in norms:
        m.train(False)
    try:
        yield
    finally:
        for m in norms:
            m.train(True)


def uncalibrated_norms(model: nn.Module, task: int) -> list[nn.Module]:
    """The batch norms ``task`` would normalise with that have never seen data (random init)."""
    found = []
    for m in model.modules():
        if isinstance(m, ContinualBatchNorm2d):
            norm = m.norms[task if m.policy == "per-task" else 0]
            if not m._frozen and int(norm.num_batches_tracked) == 0:
                found.append(norm)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and not _inside_policy_norm(model, m):
            if m.track_running_stats and int(m.num_batches_tracked) == 0:
                found.append(m)
    return found


def _inside_policy_norm(model: nn.Module, norm: nn.Module) -> bool:
    return any(norm is inner for m in model.modules() if isinstance(m, ContinualBatchNorm2d) for inner in m.norms)


def random_features_are_poor(backbone: nn.Module) -> bool:
    """Backbones whose random features a linear model cannot use (measured, module docstring): the
    ResNet-18s, whose features are global averages of random channels. AlexNet's random features
    (2048 wide, spatial) are left as they are: its warm-up, measured, did worse."""
    return isinstance(backbone, ResNet18)


def linear_layers(model) -> list[str]:
    """Module names of the backbone's Linear/Conv layers, in order, then "heads"."""
    names = [n for n, m in model.backbone.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return [f"backbone.{n}" for n in names] + ["heads"]


@register
class Dlcft(Strategy):
    name = "dlcft"
    summary = "DLCFT: linearised fine-tuning with the optimal quadratic penalty (ECCV 2022)"
    Options = DlcftOptions
    needs = frozenset({"linearized_training", "retrain"})
    state_entries = (StateEntry("theta0/{param}"), StateEntry("anchor/{param}"), TASKS_SEEN,
                     StateEntry("curvature"), StateEntry("diag/{param}", "nonneg"),  # --curvature exact, diag
                     StateEntry("kfac/{task}/{layer}/G"), StateEntry("kfac/{task}/{layer}/S"))  # kfac

    def __init__(self, options: DlcftOptions, model, info):
        super().__init__(options, model, info)
        groups = linear_layers(self.model)
        chosen = groups if options.layers == 0 else groups[-options.layers:]
        params = dict(self.model.named_parameters())
        self.names = [n for n in params if any(n == g or n.startswith(g + ".") for g in chosen)]
        self.params = {n: params[n] for n in self.names}
        self.layers = layers_of(self.model, self.names)
        self.form = CURVATURES[options.curvature](self.names, self.params, self.layers)
        self.form.setup(self.state, info.device, f"--layers {options.layers}")
        for n, p in params.items():
            p.requires_grad_(n in self.names)
        for n in self.names:
            self.state[f"theta0/{n}"] = params[n].detach().clone()
            self.state[f"anchor/{n}"] = params[n].detach().clone()
        self.state["tasks_seen"] = torch.zeros((), dtype=torch.int64)
        self.linearized = LinearizedModel(self.model, self.names, self._theta0())
        self.warmup = self._warmup_choice(options)
        self.warming = False
        self.point = {"warmup": self.warmup, "pretrained": bool(getattr(info, "pretrained", False)),
                      "warmup_epochs": options.warmup_epochs or None}
        if self.warmup == "first-task" and info.world.enabled:
            raise ConfigError("dlcft --warmup first-task cannot run under torchrun (the data-parallel wrapper is "
                              "built with the backbone's gradients off); start from --pretrained weights or pass "
                              "--warmup none")

    def _warmup_choice(self, options: DlcftOptions) -> str:
        if options.warmup != "auto":
            return options.warmup
        pretrained = getattr(self.info, "pretrained", False)
        return "first-task" if random_features_are_poor(self.model.backbone) and not pretrained else "none"

    def before_task(self, ctx) -> None:
        """Set the linearisation point: the first-task warm-up (``--warmup``), then the statistics of
        the batch norms this task uses that have never seen data (module docstring)."""
        first = int(self.state["tasks_seen"]) == 0
        if self.warmup == "first-task" and first:
            self._warm_up(ctx)
        elif uncalibrated_norms(self.model, ctx.task_index):
            self._calibrate(ctx)  # statistics are buffers: θ0's weights stay as they are
        self._zero_new_head(ctx.task_index, warmed=self.warmup == "first-task")

    @torch.no_grad()
    def _zero_new_head(self, task: int, warmed: bool) -> None:
        """A head no task has trained starts at zero, in the parameters and in θ0: then f(x; θ0) is 0
        on its outputs and the linear model fits the targets from there (a random head's outputs
        would first have to be unlearnt, which a few steps of a small learning rate do not do).
        New heads: task-incremental heads of tasks after the first (the first one too without the
        warm-up), and the shared head before the first task without the warm-up."""
        fresh = (task > 0 or not warmed) if self.model.multi_head else (task == 0 and not warmed)
        if not fresh:
            return
        head = self.model.head_for(task)
        for p in head.parameters():
            p.zero_()
        for _, state in bit_states(head):  # a quantised head: codes follow the weights
            state.project_()
        prefix = f"heads.{task}." if self.model.multi_head else "heads.0."
        for n in self.names:
            if n.startswith(prefix):
                self.state[f"theta0/{n}"] = self.params[n].detach().clone()
                self.state[f"anchor/{n}"] = self.params[n].detach().clone()
        self.linearized.theta0 = self._theta0()

    def _warm_up(self, ctx) -> None:
        """Train every parameter on the first task with cross-entropy, recalibrate, take it as θ0."""
        params = dict(self.model.named_parameters())
        epochs = self.options.warmup_epochs or None
        for p in params.values():
            p.requires_grad_(True)
        self.linearized.plain, self.warming = True, True
        try:
            ctx.retrain(epochs, "warmup")
        finally:
            self.linearized.plain, self.warming = False, False
            for n, p in params.items():
                p.requires_grad_(n in self.names)
        self._calibrate(ctx, every=True)
        self._set_theta0()

    def _calibrate(self, ctx, every: bool = False) -> None:
        """Running statistics from one pass over the task's training data (``recalibrate_``): of the
        norms never calibrated, or (``every``) of every norm still learning."""
        batches, _ = ctx.importance_batches(0, self.options.batch, "batch-norm statistics")
        if every:
            recalibrate_(self.model, batches, ctx.task_index)
            return
        fresh = uncalibrated_norms(self.model, ctx.task_index)
        with torch.no_grad():
            momenta = [n.momentum for n in fresh]
            modes = {m: m.training for m in self.model.modules()}
            try:
                self.model.eval()
                for n in fresh:
                    n.reset_running_stats()
                    n.momentum = None
                    n.train(True)
                for batch in batches:
                    self.model(batch[0], ctx.task_index, mask=False)
            finally:
                for n, momentum in zip(fresh, momenta):
                    n.momentum = momentum
                for m, training in modes.items():
                    m.training = training

    @torch.no_grad()
    def _set_theta0(self) -> None:
        for n in self.names:
            self.state[f"theta0/{n}"] = self.params[n].detach().clone()
            self.state[f"anchor/{n}"] = self.params[n].detach().clone()
        self.linearized.theta0 = self._theta0()

    def _theta0(self) -> dict[str, torch.Tensor]:
        return {n: self.state[f"theta0/{n}"] for n in self.names}

    def load_state_tensors(self, tensors):
        super().load_state_tensors(tensors)
        self.linearized.theta0 = self._theta0()

    def training_module(self) -> Optional[nn.Module]:
        return self.linearized

    def loss(self, outputs, targets):
        if self.warming:  # the warm-up trains the network itself, as finetune would
            return F.cross_entropy(outputs, targets, reduction="sum")
        if self.options.loss == "ce":
            if self.model.setting == "class":  # cross-entropy only among the classes seen
                live = int(self.model.active_outputs)
                outputs = outputs.masked_fill(torch.arange(outputs.shape[1], device=outputs.device) >= live,
                                              float("-inf"))
            return F.cross_entropy(outputs, targets, reduction="sum")
        target = F.one_hot(targets, outputs.shape[1]).to(outputs.dtype) * self.options.target_scale
        return (outputs - target).pow(2).sum()

    def penalty(self):
        if int(self.state["tasks_seen"]) == 0 or self.options.c == 0:
            return None
        delta = {n: self.params[n] - self.state[f"anchor/{n}"] for n in self.names}
        quad = self.form.quadratic(self.state, delta, int(self.state["tasks_seen"]))
        return self.options.c * 0.5 * quad

    @torch.no_grad()
    def _at_theta0(self):
        """Swap θ0 into the parameters (Jacobians of the linearised model are taken there)."""
        saved = {n: p.detach().clone() for n, p in self.params.items()}
        for n, p in self.params.items():
            p.copy_(self.state[f"theta0/{n}"])
        return saved

    def curvature(self, ctx) -> dict:
        """This task's Hessian of the MSE loss, (2/N) Σ JᵀJ, in the chosen form."""
        opts, world, model, task_index = self.options, ctx.world, self.model, ctx.task_index
        batches, count = ctx.importance_batches(opts.samples, opts.batch, "curvature")
        batches = [b for b in batches if len(b[0])]  # sums: a rank's empty share adds nothing
        saved = self._at_theta0()
        was_training = model.training
        model.eval()
        logits = lambda inp: model(inp, task_index, mask=False)
        live = self.model.head_for(task_index).out_features  # every output is in the loss
        try:
            with torch.enable_grad():
                forward = lambda p, xi: functional_call(model, p, (xi, task_index), {"mask": False})
                out = self.form.estimate(batches, model, forward, logits, live, world, count)
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(saved[n])
            model.train(was_training)
        return out

    def end_task(self, ctx) -> None:
        part = self.curvature(ctx)
        t = int(self.state["tasks_seen"])
        self.form.accumulate(self.state, part, t)
        for n in self.names:
            self.state[f"anchor/{n}"] = self.params[n].detach().clone()
        self.state["tasks_seen"] = self.state["tasks_seen"] + 1

    def task_results(self) -> dict:
        keys = self.form.keys(self.state)
        return {"curvature_bytes": sum(self.state[k].numel() * self.state[k].element_size() for k in keys)}

    def run_results(self) -> dict:
        return {"curvature": self.options.curvature,
                "linearized_parameters": sum(p.numel() for p in self.params.values()),
                "linearisation_point": dict(self.point)}
