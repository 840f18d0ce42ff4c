"""What a ``bitcl rl`` run produced; :meth:`RLResult.to_json` is the results.json contract.

DESIGN.md part 2, "results.json of bitcl rl": ``return_matrix[i][j]`` is the mean evaluation
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
    """What a ``bitcl rl`` run produced; :class:`~bitcl.train.runner.ContinualRun` records into it."""

    config: object                      # an RLConfig
    games: list[str]
    random_returns: list[float] = field(default_factory=list)
    return_matrix: list[list[float]] = field(default_factory=list)
    capacity: list[float] = field(default_factory=list)
    timing: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in TIMING_KEYS})
    params: int = 0
    state_bytes: list[int] = field(default_factory=list)
    train_curves: list[dict] = field(default_factory=list)
    steps_trained: list[int] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def normalised(self) -> list[list[Optional[float]]]:
        return normalised_matrix(self.return_matrix, self.random_returns)

    # -- one game's entries, in the order the runner produces them ---------------------------------
    def record_training(self, seconds: float, hook_seconds: float, steps: int) -> None:
        """The game trained ``steps`` environment steps in ``seconds`` (the per-step hooks' share,
        ``hook_seconds``, is not part of this contract)."""
        self.steps_trained.append(steps)
        self.timing["train_seconds"].append(seconds)
        self.timing["steps_per_second"].append(steps / max(seconds, 1e-9))

    def record_consolidation(self, seconds: float) -> None:
        self.timing["consolidate_seconds"].append(seconds)

    def record_evaluation(self, row: list[float], seconds: float, capacity, state_bytes: int,
                          task_results: dict) -> None:
        """Every game's mean return after this game (evaluated in ``seconds``), the fraction of
        frozen bits (``capacity``: ``(overall, per layer)``, None without Bit layers), the
        method's kept bytes and its per-game entries."""
        self.timing["eval_seconds"].append(seconds)
        self.return_matrix.append(row)
        if capacity is not None:
            self.capacity.append(capacity[0])
        self.state_bytes.append(state_bytes)
        for key, value in task_results.items():
            self.extra.setdefault(key, []).append(value)

    def task_line(self) -> str:
        """The log line of the game just recorded."""
        t, row, timing = len(self.return_matrix) - 1, self.return_matrix[-1], self.timing
        cap = f", capacity {self.capacity[-1]:.3f}" if self.capacity else ""
        return (f"game {t + 1}/{len(self.games)} {self.games[t]}: return {row[t]:.2f} "
                f"(random {self.random_returns[t]:.2f}), mean over seen {sum(row[:t + 1]) / (t + 1):.2f}, "
                f"{self.steps_trained[-1]:,} steps at {timing['steps_per_second'][-1]:.0f} steps/s, "
                f"consolidate {timing['consolidate_seconds'][-1]:.2f}s{cap}")

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
            # config.steps is what was asked for; each game trains whole rollouts (envs x rollout)
            "steps_trained": self.steps_trained,
        }
        if self.capacity:
            out["capacity"] = self.capacity
        out["timing"] = self.timing
        out["memory"] = {"params": self.params, "state_bytes": self.state_bytes}
        out["train_curves"] = self.train_curves
        out.update(self.extra)
        return out

    def matrix_csv(self) -> tuple[str, str]:
        """The run directory's CSV of the return matrix: its file name and text."""
        rows = [",".join(self.games)]
        rows += [",".join(f"{r:.6f}" for r in row) for row in self.return_matrix]
        return "return_matrix.csv", "\n".join(rows) + "\n"

    PROGRESS_KEYS = ("random_returns", "return_matrix", "capacity", "timing", "state_bytes", "train_curves",
                     "steps_trained", "extra")

    def progress(self) -> dict:
        """What a checkpoint carries (as its progress's ``result``) so that ``--resume`` can finish this result."""
        return {key: getattr(self, key) for key in self.PROGRESS_KEYS}

    def restore(self, progress: dict) -> None:
        """Inverse of :meth:`progress`. A checkpoint written before ``steps_trained`` was recorded
        gets it from its training curves (whose last point is each game's trained steps)."""
        for key in self.PROGRESS_KEYS:
            if key in progress:
                setattr(self, key, progress[key])
        if "steps_trained" not in progress:
            self.steps_trained = [curve["steps"][-1] for curve in self.train_curves if curve.get("steps")]

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
