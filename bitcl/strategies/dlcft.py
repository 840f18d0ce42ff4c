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

θ0 should be a trained network (``--pretrained``), as in the paper. From a random
initialisation the default ``--layers 1`` is a linear probe of random features: enough for
the AlexNet, whose flattened 2048-wide random features separate MNIST digits (the
least-squares head reaches 0.98 on a 5-digit task of 800 training digits), not for the
ResNet-18, whose random features are global averages of 160 channels (0.56 on the same task,
where DLCFT scored near chance). Start from trained weights, or linearise more (``--layers 0``:
every layer's gradient becomes a feature; far slower, and not yet measured to learn there).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp

from bitcl.importance.curvature import CURVATURES
from bitcl.importance.per_sample import layers_of
from bitcl.settings import setting

from .base import Strategy, register
from .regularizer import batch_field, samples_field
from .state import TASKS_SEEN, StateEntry


@dataclass
class DlcftOptions:
    curvature: str = setting("kfac", "curvature of the quadratic penalty", choices=CURVATURES)
    layers: int = setting(1, "linearise the last N layers (heads = 1 layer; 0: all)", low=0)
    loss: str = setting("mse", "task loss of the linearised model", choices=("mse", "ce"))
    target_scale: float = setting(1.0, "one-hot target value s for the MSE", above=0.0)
    c: float = setting(1.0, "penalty multiplier (1: exactly the past tasks' losses)", low=0.0)
    samples: int = samples_field(0, "the curvature")
    batch: int = batch_field(256, "the curvature computation")


class LinearizedModel(nn.Module):
    """f(x; θ0) + J(x)(θ − θ0) for the parameters in ``names``; forward(x, task) like the model."""

    def __init__(self, model: nn.Module, names: list[str], theta0: dict[str, torch.Tensor]):
        super().__init__()
        self.model, self.names, self.theta0 = model, names, theta0

    def forward(self, x: torch.Tensor, task: int = 0) -> torch.Tensor:
        params = dict(self.model.named_parameters())
        primal = {n: self.theta0[n] for n in self.names}
        tangent = {n: params[n] - self.theta0[n] for n in self.names}
        out0, change = jvp(lambda p: functional_call(self.model, p, (x, task), {"mask": False}), (primal,), (tangent,))
        out = out0 + change
        if not self.training and self.model.setting == "class":  # predict among the classes seen
            live = int(self.model.active_outputs)
            out = out.masked_fill(torch.arange(out.shape[1], device=out.device) >= live, float("-inf"))
        return out


def linear_layers(model) -> list[str]:
    """Module names of the backbone's Linear/Conv layers, in order, then "heads"."""
    names = [n for n, m in model.backbone.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return [f"backbone.{n}" for n in names] + ["heads"]


@register
class Dlcft(Strategy):
    name = "dlcft"
    summary = "DLCFT: linearised fine-tuning with the optimal quadratic penalty (ECCV 2022)"
    Options = DlcftOptions
    needs = frozenset({"linearized_training"})
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

    def _theta0(self) -> dict[str, torch.Tensor]:
        return {n: self.state[f"theta0/{n}"] for n in self.names}

    def load_state_tensors(self, tensors):
        super().load_state_tensors(tensors)
        self.linearized.theta0 = self._theta0()

    def training_module(self) -> Optional[nn.Module]:
        return self.linearized

    def loss(self, outputs, targets):
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
                "linearized_parameters": sum(p.numel() for p in self.params.values())}
