"""Continual-learning scenarios built from an :class:`ArrayData`.

Benchmarks: ``split`` (classes divided into T tasks) and ``permuted`` (T fixed
pixel permutations; task 0 unpermuted by default). Settings (van de Ven &
Tolias, "Three scenarios for continual learning", arXiv 1904.07734):

* ``task``: one head per task, task id given at test; targets are the class's
  position within its task.
* ``domain``: one shared head over the within-task positions; no task id.
* ``class``: one head over every class seen so far (outputs of classes not yet
  seen are masked), no task id; targets are global class indices.
* ``data``: data-incremental (DLCFT, arXiv 2208.08112): the same classes in T
  disjoint stratified chunks, one shared head.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from bitcl.constants import SCENARIOS  # re-exported: bitcl.data.SCENARIOS
from bitcl.errors import ConfigError, DataError

from .sources import ArrayData


@dataclass
class Task:
    """One task: its data (targets already mapped to head outputs) and where its outputs live."""

    index: int
    classes: list[int]           # original labels in this task
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    permutation: Optional[torch.Tensor] = None  # pixel permutation applied to flattened inputs

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the task's input transform (the pixel permutation) to a batch."""
        if self.permutation is None:
            return x
        return x.flatten(1)[:, self.permutation].view_as(x)


@dataclass
class Scenario:
    """The tasks of a benchmark and the head layout they need."""

    benchmark: str
    setting: str
    tasks: list[Task]
    head_sizes: list[int]              # one entry per head (task setting: one per task)
    class_order: list[int]
    active_outputs: list[int] = field(default_factory=list)  # class setting: outputs live after task t
    input_shape: tuple[int, ...] = ()

    @property
    def multi_head(self) -> bool:
        return self.setting == "task"

    def __len__(self) -> int:
        return len(self.tasks)


def _select(data: ArrayData, classes: Optional[list[int]]) -> list[int]:
    present = sorted(set(data.y_train.tolist()) | set(data.y_test.tolist()))
    if classes is None:
        return present
    unknown = sorted(set(classes) - set(present))
    if unknown:
        raise DataError(f"{data.name}: classes {unknown} do not occur in the data (labels present: {present})")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"--classes lists a class twice: {classes}")
    return list(classes)


def _check_nonempty(task: Task, what: str) -> Task:
    if len(task.y_train) == 0 or len(task.y_test) == 0:
        raise DataError(f"{what}: task {task.index} (classes {task.classes}) has an empty "
                        f"{'training' if len(task.y_train) == 0 else 'test'} split")
    return task


def split_scenario(data: ArrayData, num_tasks: int, setting: str, seed: int = 0,
                   classes: Optional[list[int]] = None, shuffle_classes: bool = False) -> Scenario:
    """Split the classes into ``num_tasks`` tasks of equal size (in the given order, or
    shuffled by ``seed`` with ``shuffle_classes``)."""
    order = _select(data, classes)
    if shuffle_classes:
        order = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    if num_tasks < 1 or len(order) % num_tasks != 0:
        raise ConfigError(f"cannot split {len(order)} classes into {num_tasks} equal tasks")
    per_task = len(order) // num_tasks
    global_index = {c: i for i, c in enumerate(order)}
    tasks, heads, active = [], [], []
    for t in range(num_tasks):
        task_classes = order[t * per_task:(t + 1) * per_task]
        local = {c: i for i, c in enumerate(task_classes)}
        mapping = global_index if setting == "class" else local

        def part(x, y):
            keep = torch.isin(y, torch.tensor(task_classes))
            targets = torch.tensor([mapping[int(v)] for v in y[keep].tolist()], dtype=torch.int64)
            return x[keep], targets

        xtr, ytr = part(data.x_train, data.y_train)
        xte, yte = part(data.x_test, data.y_test)
        tasks.append(_check_nonempty(Task(t, task_classes, xtr, ytr, xte, yte), f"split-{data.name}"))
        heads.append(per_task)
        active.append((t + 1) * per_task)
    if setting == "task":
        head_sizes = heads
    elif setting == "class":
        head_sizes = [len(order)]
    else:
        head_sizes = [per_task]
    return Scenario(f"split-{data.name}", setting, tasks, head_sizes, order, active, data.input_shape)


