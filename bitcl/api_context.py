"""A strategy's view of one task when the data is the user's: a Dataset or a DataLoader.

:class:`DataContext` is the :class:`~bitcl.strategies.TaskContext` that ``bitcl.fit``, the
Avalanche plugins and users' own loops hand to a strategy's hooks. It serves:

* ``logits(x)``: the model's outputs for this task (its head, when there are per-task heads);
* ``importance_batches``: a fixed random subset of the task's training data, drawn from a
  generator seeded by ``(seed, purpose, task)``, with one uniform number per sample for label
  sampling, exactly as the CLI's loop does (same contract, same reproducibility);
* ``independent_gradient`` (when built with the strategy): the gradient of task loss plus
  penalty on a minibatch drawn independently of the step's batch (SIU, SIB, SOS; Benzing,
  AISTATS 2022, arXiv 2006.06357);
* ``retrain`` (when the driving loop passes a ``retrain`` callable, as ``fit`` does).

Map-style datasets (``len`` and indexing) are sampled by index. Iterable datasets are read in
order: the first ``samples`` items are the subset (their order is the user's).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset
from torch.utils.data._utils.collate import default_collate

from bitcl.errors import DataError
from bitcl.quant import bit_states, project_latents_
from bitcl.strategies import RunInfo, TaskContext
from bitcl.train.seeds import generator

TaskData = Any  # a torch Dataset (map-style or iterable) or a DataLoader over one


def split_batch(batch, where: str = "batch") -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of a collated batch ``(x, y, *extra)`` (Avalanche adds task labels); y as int64."""
    if isinstance(batch, dict):
        raise DataError(f"{where}: dict batches are not supported; give (input, label) pairs")
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise DataError(f"{where}: expected (input, label) pairs, got {type(batch).__name__}")
    x, y = batch[0], batch[1]
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise DataError(f"{where}: inputs and labels must be tensors (add a ToTensor transform)")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise DataError(f"{where}: labels must be integer class indices, got {y.dtype}")
    return x, y.long()


def dataset_of(data: TaskData) -> Dataset:
    return data.dataset if isinstance(data, DataLoader) else data


def collate_of(data: TaskData) -> Callable:
    return data.collate_fn if isinstance(data, DataLoader) else default_collate


def is_map_style(data: TaskData) -> bool:
    dataset = dataset_of(data)
    return not isinstance(dataset, IterableDataset) and hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")


def check_task_data(data: TaskData, where: str) -> None:
    """DataError unless ``data`` is a DataLoader, or a non-empty Dataset."""
    if isinstance(data, DataLoader):
        return
    if not isinstance(data, (Dataset, IterableDataset)) and not (hasattr(data, "__len__")
                                                                  and hasattr(data, "__getitem__")):
        raise DataError(f"{where}: expected a torch Dataset or DataLoader, got {type(data).__name__}")
    if is_map_style(data) and len(data) == 0:
        raise DataError(f"{where}: is empty")


def plain_tensors(data: TaskData) -> Optional[tuple[torch.Tensor, ...]]:
    """The tensors of a TensorDataset, or of a plain single-process DataLoader over one with the
    default collation; None for anything else. Batches of such data are cut from the tensors by
    index: the values the per-item ``__getitem__`` and collation would give, without their cost."""
    if isinstance(data, DataLoader):
        plain = (type(data) is DataLoader and data.num_workers == 0 and not data.pin_memory
                 and data.batch_sampler is not None and data.collate_fn is default_collate)
        data = data.dataset if plain else None
    if type(data) is TensorDataset and len(data.tensors) >= 2:
        return data.tensors
    return None


def indexed_batches(data: TaskData, indices: Sequence[int], batch_size: int, where: str):
    """Collated ``(x, y)`` batches of the given item indices of a map-style dataset."""
    tensors = plain_tensors(data)
    if tensors is not None:
        for start in range(0, len(indices), batch_size):
            idx = torch.as_tensor(indices[start:start + batch_size], dtype=torch.int64)
            yield split_batch((tensors[0][idx], tensors[1][idx]), where)
        return
    dataset, collate = dataset_of(data), collate_of(data)
    for start in range(0, len(indices), batch_size):
        items = [dataset[int(i)] for i in indices[start:start + batch_size]]
        yield split_batch(collate(items), where)


def leading_batches(data: TaskData, samples: int, batch_size: int, where: str):
    """The first ``samples`` items (all when ``samples <= 0``) of any dataset or loader, re-batched."""
    source = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size)
    xs, ys, taken = [], [], 0
    for batch in source:
        x, y = split_batch(batch, where)
        xs.append(x)
        ys.append(y)
        taken += len(y)
        if 0 < samples <= taken:
            break
    if not xs:
        raise DataError(f"{where}: is empty")
    x, y = torch.cat(xs), torch.cat(ys)
    if samples > 0:
        x, y = x[:samples], y[:samples]
    return [(x[s:s + batch_size], y[s:s + batch_size]) for s in range(0, len(y), batch_size)]


