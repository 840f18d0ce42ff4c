"""Timing helpers for benchmarks: interleaved repeats, medians, ratios in one process."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def median_seconds(fn: Callable[[], object], repeats: int = 7, inner: int = 20, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def paired_ratio(candidate: Callable[[], object], baseline: Callable[[], object], rounds: int = 7,
                 inner: int = 20) -> tuple[float, float, float]:
    """Median of per-round ratios, candidate over baseline, timed alternately so drift cancels."""
    for _ in range(3):
        candidate()
        baseline()
    ratios, c_times, b_times = [], [], []
    for _ in range(rounds):
        b = median_seconds(baseline, repeats=1, inner=inner, warmup=0)
        c = median_seconds(candidate, repeats=1, inner=inner, warmup=0)
        ratios.append(c / b)
        c_times.append(c)
        b_times.append(b)
    return statistics.median(ratios), statistics.median(c_times), statistics.median(b_times)


def write_json(name: str, payload: dict) -> str:
    """benchmarks/results/<name> with the environment (CPU, threads, torch, git commit) added."""
    from _env import write_result
    return write_result(name[:-5] if name.endswith(".json") else name, payload)