def task_permutations(seed: int, num_tasks: int, pixels: int, permute_first: bool = False) -> list:
    """The pixel permutation of each permuted task (None for an unpermuted task 0), from ``seed``."""
    rng = np.random.default_rng(seed)
    perms = [torch.from_numpy(rng.permutation(pixels)) for _ in range(num_tasks)]
    if not permute_first:
        perms[0] = None
    return perms


def permuted_scenario(data: ArrayData, num_tasks: int, setting: str, seed: int = 0,
                      classes: Optional[list[int]] = None, permute_first: bool = False) -> Scenario:
    """``num_tasks`` tasks over the same classes, each with a fixed pixel permutation from ``seed``."""
    order = _select(data, classes)
    if num_tasks < 1:
        raise ConfigError(f"--tasks must be at least 1, got {num_tasks}")
    index = {c: i for i, c in enumerate(order)}
    keep_tr, keep_te = torch.isin(data.y_train, torch.tensor(order)), torch.isin(data.y_test, torch.tensor(order))
    xtr, xte = data.x_train[keep_tr], data.x_test[keep_te]
    ytr = torch.tensor([index[int(v)] for v in data.y_train[keep_tr].tolist()], dtype=torch.int64)
    yte = torch.tensor([index[int(v)] for v in data.y_test[keep_te].tolist()], dtype=torch.int64)
    permutations = task_permutations(seed, num_tasks, int(np.prod(data.input_shape)), permute_first)
    k = len(order)
    tasks, active = [], []
    for t, permutation in enumerate(permutations):
        offset = t * k if setting == "class" else 0
        tasks.append(_check_nonempty(Task(t, order, xtr, ytr + offset, xte, yte + offset, permutation),
                                     f"permuted-{data.name}"))
        active.append((t + 1) * k)
    head_sizes = {"task": [k] * num_tasks, "class": [k * num_tasks]}.get(setting, [k])
    return Scenario(f"permuted-{data.name}", setting, tasks, head_sizes, order, active, data.input_shape)


def data_incremental_scenario(data: ArrayData, num_tasks: int, seed: int = 0,
                              classes: Optional[list[int]] = None) -> Scenario:
    """The same classes arriving in ``num_tasks`` disjoint stratified chunks (one shared head)."""
    order = _select(data, classes)
    index = {c: i for i, c in enumerate(order)}
    keep_tr, keep_te = torch.isin(data.y_train, torch.tensor(order)), torch.isin(data.y_test, torch.tensor(order))
    xtr, xte = data.x_train[keep_tr], data.x_test[keep_te]
    ytr = torch.tensor([index[int(v)] for v in data.y_train[keep_tr].tolist()], dtype=torch.int64)
    yte = torch.tensor([index[int(v)] for v in data.y_test[keep_te].tolist()], dtype=torch.int64)
    rng = np.random.default_rng(seed)
    chunk_of = np.zeros(len(ytr), dtype=np.int64)
    for c in range(len(order)):
        idx = rng.permutation(np.flatnonzero(ytr.numpy() == c))
        chunk_of[idx] = np.arange(len(idx)) % num_tasks
    tasks = []
    for t in range(num_tasks):
        mask = torch.from_numpy(chunk_of == t)
        tasks.append(_check_nonempty(Task(t, order, xtr[mask], ytr[mask], xte, yte), f"data-{data.name}"))
    return Scenario(f"data-{data.name}", "data", tasks, [len(order)], order,
                    [len(order)] * num_tasks, data.input_shape)


def rotation_angles(num_tasks: int) -> list[float]:
    """Task t's rotation in degrees: ``180 t / T``, an even spread over [0, 180) with task 0 upright.

    Rotated MNIST (Lopez-Paz & Ranzato, "Gradient Episodic Memory", NeurIPS 2017, arXiv
    1706.08840, Sec. 5) rotates each task's digits by a fixed angle between 0 and 180 degrees;
    bitcl fixes the angles to an even spread so a run depends on T alone.
    """
    return [180.0 * t / num_tasks for t in range(num_tasks)]