class DataContext(TaskContext):
    """The task context of a loop over a user's Dataset or DataLoader (module docstring).

    ``forward(x)`` gives this task's outputs (default ``model(x)``). Pass ``strategy`` to
    offer ``independent_gradient`` and ``retrain`` to offer retraining. ``batch_size`` is the
    independent minibatch's size (the training batch size)."""

    def __init__(self, model: nn.Module, data: TaskData, task_index: int, info: RunInfo, *, seed: int = 0,
                 forward: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, strategy=None,
                 batch_size: int = 64, retrain: Optional[Callable[[int, str], None]] = None):
        super().__init__(model, task_index, info)
        check_task_data(data, f"task {task_index} training data")
        self.data, self.seed, self.batch_size = data, seed, batch_size
        self.forward = forward or model
        self.strategy, self._retrain = strategy, retrain
        services = set()
        if strategy is not None:
            services.add("independent_gradient")
        if retrain is not None:
            services.add("retrain")
        self.provides = frozenset(services)  # per instance: what this loop can honestly serve
        self._independent = generator(seed, "independent", task_index)
        self._pool: Optional[list[tuple[torch.Tensor, torch.Tensor]]] = None
        self._bit_states: Optional[list] = None

    def project(self) -> None:
        """Move every quantised latent weight into the window its frozen bits allow, codes refreshed
        when next read (``BitState.project_latent_``, as the CLI's and ``fit``'s loops project). The
        Bit layers are found once per task (a loop that projects after every step, as the Avalanche
        plugins do, would otherwise walk every module of the model at every step)."""
        if self._bit_states is None:
            self._bit_states = [state for _, state in bit_states(self.model)]
        project_latents_(self._bit_states)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def _to_device(self, x: torch.Tensor, y: torch.Tensor):
        return x.to(self.device), y.to(self.device)

    def importance_batches(self, samples: int, batch_size: int, purpose: str):
        """``([(x, y, u)], count)``: ``samples`` training items (all when ``<= 0``) and one uniform
        per item, both from the generator of ``(seed, purpose, task)`` (see ``TaskContext``)."""
        where = f"task {self.task_index} training data"
        gen = generator(self.seed, purpose, self.task_index)
        if is_map_style(self.data):
            n = len(dataset_of(self.data))
            k = n if samples <= 0 else min(samples, n)
            order = torch.randperm(n, generator=gen)[:k]
            uniforms = torch.rand(k, generator=gen, dtype=torch.float64)
            pairs = list(indexed_batches(self.data, order.tolist(), batch_size, where))
        else:
            pairs = leading_batches(self.data, samples, batch_size, where)
            k = sum(len(y) for _, y in pairs)
            uniforms = torch.rand(k, generator=gen, dtype=torch.float64)
        batches, start = [], 0
        for x, y in pairs:
            x, y = self._to_device(x, y)
            batches.append((x, y, uniforms[start:start + len(y)]))
            start += len(y)
        return batches, k

    def _independent_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        where = f"task {self.task_index} training data"
        if is_map_style(self.data):
            n = len(dataset_of(self.data))
            picks = torch.randint(n, (min(self.batch_size, n),), generator=self._independent)
            return next(indexed_batches(self.data, picks.tolist(), self.batch_size, where))
        if self._pool is None:  # iterable data: draw from a fixed pool of its first items
            self._pool = leading_batches(self.data, 10 * self.batch_size, self.batch_size, where)
        x = torch.cat([b[0] for b in self._pool])
        y = torch.cat([b[1] for b in self._pool])
        picks = torch.randint(len(y), (min(self.batch_size, len(y)),), generator=self._independent)
        return x[picks], y[picks]

    def independent_gradient(self, params: dict[str, nn.Parameter]) -> dict[str, torch.Tensor]:
        """Gradient of (mean task loss + penalty) on an independent minibatch; ``.grad`` untouched."""
        if self.strategy is None:
            return super().independent_gradient(params)
        x, y = self._to_device(*self._independent_batch())
        loss = self.strategy.loss(self.logits(x), y) / len(y)
        penalty = self.strategy.penalty()
        if penalty is not None:
            loss = loss + penalty
        names = list(params)
        grads = torch.autograd.grad(loss, [params[k] for k in names], allow_unused=True)
        return {k: torch.zeros_like(params[k]) if g is None else g for k, g in zip(names, grads)}

    def retrain(self, epochs: int, tag: str) -> None:
        if self._retrain is None:
            return super().retrain(epochs, tag)
        self._retrain(epochs, tag)

