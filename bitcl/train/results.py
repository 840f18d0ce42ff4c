"""What a run produced: the accuracy matrix, timing and memory; ``to_json`` is results.json.

Metrics (DESIGN.md part 2; ``bitcl.metrics``): ACC, BWT (Lopez-Paz & Ranzato, 2017) and
forgetting (Chaudhry et al., 2018) of the accuracy matrix ``A[i][j]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import bitcl
from bitcl import metrics

TIMING_KEYS = ("train_seconds", "epoch_seconds", "consolidate_seconds", "eval_seconds")


@dataclass
class RunResult:
    """What a run produced; :meth:`to_json` is the results.json contract."""

    config: Any                       # a RunConfig (anything with method, benchmark, scenario, seed, to_dict())
    tasks: int
    accuracy_matrix: list[list[float]] = field(default_factory=list)
    capacity: list[float] = field(default_factory=list)
    capacity_per_layer: list[dict[str, float]] = field(default_factory=list)
    timing: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in TIMING_KEYS})
    params: int = 0
    state_bytes: list[int] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    data_source: dict = field(default_factory=dict)   # what was loaded; recorded inside ``config``

    @property
    def acc(self) -> float:
        return metrics.acc(self.accuracy_matrix)

    @property
    def bwt(self) -> float:
        return metrics.bwt(self.accuracy_matrix)

    @property
    def forgetting(self) -> float:
        return metrics.forgetting(self.accuracy_matrix)

    def add_task_results(self, entries: dict) -> None:
        """Append a strategy's per-task entries (each key holds one list over tasks)."""
        for key, value in entries.items():
            self.extra.setdefault(key, []).append(value)

    def to_json(self) -> dict:
        out = {
            "bitcl_version": bitcl.__version__,
            "method": self.config.method,
            "benchmark": self.config.benchmark,
            "scenario": self.config.scenario,
            "seed": self.config.seed,
            "config": {**self.config.to_dict(), **({"data_source": self.data_source} if self.data_source else {})},
            "tasks": self.tasks,
            "accuracy_matrix": self.accuracy_matrix,
            "acc": self.acc,
            "bwt": self.bwt,
            "forgetting": self.forgetting,
        }
        if self.capacity:
            out["capacity"] = self.capacity
            out["capacity_per_layer"] = self.capacity_per_layer
        out["timing"] = self.timing
        out["memory"] = {"params": self.params, "state_bytes": self.state_bytes}
        out.update(self.extra)
        return out

    def progress(self) -> dict:
        """What a checkpoint carries so that a resumed run can finish this result."""
        return {"accuracy_matrix": self.accuracy_matrix, "capacity": self.capacity,
                "capacity_per_layer": self.capacity_per_layer, "timing": self.timing,
                "state_bytes": self.state_bytes, "extra": self.extra, "data_source": self.data_source}

    def restore(self, progress: dict) -> None:
        """Inverse of :meth:`progress` (the checkpoint's entries were validated by the reader)."""
        for key in ("accuracy_matrix", "capacity", "capacity_per_layer", "timing", "state_bytes", "extra",
                    "data_source"):
            if key in progress:
                setattr(self, key, progress[key])

    def format_matrix(self) -> str:
        t = len(self.accuracy_matrix[0]) if self.accuracy_matrix else 0
        lines = ["after \\ on " + " ".join(f"T{j:<5d}" for j in range(t))]
        for i, row in enumerate(self.accuracy_matrix):
            lines.append(f"task {i:<6d}" + " ".join(f"{a:.4f}" for a in row))
        lines.append(f"ACC {self.acc:.4f}  BWT {self.bwt:+.4f}  forgetting {self.forgetting:.4f}")
        return "\n".join(lines)

    def accuracy_csv(self) -> str:
        rows = [",".join(f"task{j}" for j in range(self.tasks))]
        rows += [",".join(f"{a:.6f}" for a in row) for row in self.accuracy_matrix]
        return "\n".join(rows) + "\n"