def rotate_images(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """``(n, C, H, W)`` images rotated counter-clockwise about their centre by ``degrees``
    (bilinear, zeros outside), in chunks so a large set needs no second full-size buffer."""
    if degrees == 0:
        return x
    theta = torch.tensor(np.deg2rad(degrees), dtype=torch.float64)
    c, s = float(torch.cos(theta)), float(torch.sin(theta))
    matrix = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype)
    out = torch.empty_like(x)
    for start in range(0, len(x), 8192):
        part = x[start:start + 8192]
        grid = torch.nn.functional.affine_grid(matrix.expand(len(part), 2, 3), list(part.shape), align_corners=False)
        out[start:start + 8192] = torch.nn.functional.grid_sample(part, grid, mode="bilinear",
                                                                  padding_mode="zeros", align_corners=False)
    return out


def rotated_scenario(data: ArrayData, num_tasks: int, setting: str, seed: int = 0,
                     classes: Optional[list[int]] = None) -> Scenario:
    """``num_tasks`` tasks over the same classes, task t's images rotated by ``rotation_angles``.

    The rotated copies are materialised (T times the data in memory). Head layout as in
    :func:`permuted_scenario`: the usual setting is ``domain`` (one shared head).
    """
    base = permuted_scenario(data, 1, "task", seed, classes)
    task0, k = base.tasks[0], len(base.class_order)
    tasks, active = [], []
    for t, angle in enumerate(rotation_angles(num_tasks)):
        offset = t * k if setting == "class" else 0
        tasks.append(Task(t, base.class_order, rotate_images(task0.x_train, angle), task0.y_train + offset,
                          rotate_images(task0.x_test, angle), task0.y_test + offset))
        active.append((t + 1) * k)
    head_sizes = {"task": [k] * num_tasks, "class": [k * num_tasks]}.get(setting, [k])
    return Scenario(f"rotated-{data.name}", setting, tasks, head_sizes, base.class_order, active, data.input_shape)


def grouped_scenario(data: ArrayData, groups: list[list[int]], setting: str, name: str) -> Scenario:
    """One task per group of labels, groups of any sizes (e.g. BLIP's alternating CIFAR-10/100:
    2-class and 20-class tasks). ``task``: a head per group, targets the position within the
    group; ``class``: one head over every label in group order, outputs of later groups masked;
    ``domain`` needs groups of one size."""
    flat = [c for g in groups for c in g]
    if len(set(flat)) != len(flat) or not all(groups):
        raise ConfigError(f"{name}: task groups must be non-empty and disjoint, got {groups}")
    if setting == "domain" and len({len(g) for g in groups}) != 1:
        raise ConfigError(f"{name}: tasks of {sorted({len(g) for g in groups})} classes cannot share one "
                          "domain-incremental head; use --scenario task or class")
    if setting == "data":
        raise ConfigError(f"{name}: the data-incremental scenario needs one class set; use task or class")
    _select(data, flat)
    global_index = {c: i for i, c in enumerate(flat)}
    tasks, active = [], []
    for t, group in enumerate(groups):
        mapping = global_index if setting == "class" else {c: i for i, c in enumerate(group)}
        lookup = torch.full((max(flat) + 1,), -1, dtype=torch.int64)
        for c, target in mapping.items():
            lookup[c] = target

        def part(x, y):
            keep = torch.isin(y, torch.tensor(group))
            return x[keep], lookup[y[keep]]

        xtr, ytr = part(data.x_train, data.y_train)
        xte, yte = part(data.x_test, data.y_test)
        tasks.append(_check_nonempty(Task(t, list(group), xtr, ytr, xte, yte), name))
        active.append(sum(len(g) for g in groups[:t + 1]))
    head_sizes = {"task": [len(g) for g in groups], "class": [len(flat)]}.get(setting, [len(groups[0])])
    return Scenario(name, setting, tasks, head_sizes, flat, active, data.input_shape)
