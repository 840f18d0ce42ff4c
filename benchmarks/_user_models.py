"""Issue 22's protocol, shared by search_fit_defaults.py and bench_user_model.py: BLIP on a user's
own model through ``bitcl.quantize_`` + ``bitcl.fit`` at their defaults.

Tasks are pairs of MNIST digits from data/mnist15k.npz (0/1, 2/3, ...), labels 0/1 within each
task, one 2-way head per task, 1 epoch. Two user models: the issue's conv net
``Conv2d(1,8,3) -> ReLU -> Flatten -> Linear(5408,64) -> ReLU`` and an MLP ``784-256-256``.
``split="validation"`` trains on 80 % of each digit's training images and evaluates on the other
20 % (seeded, never the test split); ``split="test"`` trains on all training images and evaluates
on the test split.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

import bitcl
from bitcl.api import NotLearnedWarning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "data", "mnist15k.npz")
VALIDATION_FRACTION = 0.2
VALIDATION_SEED = 0


def conv_net() -> tuple[nn.Module, int]:
    """Issue 22's model and its feature width."""
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5408, 64), nn.ReLU()), 64


def mlp() -> tuple[nn.Module, int]:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU()), 256


MODELS: dict[str, Callable[[], tuple[nn.Module, int]]] = {"conv": conv_net, "mlp": mlp}


def digit_pair_tasks(pairs: int, split: str, path: str = DATA) -> list[tuple[TensorDataset, TensorDataset]]:
    """``pairs`` tasks of two digits each, labels 0/1; ``split`` "validation" or "test" (module docstring)."""
    with np.load(path) as f:
        x = torch.tensor(f["x"], dtype=torch.float32).div(255).unsqueeze(1)
        y, train = torch.tensor(f["y"]).long(), torch.tensor(f["train"])
    fit_mask, eval_mask = train.clone(), ~train
    if split == "validation":
        generator = torch.Generator().manual_seed(VALIDATION_SEED)
        eval_mask = torch.zeros_like(train)
        for digit in range(10):
            idx = torch.nonzero(train & (y == digit)).flatten()
            held = idx[torch.randperm(len(idx), generator=generator)[:round(VALIDATION_FRACTION * len(idx))]]
            eval_mask[held] = True
        fit_mask = train & ~eval_mask
    elif split != "test":
        raise ValueError(f"split must be 'validation' or 'test', got {split!r}")
    tasks = []
    for a in range(0, 2 * pairs, 2):
        b = a + 1
        tasks.append(tuple(TensorDataset(x[m & ((y == a) | (y == b))], (y[m & ((y == a) | (y == b))] == b).long())
                           for m in (fit_mask, eval_mask)))
    return tasks


def run(model_name: str, tasks, method: str, seed: int, quantize: Optional[bitcl.BitConfig] = None,
        options: Optional[dict] = None) -> list[list[float]]:
    """One ``fit`` at its defaults but for ``quantize`` / ``options``; the accuracy matrix."""
    torch.manual_seed(seed)
    model, features = MODELS[model_name]()
    bitcl.quantize_(model, quantize)
    heads = [nn.Linear(features, 2) for _ in tasks]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotLearnedWarning)
        result = bitcl.fit(model, tasks, method, heads=heads, options=options, seed=seed)
    return [list(map(float, row)) for row in result.accuracy_matrix]


def figures(matrix: list[list[float]]) -> dict:
    """ACC (mean of the last row), BWT and each task's final accuracy."""
    last, n = matrix[-1], len(matrix)
    bwt = sum(last[j] - matrix[j][j] for j in range(n - 1)) / (n - 1) if n > 1 else 0.0
    return {"acc": sum(last) / n, "bwt": bwt, "final": last, "matrix": matrix}
