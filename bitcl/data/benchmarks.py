"""Named benchmarks: which scenario builder, and its default number of tasks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from bitcl.errors import ConfigError, DataError

from .scenarios import Scenario, data_incremental_scenario, permuted_scenario, split_scenario
from .sources import ArrayData


@dataclass(frozen=True)
class Benchmark:
    name: str
    kind: str           # "split" or "permuted"
    default_tasks: int
    description: str
    needs_data: bool = False
    classes: int = 0          # classes the benchmark's data must have (0: any)
    channels: int = 0         # image channels it must have (0: any)


BENCHMARKS = {b.name: b for b in [
    Benchmark("split-mnist", "split", 5, "MNIST digits in 5 tasks of 2 classes (embedded data by default)"),
    Benchmark("permuted-mnist", "permuted", 10, "MNIST under T fixed pixel permutations (task 0 unpermuted)"),
    Benchmark("split-cifar10", "split", 5, "CIFAR-10 in 5 tasks of 2 classes (--data cifar-10-batches-py)", True,
              classes=10, channels=3),
    Benchmark("split-cifar100", "split", 10, "CIFAR-100 in 10 tasks of 10 classes (--data cifar-100-python)", True,
              classes=100, channels=3),
]}


def check_data_fits(spec: Benchmark, data: ArrayData) -> None:
    """DataError when the loaded data cannot be this benchmark's (e.g. MNIST given to split-cifar10)."""
    classes = len(set(data.y_train.tolist()) | set(data.y_test.tolist()))
    if spec.classes and classes != spec.classes:
        raise DataError(f"{data.name}: {spec.name} needs data with {spec.classes} classes, got {classes}")
    if spec.channels and (len(data.input_shape) != 3 or data.input_shape[0] != spec.channels):
        got = (f"{data.input_shape[0]}-channel images of {data.input_shape[1]}x{data.input_shape[2]}"
               if len(data.input_shape) == 3 else f"inputs of shape {tuple(data.input_shape)}")
        raise DataError(f"{data.name}: {spec.name} needs {spec.channels}-channel images (n, {spec.channels}, H, W), "
                        f"got {got}")


def build_scenario(benchmark: str, data: ArrayData, setting: str, num_tasks: Optional[int], seed: int,
                   classes: Optional[list[int]] = None) -> Scenario:
    """The tasks of ``benchmark`` on ``data`` in ``setting`` (task, domain, class or data)."""
    if benchmark not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {benchmark!r}; choose from {', '.join(BENCHMARKS)}")
    spec = BENCHMARKS[benchmark]
    tasks = num_tasks if num_tasks is not None else spec.default_tasks
    if tasks < 1:
        raise ConfigError(f"--tasks must be at least 1, got {tasks}")
    if setting == "data":
        return data_incremental_scenario(data, tasks, seed, classes)
    builder: Callable[..., Scenario] = split_scenario if spec.kind == "split" else permuted_scenario
    return builder(data, tasks, setting, seed, classes)
