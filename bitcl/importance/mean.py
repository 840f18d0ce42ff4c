"""Per-sample means of a batch-summed measure over a task's training data.

All importance measures in bitcl are means over samples (so their scale does not
depend on batch size or sample count). Under ``torchrun`` each rank sums its
share and the sums are all-reduced before dividing by the global count, so every
rank holds the same result.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch


def task_mean(ctx, samples: int, batch_size: int, purpose: str,
              batch_sums: Callable[..., dict[str, torch.Tensor]],
              names: Iterable[str]) -> dict[str, torch.Tensor]:
    """``{name: mean over samples}`` of ``batch_sums(x, y, u)`` for ``names``, over the batches of the
    task context ``ctx`` (a ``TaskContext``), with the model in eval mode (``u``: one uniform number
    per sample, for label sampling)."""
    model = ctx.model
    batches, count = ctx.importance_batches(samples, batch_size, purpose)
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    try:
        with torch.enable_grad():
            for x, y, u in batches:
                if len(x) == 0:  # this rank's share of a short last batch; a sum needs nothing from it
                    continue
                for key, value in batch_sums(x, y, u).items():
                    sums[key] = sums[key] + value if key in sums else value
    finally:
        model.train(was_training)
    params = dict(model.named_parameters())
    out = {}
    for name in names:
        total = sums.get(name)
        if total is None:  # no sample reached this parameter
            total = torch.zeros_like(params[name])
        out[name] = ctx.world.all_reduce_(total.detach().clone()) / max(count, 1)
    return out
