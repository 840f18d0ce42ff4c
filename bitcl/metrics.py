"""Continual-learning metrics, as defined in docs/contracts/results.md and never changed silently.

With ``A[i][j]`` the accuracy on task j's test split after training tasks 0..i
(T tasks):

* ``acc`` = mean_j A[T-1][j]  (final average accuracy);
* ``bwt`` = mean_{j<T-1} (A[T-1][j] - A[j][j])  (backward transfer, Lopez-Paz &
  Ranzato, GEM, NeurIPS 2017);
* ``forgetting`` = mean_{j<T-1} (max_{j<=i<T-1} A[i][j] - A[T-1][j])
  (Chaudhry et al., RWalk, ECCV 2018).

BWT and forgetting are 0 for a single task.
"""
from __future__ import annotations

from typing import Sequence


def acc(matrix: Sequence[Sequence[float]]) -> float:
    last = matrix[-1]
    return sum(last) / len(last)


def bwt(matrix: Sequence[Sequence[float]]) -> float:
    t = len(matrix)
    if t < 2:
        return 0.0
    return sum(matrix[t - 1][j] - matrix[j][j] for j in range(t - 1)) / (t - 1)


def forgetting(matrix: Sequence[Sequence[float]]) -> float:
    t = len(matrix)
    if t < 2:
        return 0.0
    return sum(max(matrix[i][j] for i in range(j, t - 1)) - matrix[t - 1][j] for j in range(t - 1)) / (t - 1)
