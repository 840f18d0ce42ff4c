"""Per-step importance along the training trajectory: SI, SIU, SIB and SOS.

* SI (Zenke, Poole & Ganguli, "Continual Learning Through Synaptic
  Intelligence", ICML 2017): ω += −g·Δθ at every step (g the minibatch gradient
  used for the step, Δθ the actual update, after the bit projection); at task end
  Ω += max(0, ω / (Δ² + ξ)) with Δ the parameter change over the task.
* SIU (Benzing, AISTATS 2022, arXiv 2006.06357): the same with g' taken on an
  independent minibatch at the same parameters, which removes the bias that
  links SI to sqrt(Fisher).
* SIB: the bias alone, ω_SI − ω_SIU = −(g − g')·Δθ.
* SOS: v ← 0.999 v + 0.001 (g − α g')², Ω += sqrt(v̂) at task end (v̂ bias-corrected
  as in Adam, since a task may have fewer than 1,000 steps); α = 1 estimates the
  gradient noise, i.e. the Fisher, whatever the batch size.

Each measure is a small class (:data:`MEASURES`): which gradient drives the path
integral, and whether it needs an independent minibatch.
"""
from __future__ import annotations

from typing import Optional

import torch


class _PathMeasure:
    """ω -= gradient · Δθ each step; Ω = max(0, ω / (Δ² + ξ)) at the end of the task."""

    needs_independent_gradient = False

    def gradient(self, g: torch.Tensor, independent: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class _SI(_PathMeasure):
    def gradient(self, g, independent):
        return g


class _SIU(_PathMeasure):
    needs_independent_gradient = True

    def gradient(self, g, independent):
        return independent


class _SIB(_PathMeasure):
    needs_independent_gradient = True

    def gradient(self, g, independent):
        return g - independent


class _SOS:
    """A running mean of squared gradient noise, not a path integral."""
    needs_independent_gradient = True


MEASURES = {"si": _SI, "siu": _SIU, "sib": _SIB, "sos": _SOS}
KINDS = tuple(MEASURES)


class PathIntegral:
    """Tracks one of :data:`KINDS` over the steps of a task, for the given parameters."""

    def __init__(self, params: dict[str, torch.nn.Parameter], kind: str, xi: float = 0.1, alpha: float = 1.0,
                 decay: float = 0.999):
        if kind not in MEASURES:
            raise ValueError(f"unknown path-integral kind {kind!r}; choose from {', '.join(KINDS)}")
        self.params, self.kind, self.xi, self.alpha, self.decay = params, kind, xi, alpha, decay
        self.measure = MEASURES[kind]()
        self.is_sos = isinstance(self.measure, _SOS)
        self.needs_independent_gradient = self.measure.needs_independent_gradient and not (
            self.is_sos and alpha == 0)

    def start_task(self) -> None:
        self.start = {n: p.detach().clone() for n, p in self.params.items()}
        self.omega = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.steps = 0

    def before_step(self, independent: Optional[dict[str, torch.Tensor]] = None) -> None:
        """Gradients of the step are in ``.grad``; ``independent`` holds g' when needed."""
        self.prev = {n: p.detach().clone() for n, p in self.params.items()}
        self.grad = {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
                     for n, p in self.params.items()}
        self.independent = independent
        if self.is_sos:
            for n, g in self.grad.items():
                noise = g - self.alpha * independent[n] if self.alpha != 0 else g
                self.omega[n].mul_(self.decay).add_(noise.pow(2), alpha=1 - self.decay)

    def after_step(self) -> None:
        self.steps += 1
        if self.is_sos:
            return
        for n, p in self.params.items():
            independent = self.independent[n] if self.independent is not None else None
            self.omega[n].sub_(self.measure.gradient(self.grad[n], independent) * (p.detach() - self.prev[n]))

    def importance(self) -> dict[str, torch.Tensor]:
        """This task's Ω contribution."""
        if self.is_sos:
            correction = 1 - self.decay ** max(self.steps, 1)
            return {n: (v / correction).sqrt() for n, v in self.omega.items()}
        out = {}
        for n, p in self.params.items():
            delta = p.detach() - self.start[n]
            out[n] = torch.clamp(self.omega[n] / (delta.pow(2) + self.xi), min=0)
        return out
