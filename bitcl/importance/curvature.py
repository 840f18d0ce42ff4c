"""Curvature of the linearised model's MSE loss: exact, K-FAC and diagonal.

For the linearised network f_lin(x; θ) = f(x; θ0) + J(x)(θ − θ0) and the task loss
L(θ) = (1/N) Σ_n ||f_lin(x_n; θ) − y_n||², the Hessian is constant,
A = (2/N) Σ_n J(x_n)ᵀ J(x_n) (Shon et al., "DLCFT", ECCV 2022, arXiv 2208.08112,
Sec. 3). Jacobians are taken at θ0.

* ``exact``: the full P×P matrix (P linearised parameters; a few thousand at most);
* ``kfac``: per linear layer, A ≈ 2 G ⊗ S with G = (1/N) Σ_n Σ_o g_no g_noᵀ (output-side
  gradients of output o) and S = (1/N) Σ_n a_n a_nᵀ (inputs, with a 1 appended for the
  bias): Martens & Grosse, ICML 2015. Exact for a single linear layer;
* ``diagonal``: diag(A) = (2/N) Σ_n Σ_o (∂f_o/∂θ)², from vectorised per-sample gradients.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.func import jacrev, vmap

from .per_sample import _Capture, per_sample_power_sums

CURVATURES = ("exact", "kfac", "diagonal")


def exact_sum(model: nn.Module, names: list[str], theta0: dict[str, torch.Tensor],
              forward: Callable, x: torch.Tensor, outputs: int) -> torch.Tensor:
    """Σ_n J_nᵀ J_n (P×P) for one batch, J_n the Jacobian of the live outputs w.r.t. ``names``."""
    fixed = {k: v for k, v in theta0.items() if k not in names}

    def f(flat_params, xi):
        params, start = dict(fixed), 0
        for n in names:
            k = theta0[n].numel()
            params[n] = flat_params[start:start + k].view_as(theta0[n])
            start += k
        return forward(params, xi.unsqueeze(0))[0, :outputs]

    flat0 = torch.cat([theta0[n].flatten() for n in names])
    jac = vmap(jacrev(f), in_dims=(None, 0))(flat0, x).reshape(-1, flat0.numel())  # (n * O, P)
    return jac.t() @ jac


def diagonal_sum(model: nn.Module, layers: dict[str, nn.Module], logits: Callable, x: torch.Tensor,
                 outputs: int) -> dict[str, torch.Tensor]:
    """Σ_n Σ_o (∂f_o/∂θ)² per parameter for one batch (one backward pass per output)."""
    total: dict[str, torch.Tensor] = {}
    for o in range(outputs):
        for k, v in per_sample_power_sums(model, layers, lambda o=o: logits(x)[:, o].sum(), 2).items():
            total[k] = total[k] + v if k in total else v
    return total


def kfac_sums(model: nn.Module, layers: dict[str, nn.Module], logits: Callable, x: torch.Tensor,
              outputs: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per linear layer, (Σ_n Σ_o g gᵀ, Σ_n a aᵀ) for one batch (bias folded into a)."""
    out: dict[str, list] = {}
    for o in range(outputs):
        with _Capture(layers) as cap:
            value = logits(x)[:, o].sum()
        names = [n for n in layers if n in cap.outputs]
        grads = torch.autograd.grad(value, [cap.outputs[n] for n in names], allow_unused=True)
        for name, g in zip(names, grads):
            layer = layers[name]
            if not isinstance(layer, nn.Linear):
                raise NotImplementedError(f"{name}: K-FAC curvature is implemented for linear layers only")
            a = cap.inputs[name].flatten(1)
            if layer.bias is not None:
                a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype, device=a.device)], 1)
            g = torch.zeros_like(cap.outputs[name]) if g is None else g
            gg = g.t() @ g
            if name in out:
                out[name][0] += gg
            else:
                out[name] = [gg, a.t() @ a]
    return {k: (v[0], v[1]) for k, v in out.items()}
