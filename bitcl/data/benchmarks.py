"""Named benchmarks: which data, which scenario builder, and the default number of tasks.

A benchmark with a ``dataset`` fetches it into the data root on first use when ``--data`` is
not given (``bitcl data``; ``$BITCL_DATA_ROOT``, ``$BITCL_DATA_MIRROR``). The MNIST benchmarks
keep the embedded 5,000 digits by default; ``--data mnist`` runs them on the full set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from bitcl.errors import ConfigError, DataError

from .scenarios import (Scenario, data_incremental_scenario, grouped_scenario, permuted_scenario, rotated_scenario,
                        split_scenario)
from .sources import ArrayData


@dataclass(frozen=True)
class Benchmark:
    name: str
    kind: str           # split, permuted, rotated, or one of MULTI_DATASET
    default_tasks: int
    description: str
    needs_data: bool = False  # no embedded default: --data, else the ``dataset`` fetched on first use
    classes: int = 0          # classes the benchmark's data must have (0: any)
    channels: int = 0         # image channels it must have (0: any)
    dataset: Optional[str] = None  # registered dataset (bitcl.data.registry) fetched when --data is not given


# BLIP's "sequence of 5 datasets" (Shi et al., CVPR 2021; its code's dataloaders/mixture5.py) in the
# code's index order; notMNIST (index 1) cannot be fetched (bitcl.data.registry.NOT_FETCHABLE).
BLIP_MIXTURE = ("cifar10", "notmnist", "mnist", "svhn", "fashion-mnist")
FETCHABLE_MIXTURE = tuple(d for d in BLIP_MIXTURE if d != "notmnist")
MULTI_DATASET = ("alternating-cifar", "cifar10-100", "dataset-sequence")  # kinds read from several datasets

BENCHMARKS = {b.name: b for b in [
    Benchmark("split-mnist", "split", 5, "MNIST digits in 5 tasks of 2 classes (embedded data by default)"),
    Benchmark("permuted-mnist", "permuted", 10, "MNIST under T fixed pixel permutations (task 0 unpermuted)"),
    Benchmark("rotated-mnist", "rotated", 10, "MNIST rotated by 180t/T degrees in task t (usually --scenario domain)"),
    Benchmark("split-fashion-mnist", "split", 5, "Fashion-MNIST in 5 tasks of 2 classes (fetched: fashion-mnist)",
              True, classes=10, channels=1, dataset="fashion-mnist"),
    Benchmark("split-kmnist", "split", 5, "KMNIST in 5 tasks of 2 classes (fetched: kmnist)", True,
              classes=10, channels=1, dataset="kmnist"),
    Benchmark("split-svhn", "split", 5, "SVHN in 5 tasks of 2 classes (fetched: svhn)", True,
              classes=10, channels=3, dataset="svhn"),
    Benchmark("split-cifar10", "split", 5, "CIFAR-10 in 5 tasks of 2 classes (fetched: cifar10)", True,
              classes=10, channels=3, dataset="cifar10"),
    Benchmark("split-cifar100", "split", 10, "CIFAR-100 in 10 tasks of 10 classes (fetched: cifar100)", True,
              classes=100, channels=3, dataset="cifar100"),
    Benchmark("alternating-cifar", "alternating-cifar", 10,
              "BLIP's alternating CIFAR-10/100: 5 CIFAR-10 tasks of 2 classes and 5 CIFAR-100 tasks of 20, "
              "order shuffled by the seed (fetched: cifar10, cifar100)", True, classes=110, channels=3),
    Benchmark("split-cifar10-100", "cifar10-100", 6,
              "Zenke et al.'s Split CIFAR-10/100: all of CIFAR-10, then CIFAR-100 classes 0-49 in 5 tasks of 10 "
              "(fetched: cifar10, cifar100)", True, classes=110, channels=3),
    Benchmark("dataset-sequence", "dataset-sequence", len(FETCHABLE_MIXTURE),
              "BLIP's sequence of datasets without notMNIST: CIFAR-10, MNIST, SVHN, Fashion-MNIST at 3x32x32, "
              "order shuffled by the seed (fetched)", True, classes=10 * len(FETCHABLE_MIXTURE), channels=3),
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


def seeded_order(n: int, seed: int) -> list[int]:
    """``sklearn.utils.shuffle(np.arange(n), random_state=seed)``, the task order of BLIP's code
    (HAT's loaders): ``numpy.random.RandomState(seed).shuffle`` of ``0..n-1``."""
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    return order.tolist()


def alternating_cifar_groups(seed: int) -> list[list[int]]:
    """BLIP's alternating CIFAR-10/100 (its code's dataloaders/cifar.py): CIFAR-10 labels 0..9
    in 5 tasks of 2 (classes 2k, 2k+1), CIFAR-100 labels (offset by 10) in 5 tasks of 20
    (classes 20k..20k+19); the 10 tasks in ``seeded_order(10, seed)``."""
    pieces = [[2 * k, 2 * k + 1] for k in range(5)] + [list(range(10 + 20 * k, 30 + 20 * k)) for k in range(5)]
    return [pieces[i] for i in seeded_order(10, seed)]


def cifar10_100_groups() -> list[list[int]]:
    """Zenke, Poole & Ganguli, "Continual Learning Through Synaptic Intelligence", ICML 2017,
    arXiv 1703.04200, Sec. 5 (the protocol Benzing 2022 reuses): CIFAR-10's 10 classes as
    task 0, then CIFAR-100 classes 0-49 (labels 10..59 here) in 5 tasks of 10, in label order."""
    return [list(range(10))] + [list(range(10 + 10 * k, 20 + 10 * k)) for k in range(5)]


def dataset_sequence_order(seed: int) -> list[str]:
    """BLIP's mixture order for ``seed`` (``seeded_order(5, seed)`` over ``BLIP_MIXTURE``), notMNIST dropped."""
    return [BLIP_MIXTURE[i] for i in seeded_order(len(BLIP_MIXTURE), seed) if BLIP_MIXTURE[i] != "notmnist"]


def as_rgb32(data: ArrayData) -> ArrayData:
    """Grey 28x28 images zero-padded to 32x32 and repeated over 3 channels (BLIP/HAT's mixture)."""
    if data.input_shape == (3, 32, 32):
        return data
    from .transforms import pad_images
    if data.input_shape[0] != 1:
        raise DataError(f"{data.name}: cannot bring images of shape {data.input_shape} to 3x32x32")

    def convert(x):
        return pad_images(x, 32).repeat(1, 3, 1, 1)
    return ArrayData(data.name, convert(data.x_train), data.y_train, convert(data.x_test), data.y_test, data.source)


def concatenate(parts: list[ArrayData], name: str) -> ArrayData:
    """Datasets side by side, each one's labels offset past the previous ones' (10 classes each
    unless a part has more)."""
    xs_tr, ys_tr, xs_te, ys_te, offset = [], [], [], [], 0
    for part in parts:
        xs_tr.append(part.x_train)
        ys_tr.append(part.y_train + offset)
        xs_te.append(part.x_test)
        ys_te.append(part.y_test + offset)
        offset += part.num_classes
    sources = [p.source or p.name for p in parts]
    return ArrayData(name, torch.cat(xs_tr), torch.cat(ys_tr), torch.cat(xs_te), torch.cat(ys_te),
                     "; ".join(sources))


def load_benchmark_data(spec: Benchmark, data: Optional[str], quiet: bool = False) -> ArrayData:
    """The data of ``spec``: ``--data`` when given (a path or a registered dataset name), else the
    benchmark's datasets fetched on first use, else the embedded MNIST."""
    from .readers import load_data, load_dataset
    if spec.kind in MULTI_DATASET:
        if data is not None:
            raise ConfigError(f"--benchmark {spec.name} reads its several datasets from the data root "
                              "($BITCL_DATA_ROOT); --data cannot replace them")
        if spec.kind in ("alternating-cifar", "cifar10-100"):
            return concatenate([load_dataset("cifar10", quiet=quiet), load_dataset("cifar100", quiet=quiet)],
                               "cifar10+cifar100")
        return concatenate([as_rgb32(load_dataset(d, quiet=quiet)) for d in FETCHABLE_MIXTURE],
                           "+".join(FETCHABLE_MIXTURE))
    if data is None and spec.dataset:
        return load_dataset(spec.dataset, quiet=quiet)
    return load_data(data, quiet=quiet)


def build_scenario(benchmark: str, data: ArrayData, setting: str, num_tasks: Optional[int], seed: int,
                   classes: Optional[list[int]] = None) -> Scenario:
    """The tasks of ``benchmark`` on ``data`` in ``setting`` (task, domain, class or data)."""
    if benchmark not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {benchmark!r}; choose from {', '.join(BENCHMARKS)}")
    spec = BENCHMARKS[benchmark]
    tasks = num_tasks if num_tasks is not None else spec.default_tasks
    if tasks < 1:
        raise ConfigError(f"--tasks must be at least 1, got {tasks}")
    if spec.kind in MULTI_DATASET:
        if tasks != spec.default_tasks or classes is not None:
            raise ConfigError(f"--benchmark {benchmark} has exactly {spec.default_tasks} tasks and all their "
                              "classes (drop --tasks / --classes)")
        if spec.kind == "alternating-cifar":
            groups = alternating_cifar_groups(seed)
        elif spec.kind == "cifar10-100":
            groups = cifar10_100_groups()
        else:
            groups = [[FETCHABLE_MIXTURE.index(d) * 10 + c for c in range(10)] for d in dataset_sequence_order(seed)]
        return grouped_scenario(data, groups, setting, benchmark)
    if setting == "data":
        return data_incremental_scenario(data, tasks, seed, classes)
    builders: dict[str, Callable[..., Scenario]] = {"split": split_scenario, "permuted": permuted_scenario,
                                                    "rotated": rotated_scenario}
    return builders[spec.kind](data, tasks, setting, seed, classes)
