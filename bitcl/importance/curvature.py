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

Each form is one small :class:`Curvature` subclass in the :data:`CURVATURES` registry (its
state, per-task estimate, accumulation over tasks and quadratic form ½ δᵀAδ's δᵀAδ), so a
new form is one class; DLCFT's ``--curvature`` choices are the registry's names.
"""
from __future__ import annotations

from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import jacrev, vmap

from bitcl.errors import ConfigError

from .per_sample import Capture, per_sample_power_sums


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


def _input_rows(layer: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(a, T)``: the layer's inputs, one row per sample (linear) or per sample and spatial position
    (conv, KFC: the im2col patches), and the positions per sample."""
    if isinstance(layer, nn.Conv2d):
        patches = F.unfold(inputs, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # (n, D, T)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1]), patches.shape[-1]
    return inputs.flatten(1), 1


def _grad_rows(layer: nn.Module, grad: torch.Tensor) -> torch.Tensor:
    """The gradients at the layer's outputs, in the rows of :func:`_input_rows`."""
    if isinstance(layer, nn.Conv2d):
        return grad.flatten(2).transpose(1, 2).reshape(-1, grad.shape[1])
    return grad


def kfac_sums(model: nn.Module, layers: dict[str, nn.Module], logits: Callable, x: torch.Tensor,
              outputs: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per linear or conv layer, the batch sums (Σ_n Σ_o Σ_t g gᵀ, Σ_n (1/T) Σ_t a aᵀ) (bias folded
    into a; T = 1 for linear layers, the output positions for conv layers: KFC).

    One forward (the model is in eval mode, so every output's backward sees the same activations),
    then a backward per output; the input factor depends on the inputs only and is made once."""
    with Capture(layers) as cap:
        values = logits(x)
    names = [n for n in layers if n in cap.outputs]
    for name in names:
        if not kfac_supported(layers[name]):
            raise NotImplementedError(f"{name}: K-FAC curvature needs a linear or an ungrouped, "
                                      "zero-padded conv layer")
    grad_sums: dict[str, torch.Tensor] = {}
    for o in range(outputs):
        grads = torch.autograd.grad(values[:, o].sum(), [cap.outputs[n] for n in names], allow_unused=True,
                                    retain_graph=o < outputs - 1)
        for name, g in zip(names, grads):
            g = _grad_rows(layers[name], torch.zeros_like(cap.outputs[name]) if g is None else g)
            gg = g.t() @ g
            if name in grad_sums:
                grad_sums[name] += gg
            else:
                grad_sums[name] = gg
    out = {}
    for name, gg in grad_sums.items():
        a, positions = _input_rows(layers[name], cap.inputs[name])
        if layers[name].bias is not None:
            a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype, device=a.device)], 1)
        out[name] = (gg, a.t() @ a / positions)
    return out


# -- one class per curvature form ---------------------------------------------------------------

Tensors = dict[str, torch.Tensor]


class Curvature:
    """One form of the past tasks' curvature A (DLCFT, Sec. 3), kept in a strategy's ``state``.

    ``names``: the linearised parameters, in order; ``params``: them by name; ``layers``: their
    owning modules. The state keys a form writes are part of the checkpoint format: never rename
    them (runs saved before must resume).
    """
    name: ClassVar[str]
    prefix: ClassVar[str]  # every state key of this form starts with it

    def __init__(self, names: list[str], params: Tensors, layers: dict[str, nn.Module]):
        self.names, self.params, self.layers = names, params, layers

    def setup(self, state: Tensors, device: torch.device, linearised: str) -> None:
        """Check the form covers the parameters (ConfigError naming ``linearised``, the flag that
        chose them) and put its zero state into ``state``."""

    def batch_sums(self, model: nn.Module, forward: Callable, logits: Callable, x: torch.Tensor,
                   outputs: int) -> dict:
        """This batch's unnormalised sums (tensors or tuples of tensors), keyed as :meth:`reduce` reads."""
        raise NotImplementedError

    def reduce(self, sums: dict, world, count: int) -> dict:
        """All-reduce the sums over ranks and scale them by the ``count`` samples: this task's part of A."""
        raise NotImplementedError

    def estimate(self, batches, model: nn.Module, forward: Callable, logits: Callable, outputs: int,
                 world, count: int) -> dict:
        """This task's A = (2/N) Σ_n J_nᵀ J_n over ``batches`` of ``(x, ...)``, in this form; Jacobians
        are taken at the model's present parameters (the caller puts θ0 there)."""
        sums: dict = {}
        for x, *_ in batches:
            for k, v in self.batch_sums(model, forward, logits, x, outputs).items():
                sums[k] = _add(sums[k], v) if k in sums else v
        return self.reduce(sums, world, count)

    def accumulate(self, state: Tensors, part: dict, task: int) -> None:
        """Add task ``task``'s part (from :meth:`estimate`) to the accumulated curvature in ``state``."""
        raise NotImplementedError

    def quadratic(self, state: Tensors, delta: Tensors, tasks: int) -> torch.Tensor:
        """δᵀ A δ for δ = θ − θ* (``delta`` by parameter name), A accumulated over ``tasks`` tasks."""
        raise NotImplementedError

    def keys(self, state: Tensors) -> list[str]:
        """The state keys that hold this form's curvature."""
        return [k for k in state if k.startswith(self.prefix)]


def _add(a, b):
    return tuple(x + y for x, y in zip(a, b)) if isinstance(a, tuple) else a + b


CURVATURES: dict[str, type[Curvature]] = {}


def register_curvature(cls: type[Curvature]) -> type[Curvature]:
    """Class decorator: make ``cls`` a ``--curvature`` choice under ``cls.name``."""
    CURVATURES[cls.name] = cls
    return cls


EXACT_LIMIT = 10000  # linearised parameters: A is then a 10,000² float32 matrix (400 MB)


@register_curvature
class ExactCurvature(Curvature):
    """The full P×P matrix A, summed over tasks (state ``curvature``)."""
    name, prefix = "exact", "curvature"

    def setup(self, state, device, linearised):
        size = sum(self.params[n].numel() for n in self.names)
        if size > EXACT_LIMIT:
            raise ConfigError(f"exact curvature for {size:,} linearised parameters needs a {size}x{size} "
                              "matrix: use --curvature kfac or diagonal, or fewer --layers")
        state["curvature"] = torch.zeros(size, size, device=device)

    def batch_sums(self, model, forward, logits, x, outputs):
        theta0 = {k: v.detach() for k, v in model.named_parameters()}
        return {"curvature": exact_sum(model, self.names, theta0, forward, x, outputs)}

    def reduce(self, sums, world, count):
        size = sum(self.params[n].numel() for n in self.names)
        total = sums.get("curvature", torch.zeros(size, size, device=self.params[self.names[0]].device))
        return {"curvature": world.all_reduce_(total) * (2.0 / count)}

    def accumulate(self, state, part, task):
        state["curvature"] = state["curvature"] + part["curvature"]

    def quadratic(self, state, delta, tasks):
        flat = torch.cat([delta[n].flatten() for n in self.names])
        return flat @ (state["curvature"] @ flat)


@register_curvature
class KfacCurvature(Curvature):
    """Per layer and task, the factors G and S of A ≈ 2 G ⊗ S (K-FAC; KFC for conv layers), kept per
    task because a sum of Kronecker products is not one (state ``kfac/<task>/<layer>/G`` and ``/S``)."""
    name, prefix = "kfac", "kfac/"

    def setup(self, state, device, linearised):
        unsupported = sorted(n for n, m in self.layers.items() if isinstance(m, nn.Conv2d) and not kfac_supported(m))
        if unsupported:
            raise ConfigError(f"--curvature kfac covers linear and ungrouped, zero-padded conv layers, and "
                              f"{linearised} linearises {', '.join(unsupported[:3])}: use fewer --layers, or "
                              "--curvature diagonal or exact")

    def batch_sums(self, model, forward, logits, x, outputs):
        return kfac_sums(model, self.layers, logits, x, outputs)

    def reduce(self, sums, world, count):
        # A ≈ 2 Ḡ ⊗ S̄ with Ḡ = ΣΣ ggᵀ / N and S̄ = Σ aaᵀ / N
        return {k: (world.all_reduce_(g) * (2.0 / count), world.all_reduce_(s) / count)
                for k, (g, s) in sums.items()}

    def accumulate(self, state, part, task):
        for layer, (g, s) in part.items():
            state[f"kfac/{task}/{layer}/G"] = g
            state[f"kfac/{task}/{layer}/S"] = s

    def quadratic(self, state, delta, tasks):
        quad = 0.0
        for t in range(tasks):
            for layer, module in self.layers.items():
                key = f"kfac/{t}/{layer}"
                if f"{key}/G" not in state:
                    continue
                dw = delta[f"{layer}.weight"].flatten(1)  # conv: (out, in * kh * kw), as KFC's factors
                if module.bias is not None:
                    dw = torch.cat([dw, delta[f"{layer}.bias"].unsqueeze(1)], 1)
                quad = quad + (state[f"{key}/G"] * (dw @ state[f"{key}/S"] @ dw.t())).sum()
        return quad


@register_curvature
class DiagonalCurvature(Curvature):
    """diag(A) per parameter, summed over tasks (state ``diag/<parameter>``)."""
    name, prefix = "diagonal", "diag/"

    def setup(self, state, device, linearised):
        for n in self.names:
            state[f"diag/{n}"] = torch.zeros_like(self.params[n].detach())

    def batch_sums(self, model, forward, logits, x, outputs):
        return diagonal_sum(model, self.layers, logits, x, outputs)

    def reduce(self, sums, world, count):
        return {n: world.all_reduce_(sums.get(n, torch.zeros_like(self.params[n]))) * (2.0 / count)
                for n in self.names}

    def accumulate(self, state, part, task):
        for n in self.names:
            state[f"diag/{n}"] = state[f"diag/{n}"] + part[n]

    def quadratic(self, state, delta, tasks):
        return sum((state[f"diag/{n}"] * delta[n].pow(2)).sum() for n in self.names)
