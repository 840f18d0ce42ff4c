"""Vectorised sums of per-sample gradient powers, sum_n |g_n|^p, for Linear and Conv2d layers.

For a linear layer y = W x + b, sample n's weight gradient is the outer product
g_n x_n^T (g_n = dL_n/dy_n), so elementwise ``sum_n |g_n x_n^T|^p = (|g|^p)^T (|x|^p)``:
one matrix product for the whole batch, no loop over samples (docs/methods.md,
"Information gain"). Conv layers use the unfolded input: sample n's gradient is
g_n U_n^T with U_n the im2col patches, computed for all n with batched matmuls
over chunks of samples small enough to stay in cache.

The caller provides a function returning a scalar that is the *sum* over samples
of per-sample losses, so that the gradient at each layer output is exactly the
per-sample g_n (samples never interact: no batch norm in bitcl's models).
Parameter gradients are never formed: autograd differentiates to the layer
outputs only.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED = (nn.Linear, nn.Conv2d)
# elements of the (chunk, out, C*k*k) per-sample gradients of one chunk: 4 MB on CPU (stays in cache),
# 256 MB on a GPU (few large launches); never fewer than _MIN_CHUNK samples per matmul
_CPU_CHUNK_ELEMS = 1 << 20
_GPU_CHUNK_ELEMS = 1 << 26
_MIN_CHUNK = 4


def layers_of(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Module]:
    """The Linear/Conv2d modules owning the given parameter names (``"backbone.layers.1.weight"``)."""
    modules = dict(model.named_modules())
    out = {}
    for name in names:
        owner = name.rsplit(".", 1)[0]
        module = modules.get(owner)
        if isinstance(module, SUPPORTED):
            out[owner] = module
    return out


class Capture:
    """Forward hooks that keep each layer's input and output for one batch."""

    def __init__(self, layers: dict[str, nn.Module]):
        self.layers = layers
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = []

    def __enter__(self):
        for name, layer in self.layers.items():
            if isinstance(layer, nn.Conv2d) and layer.groups != 1:
                raise NotImplementedError(f"{name}: per-sample gradients of grouped convolutions")
            self.handles.append(layer.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name):
        def hook(module, args, output):
            self.inputs[name] = args[0].detach()
            self.outputs[name] = output
        return hook

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def _linear_sums(x, g, power, has_bias):
    if x.dim() > 2:  # extra dims: per-sample grad is a sum over them, no longer rank one
        per_sample = torch.einsum("n...o,n...i->noi", g, x)
        weight = per_sample.abs().pow(power).sum(0)
        bias = g.reshape(g.shape[0], -1, g.shape[-1]).sum(1).abs().pow(power).sum(0) if has_bias else None
        return weight, bias
    gp, xp = (g.abs(), x.abs()) if power == 1 else (g.pow(2), x.pow(2))
    weight = gp.t() @ xp
    bias = gp.sum(0) if has_bias else None
    return weight, bias


def _conv_sums(layer: nn.Conv2d, x, g, power):
    g = g.flatten(2)  # (n, out, L)
    n, out_ch = g.shape[:2]
    fan_in = x.shape[1] * layer.kernel_size[0] * layer.kernel_size[1]
    # chunks of a few samples: the per-sample gradients (chunk, out, C*k*k) stay in cache between the
    # matmul that makes them and the in-place power + sum that reduces them (2-4x faster than large chunks)
    budget = _CPU_CHUNK_ELEMS if g.device.type == "cpu" else _GPU_CHUNK_ELEMS
    chunk = max(_MIN_CHUNK, budget // (out_ch * fan_in))
    weight = torch.zeros(out_ch, fan_in, dtype=g.dtype, device=g.device)
    for start in range(0, n, chunk):
        patches = F.unfold(x[start:start + chunk], layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        per_sample = torch.bmm(g[start:start + chunk], patches.transpose(1, 2))  # (chunk, out, C*k*k)
        weight += (per_sample.abs_() if power == 1 else per_sample.square_()).sum(0)
    bias = g.sum(2).abs().pow(power).sum(0) if layer.bias is not None else None
    return weight.view_as(layer.weight), bias


def per_sample_power_sums(model: nn.Module, layers: dict[str, nn.Module],
                          summed_loss: Callable[[], torch.Tensor], power: int = 2) -> dict[str, torch.Tensor]:
    """``{param_name: sum_n |dL_n/dparam|^power}`` for every weight and bias of ``layers``.

    ``summed_loss()`` runs the forward pass and returns ``sum_n L_n``.
    """
    if power not in (1, 2):
        raise ValueError(f"power must be 1 or 2, got {power}")
    with Capture(layers) as cap:
        loss = summed_loss()
    names = [n for n in layers if n in cap.outputs]
    grads = torch.autograd.grad(loss, [cap.outputs[n] for n in names], allow_unused=True)
    sums = {}
    for name, g in zip(names, grads):
        layer, x = layers[name], cap.inputs[name]
        if g is None:
            g = torch.zeros_like(cap.outputs[name])
        if isinstance(layer, nn.Conv2d):
            weight, bias = _conv_sums(layer, x, g, power)
        else:
            weight, bias = _linear_sums(x, g, power, layer.bias is not None)
        sums[f"{name}.weight"] = weight
        if bias is not None:
            sums[f"{name}.bias"] = bias
    return sums


def class_weighted_power_sums(model: nn.Module, layers: dict[str, nn.Module],
                              logits_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                              weight: Callable[[torch.Tensor], torch.Tensor], power: int) -> dict[str, torch.Tensor]:
    """``Σ_c Σ_n |w(p_nc) ∂ log p_nc / ∂θ|^power`` over the live (finite-logit) classes c.

    One backward pass per class; ``weight`` maps the predicted probabilities of class c
    (detached) to per-sample weights: sqrt(p) with power 2 gives the exact Fisher, p with
    power 1 the absolute Fisher.
    """
    with torch.no_grad():
        logits = logits_fn(x)
        live = torch.isfinite(logits[0])
        probs = torch.softmax(logits, 1)
    total: dict[str, torch.Tensor] = {}
    for c in torch.nonzero(live).flatten().tolist():
        w = weight(probs[:, c])

        def summed(c=c, w=w):
            return (torch.log_softmax(logits_fn(x), 1)[:, c] * w).sum()

        for k, v in per_sample_power_sums(model, layers, summed, power).items():
            total[k] = total[k] + v if k in total else v
    return total
