"""What a ``bitcl rl`` run produced; :meth:`RLResult.to_json` is the results.json contract.

docs/contracts/rl-results.md: ``return_matrix[i][j]`` is the mean evaluation
return on game j after training games 0..i; ``normalised_matrix[i][j] = (R[i][j] - random_j) /
(R[j][j] - random_j)`` (null when game j's trained return is not above the random one: nothing
was learned to normalise by, and a negative denominator would flip the sign; such games are
listed in ``unlearned_games`` and left out of the means); ``score`` the mean of its last row; ``forgetting`` the mean over
j < T-1 of ``max_i normalised[i][j] - normalised[T-1][j]`` (max over every row i).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import bitcl

TIMING_KEYS = ("train_seconds", "steps_per_second", "consolidate_seconds", "eval_seconds")


def normalised_matrix(returns: list[list[float]], random: list[float]) -> list[list[Optional[float]]]:
    out = []
    for row in returns:
        cells = []
        for j, r in enumerate(row):
            learned = returns[j][j] - random[j] if j < len(returns) else None
            cells.append(None if learned is None or learned <= 0 else (r - random[j]) / learned)
        out.append(cells)
    return out


def _mean(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def score(normalised: list[list[Optional[float]]]) -> Optional[float]:
    return _mean(normalised[-1]) if normalised else None


def forgetting(normalised: list[list[Optional[float]]]) -> Optional[float]:
    if len(normalised) < 2:
        return 0.0 if normalised else None
    last = normalised[-1]
    drops = []
    for j in range(len(last) - 1):
        column = [row[j] for row in normalised if row[j] is not None]
        if column and last[j] is not None:
            drops.append(max(column) - last[j])
    return _mean(drops)


def unlearned(returns: list[list[float]], random: list[float], games: list[str]) -> list[str]:
    """Games trained so far whose return right after training is not above the random policy's."""
    return [games[j] for j in range(min(len(returns), len(games))) if returns[j][j] <= random[j]]


@dataclass
class RLResult:
    config: object                      # an RLConfig
    games: list[str]
    random_returns: list[float] = field(default_factory=list)
    return_matrix: list[list[float]] = field(default_factory=list)
    capacity: list[float] = field(default_factory=list)
    timing: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in TIMING_KEYS})
    params: int = 0
    state_bytes: list[int] = field(default_factory=list)
    train_curves: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def normalised(self) -> list[list[Optional[float]]]:
        return normalised_matrix(self.return_matrix, self.random_returns)

    def to_json(self) -> dict:
        norm = self.normalised
        out = {
            "bitcl_version": bitcl.__version__,
            "method": self.config.method,
            "suite": self.config.suite,
            "seed": self.config.seed,
            "config": self.config.to_dict(),
            "games": list(self.games),
            "tasks": len(self.games),
            "return_matrix": self.return_matrix,
            "random_returns": self.random_returns,
            "normalised_matrix": norm,
            "score": score(norm),
            "forgetting": forgetting(norm),
            "unlearned_games": unlearned(self.return_matrix, self.random_returns, self.games),
        }
        if self.capacity:
            out["capacity"] = self.capacity
        out["timing"] = self.timing
        out["memory"] = {"params": self.params, "state_bytes": self.state_bytes}
        out["train_curves"] = self.train_curves
        out.update(self.extra)
        return out

    def progress(self) -> dict:
        """What a checkpoint carries so that ``--resume`` can finish this result."""
        return {"config": self.config.to_dict(), "random_returns": self.random_returns,
                "return_matrix": self.return_matrix, "capacity": self.capacity, "timing": self.timing,
                "state_bytes": self.state_bytes, "train_curves": self.train_curves, "extra": self.extra}

    def restore(self, progress: dict) -> None:
        for key in ("random_returns", "return_matrix", "capacity", "timing", "state_bytes", "train_curves", "extra"):
            if key in progress:
                setattr(self, key, progress[key])

    def format_matrix(self) -> str:
        width = max(len(g) for g in self.games)
        lines = ["return after \\ on  " + "  ".join(f"{g:>{width}}" for g in self.games)]
        for i, row in enumerate(self.return_matrix):
            lines.append(f"{self.games[i]:>{18}}  " + "  ".join(f"{r:>{width}.2f}" for r in row))
        lines.append(f"{'random':>18}  " + "  ".join(f"{r:>{width}.2f}" for r in self.random_returns))
        norm = self.normalised
        sc, fg = score(norm), forgetting(norm)
        lines.append(f"score {sc:.3f}  forgetting {fg:.3f}" if sc is not None and fg is not None
                     else f"score {sc}  forgetting {fg}")
        return "\n".join(lines)
