"""Per-sample means of a batch-summed measure over a task's training data.

All importance measures in bitcl are means over samples (so their scale does not
depend on batch size or sample count). Under ``torchrun`` each rank sums its
share and the sums are all-reduced before dividing by the global count, so every
rank holds the same result.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch


def task_mean(engine, task, samples: int, batch_size: int, purpose: str,
              batch_sums: Callable[..., dict[str, torch.Tensor]],
              names: Iterable[str]) -> dict[str, torch.Tensor]:
    """``{name: mean over samples}`` of ``batch_sums(x, y, u)`` for ``names``, with the model in eval
    mode (``u``: one uniform number per sample, for label sampling)."""
    model = engine.model
    batches, count = engine.importance_batches(task, samples, batch_size, purpose)
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    with torch.enable_grad():
        for x, y, u in batches:
            for key, value in batch_sums(x, y, u).items():
                sums[key] = sums[key] + value if key in sums else value
    model.train(was_training)
    params = dict(model.named_parameters())
    out = {}
    for name in names:
        total = sums.get(name)
        if total is None:  # no sample reached this parameter
            total = torch.zeros_like(params[name])
        out[name] = engine.dist.all_reduce_(total.detach().clone()) / count
    return out
