"""What a run produced: the accuracy matrix, timing and memory; ``to_json`` is results.json.

Metrics (docs/contracts/results.md; ``bitcl.metrics``): ACC, BWT (Lopez-Paz & Ranzato, 2017) and
forgetting (Chaudhry et al., 2018) of the accuracy matrix ``A[i][j]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from torch import nn

import bitcl
from bitcl import metrics
from bitcl.quant import bit_states
from bitcl.train import learned
from bitcl.versions import code_digest

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
    chance: list[float] = field(default_factory=list)    # per task: 1 / classes its prediction chooses among
    test_samples: list[int] = field(default_factory=list)  # per task: size of its test split

    @property
    def acc(self) -> float:
        return metrics.acc(self.accuracy_matrix)

    @property
    def bwt(self) -> float:
        return metrics.bwt(self.accuracy_matrix)

    @property
    def forgetting(self) -> float:
        return metrics.forgetting(self.accuracy_matrix)

    # -- one task's entries, in the order a loop produces them ----------------------------------
    def record_training(self, seconds: float, hook_seconds: float, epoch_seconds: list[float]) -> None:
        """Task training took ``seconds``, ``hook_seconds`` of them in the strategy's per-step hooks."""
        self.timing["train_seconds"].append(seconds)
        self.timing.setdefault("step_hook_seconds", []).append(hook_seconds)
        self.timing["epoch_seconds"].append(sum(epoch_seconds) / len(epoch_seconds) if epoch_seconds else 0.0)

    def record_consolidation(self, seconds: float) -> None:
        """Consolidation (``end_task``) took ``seconds``; also records the importance work (per-step
        hooks + consolidation) relative to the task's training time."""
        timing = self.timing
        timing["consolidate_seconds"].append(seconds)
        timing.setdefault("importance_fraction", []).append(
            (timing["step_hook_seconds"][-1] + seconds) / max(timing["train_seconds"][-1], 1e-9))

    def record_evaluation(self, row: list[float], seconds: float, capacity: Optional[tuple[float, dict[str, float]]],
                          state_bytes: int, task_results: dict) -> None:
        """The accuracy row after a task (evaluated in ``seconds``), the capacity (None: no Bit
        layers), the strategy's kept bytes and its per-task entries."""
        self.timing["eval_seconds"].append(seconds)
        self.accuracy_matrix.append(row)
        if capacity is not None:
            self.capacity.append(capacity[0])
            self.capacity_per_layer.append(capacity[1])
        self.state_bytes.append(state_bytes)
        self.add_task_results(task_results)

    def set_task_facts(self, chance: list[float], test_samples: list[int]) -> None:
        """Chance level and test-split size of every task (for :attr:`not_learned`)."""
        self.chance, self.test_samples = [float(c) for c in chance], [int(n) for n in test_samples]

    @property
    def not_learned(self) -> list[dict]:
        """Tasks whose accuracy after their own training is confidently at or below chance + margin
        (:mod:`bitcl.train.learned`), with the reason; empty when the task facts are unknown."""
        return learned.check_learned(self.accuracy_matrix, self.chance, self.test_samples, self.capacity,
                                     self.extra.get("range_left", []))

    def warnings(self) -> list[str]:
        return learned.warning_lines(self.not_learned)

    def task_line(self) -> str:
        """The log line of the task just recorded."""
        t, row, timing = len(self.accuracy_matrix) - 1, self.accuracy_matrix[-1], self.timing
        cap = f", capacity {self.capacity[-1]:.3f}" if self.capacity else ""
        return (f"task {t + 1}/{self.tasks}: acc on task {t} {row[t]:.4f}, mean over seen "
                f"{sum(row[:t + 1]) / (t + 1):.4f}, train {timing['train_seconds'][-1]:.1f}s, "
                f"consolidate {timing['consolidate_seconds'][-1]:.2f}s{cap}")

    def add_task_results(self, entries: dict) -> None:
        """Append a strategy's per-task entries (each key holds one list over tasks)."""
        for key, value in entries.items():
            self.extra.setdefault(key, []).append(value)

    def to_json(self) -> dict:
        out = {
            "bitcl_version": bitcl.__version__,
            "code_digest": code_digest(),
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
        if self.chance:
            out["learned_check"] = {"rule": learned.RULE, "margin": learned.MARGIN, "confidence": learned.CONFIDENCE,
                                    "chance": self.chance, "test_samples": self.test_samples}
            out["not_learned"] = self.not_learned
        return out

    def progress(self) -> dict:
        """What a checkpoint carries so that a resumed run can finish this result."""
        return {"accuracy_matrix": self.accuracy_matrix, "capacity": self.capacity,
                "capacity_per_layer": self.capacity_per_layer, "timing": self.timing,
                "state_bytes": self.state_bytes, "extra": self.extra, "data_source": self.data_source,
                "chance": self.chance, "test_samples": self.test_samples}

    def restore(self, progress: dict) -> None:
        """Inverse of :meth:`progress` (the checkpoint's entries were validated by the reader)."""
        for key in ("accuracy_matrix", "capacity", "capacity_per_layer", "timing", "state_bytes", "extra",
                    "data_source"):
            if key in progress:
                setattr(self, key, progress[key])
        chance, samples = progress.get("chance"), progress.get("test_samples")
        numbers = lambda v: isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                        for x in v)
        if numbers(chance) and numbers(samples) and len(chance) == len(samples) and chance:
            self.set_task_facts(chance, samples)  # fit learns them while evaluating; the engine knows them

    def format_matrix(self) -> str:
        t = len(self.accuracy_matrix[0]) if self.accuracy_matrix else 0
        lines = ["after \\ on " + " ".join(f"T{j:<5d}" for j in range(t))]
        for i, row in enumerate(self.accuracy_matrix):
            lines.append(f"task {i:<6d}" + " ".join(f"{a:.4f}" for a in row))
        lines.append(f"ACC {self.acc:.4f}  BWT {self.bwt:+.4f}  forgetting {self.forgetting:.4f}")
        lines += self.warnings()
        return "\n".join(lines)

    def matrix_csv(self) -> tuple[str, str]:
        """The run directory's CSV of the matrix: its file name and text."""
        return "accuracy_matrix.csv", self.accuracy_csv()

    def accuracy_csv(self) -> str:
        rows = [",".join(f"task{j}" for j in range(self.tasks))]
        rows += [",".join(f"{a:.6f}" for a in row) for row in self.accuracy_matrix]
        return "\n".join(rows) + "\n"


def bit_capacity(model: nn.Module) -> Optional[tuple[float, dict[str, float]]]:
    """Fraction of all bits of all quantised weights that are frozen (``capacity`` in docs/contracts/results.md),
    overall and per tensor; None for a model without Bit layers."""
    per_tensor, frozen, total = {}, 0, 0
    for name, state in bit_states(model):
        f, n = state.frozen_bits(), state.total_bits()
        per_tensor[name] = f / n
        frozen, total = frozen + f, total + n
    if not per_tensor:
        return None
    return frozen / total, per_tensor
