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

Each measure is a small class in the :data:`MEASURES` registry that owns its per-step update
and its end-of-task importance (as DLCFT's curvature forms in ``bitcl.importance.curvature``);
:class:`PathIntegral` keeps what every measure shares (the parameters, the step's gradients and
update, the step count) and delegates the rest, so no method tests which measure it runs.
"""
from __future__ import annotations

from typing import ClassVar, Optional

import torch

Tensors = dict[str, torch.Tensor]


class Measure:
    """One importance measure tracked over a task's steps (state: ``tracker.omega``)."""

    name: ClassVar[str] = ""
    uses_independent_gradient: ClassVar[bool] = False

    def needs_independent_gradient(self, tracker: "PathIntegral") -> bool:
        """Whether the step needs g' from an independent minibatch."""
        return self.uses_independent_gradient

    def before_step(self, tracker: "PathIntegral") -> None:
        """The step's gradients (``tracker.grad``, ``tracker.independent``) are known; nothing moved yet."""

    def after_step(self, tracker: "PathIntegral") -> None:
        """The parameters have moved from ``tracker.prev``."""

    def importance(self, tracker: "PathIntegral") -> Tensors:
        """This task's Ω contribution."""
        raise NotImplementedError


class PathMeasure(Measure):
    """ω -= gradient · Δθ each step; Ω = max(0, ω / (Δ² + ξ)) at the end of the task."""

    def gradient(self, g: torch.Tensor, independent: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, tracker):
        for n, p in tracker.params.items():
            independent = tracker.independent[n] if tracker.independent is not None else None
            tracker.omega[n].sub_(self.gradient(tracker.grad[n], independent) * (p.detach() - tracker.prev[n]))

    def importance(self, tracker):
        out = {}
        for n, p in tracker.params.items():
            delta = p.detach() - tracker.start[n]
            out[n] = torch.clamp(tracker.omega[n] / (delta.pow(2) + tracker.xi), min=0)
        return out


class SI(PathMeasure):
    """SI: the minibatch gradient of the step itself."""

    name = "si"

    def gradient(self, g, independent):
        return g


class SIU(PathMeasure):
    """SIU: the gradient g' of an independent minibatch (unbiased)."""

    name = "siu"
    uses_independent_gradient = True

    def gradient(self, g, independent):
        return independent


class SIB(PathMeasure):
    """SIB: SI's bias alone, g - g'."""

    name = "sib"
    uses_independent_gradient = True

    def gradient(self, g, independent):
        return g - independent


class SOS(Measure):
    """SOS: a running mean of squared gradient noise (g − α g')², not a path integral; Ω = sqrt(v̂)."""

    name = "sos"
    uses_independent_gradient = True

    def needs_independent_gradient(self, tracker):
        return tracker.alpha != 0  # α = 0: the raw squared gradient, g' unused

    def before_step(self, tracker):
        for n, g in tracker.grad.items():
            noise = g - tracker.alpha * tracker.independent[n] if tracker.alpha != 0 else g
            tracker.omega[n].mul_(tracker.decay).add_(noise.pow(2), alpha=1 - tracker.decay)

    def importance(self, tracker):
        correction = 1 - tracker.decay ** max(tracker.steps, 1)
        return {n: (v / correction).sqrt() for n, v in tracker.omega.items()}


MEASURES: dict[str, type[Measure]] = {m.name: m for m in (SI, SIU, SIB, SOS)}
KINDS = tuple(MEASURES)


class PathIntegral:
    """Tracks one of :data:`KINDS` over the steps of a task, for the given parameters."""

    def __init__(self, params: dict[str, torch.nn.Parameter], kind: str, xi: float = 0.1, alpha: float = 1.0,
                 decay: float = 0.999):
        if kind not in MEASURES:
            raise ValueError(f"unknown path-integral kind {kind!r}; choose from {', '.join(KINDS)}")
        self.params, self.kind, self.xi, self.alpha, self.decay = params, kind, xi, alpha, decay
        self.measure = MEASURES[kind]()
        self.needs_independent_gradient = self.measure.needs_independent_gradient(self)

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
        self.measure.before_step(self)

    def after_step(self) -> None:
        self.steps += 1
        self.measure.after_step(self)

    def importance(self) -> dict[str, torch.Tensor]:
        """This task's Ω contribution."""
        return self.measure.importance(self)
