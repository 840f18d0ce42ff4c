"""Curvature of the linearised model's MSE loss: exact, K-FAC and diagonal.

For the linearised network f_lin(x; θ) = f(x; θ0) + J(x)(θ − θ0) and the task loss
L(θ) = (1/N) Σ_n ||f_lin(x_n; θ) − y_n||², the Hessian is constant,
A = (2/N) Σ_n J(x_n)ᵀ J(x_n) (Shon et al., "DLCFT", ECCV 2022, arXiv 2208.08112,
Sec. 3). Jacobians are taken at θ0.

* ``exact``: the full P×P matrix (P linearised parameters; a few thousand at most);
* ``kfac``: per linear layer, A ≈ 2 G ⊗ S with G = (1/N) Σ_n Σ_o g_no g_noᵀ (output-side
  gradients of output o) and S = (1/N) Σ_n a_n a_nᵀ (inputs, with a 1 appended for the
  bias): Martens & Grosse, ICML 2015. Exact for a single linear layer. Conv layers use KFC
  (Grosse & Martens, "A Kronecker-factored approximate Fisher matrix for convolution layers",
  ICML 2016, arXiv 1602.01407, Sec. 3): with a_nt the unfolded input patch and g_not the
  output gradient at spatial position t of T, G = (1/N) Σ_n Σ_o Σ_t g gᵀ and
  S = (1/N) Σ_n (1/T) Σ_t a aᵀ, i.e. T · E_t[g gᵀ] ⊗ E_t[a aᵀ] under KFC's spatial
  homogeneity and spatially uncorrelated derivatives; exact when T = 1;
* ``diagonal``: diag(A) = (2/N) Σ_n Σ_o (∂f_o/∂θ)², from vectorised per-sample gradients.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
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


def kfac_supported(layer: nn.Module) -> bool:
    """Linear layers, and conv layers KFC covers (ungrouped, zero padding)."""
    if isinstance(layer, nn.Conv2d):
        return layer.groups == 1 and layer.padding_mode == "zeros" and not isinstance(layer.padding, str)
    return isinstance(layer, nn.Linear)


def _rows(layer: nn.Module, inputs: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(a, g, T)``: one row per sample (linear) or per sample and spatial position (conv, KFC)."""
    if isinstance(layer, nn.Conv2d):
        patches = F.unfold(inputs, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # (n, D, T)
        positions = patches.shape[-1]
        a = patches.transpose(1, 2).reshape(-1, patches.shape[1])
        return a, grad.flatten(2).transpose(1, 2).reshape(-1, grad.shape[1]), positions
    return inputs.flatten(1), grad, 1


def kfac_sums(model: nn.Module, layers: dict[str, nn.Module], logits: Callable, x: torch.Tensor,
              outputs: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per linear or conv layer, the batch sums (Σ_n Σ_o Σ_t g gᵀ, Σ_n (1/T) Σ_t a aᵀ) (bias folded
    into a; T = 1 for linear layers, the output positions for conv layers: KFC)."""
    out: dict[str, list] = {}
    for o in range(outputs):
        with _Capture(layers) as cap:
            value = logits(x)[:, o].sum()
        names = [n for n in layers if n in cap.outputs]
        grads = torch.autograd.grad(value, [cap.outputs[n] for n in names], allow_unused=True)
        for name, g in zip(names, grads):
            layer = layers[name]
            if not kfac_supported(layer):
                raise NotImplementedError(f"{name}: K-FAC curvature needs a linear or an ungrouped, "
                                          "zero-padded conv layer")
            g = torch.zeros_like(cap.outputs[name]) if g is None else g
            a, g, positions = _rows(layer, cap.inputs[name], g)
            gg = g.t() @ g
            if name in out:
                out[name][0] += gg
                continue
            if layer.bias is not None:
                a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype, device=a.device)], 1)
            out[name] = [gg, a.t() @ a / positions]
    return {k: (v[0], v[1]) for k, v in out.items()}
