"""The continual loop: for each task, train, consolidate, evaluate on every task, checkpoint.

Reproducibility and resume: every random choice of task t (batch order per
epoch, a strategy's sampling) comes from a generator seeded by ``(seed, purpose,
t, ...)``, never from global RNG state, and every method's state between tasks
is in its checkpoint. So ``--resume`` after a crash continues from the last
complete task and gives bit-identical results on CPU.

Distributed runs (``torchrun``): the global batch is drawn from the shared
generator and rank r takes every world_size-th sample; evaluation counts and
strategies' importance sums are all-reduced; only rank 0 writes files.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

import bitcl
from bitcl import checkpoint as ckpt
from bitcl import metrics
from bitcl.config import RunConfig
from bitcl.data import ArrayData, build_scenario, load_source
from bitcl.data.scenarios import Task
from bitcl.distributed import DistContext, digest, init_from_env
from bitcl.errors import ConfigError, TrainingDiverged
from bitcl.models import build_model
from bitcl.quant import bit_states
from bitcl.strategies import get_strategy, make_options

# settings that may differ between an interrupted run and its resumption
_RESUME_FREE = {"out", "overwrite", "resume", "quiet"}


@dataclass
class RunResult:
    """What a run produced; :meth:`to_json` is the results.json contract."""

    config: RunConfig
    tasks: int
    accuracy_matrix: list[list[float]] = field(default_factory=list)
    capacity: list[float] = field(default_factory=list)
    capacity_per_layer: list[dict[str, float]] = field(default_factory=list)
    timing: dict[str, list[float]] = field(default_factory=lambda: {
        "train_seconds": [], "epoch_seconds": [], "consolidate_seconds": [], "eval_seconds": []})
    params: int = 0
    state_bytes: list[int] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def acc(self) -> float:
        return metrics.acc(self.accuracy_matrix)

    @property
    def bwt(self) -> float:
        return metrics.bwt(self.accuracy_matrix)

    @property
    def forgetting(self) -> float:
        return metrics.forgetting(self.accuracy_matrix)

    def to_json(self) -> dict:
        out = {
            "bitcl_version": bitcl.__version__,
            "method": self.config.method,
            "benchmark": self.config.benchmark,
            "scenario": self.config.scenario,
            "seed": self.config.seed,
            "config": self.config.to_dict(),
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
                "state_bytes": self.state_bytes, "extra": self.extra}

    def format_matrix(self) -> str:
        t = len(self.accuracy_matrix[0]) if self.accuracy_matrix else 0
        lines = ["after \\ on " + " ".join(f"T{j:<5d}" for j in range(t))]
        for i, row in enumerate(self.accuracy_matrix):
            lines.append(f"task {i:<6d}" + " ".join(f"{a:.4f}" for a in row))
        lines.append(f"ACC {self.acc:.4f}  BWT {self.bwt:+.4f}  forgetting {self.forgetting:.4f}")
        return "\n".join(lines)


def derived_seed(seed: int, *parts) -> int:
    """A 63-bit seed for ``(seed, *parts)``: independent streams per purpose, task and epoch."""
    digest = hashlib.sha256(repr((seed,) + parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class Engine:
    """Builds data, model and strategy from a :class:`RunConfig`, then runs the task loop."""

    def __init__(self, config: RunConfig, data: Optional[ArrayData] = None, strategy_cls=None):
        self.config = config.validate()
        strategy_cls = strategy_cls or get_strategy(config.method)
        if config.scenario not in strategy_cls.scenarios:
            raise ConfigError(f"method {config.method!r} does not support the {config.scenario!r} scenario "
                              f"(supported: {', '.join(strategy_cls.scenarios)})")
        if strategy_cls.requires_quantized and config.backbone != "quant":
            raise ConfigError(f"method {config.method!r} needs the quantised backbone (--backbone quant)")
        options = make_options(strategy_cls, config.method_options)
        if config.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda requested but CUDA is not available")
        self.dist: DistContext = init_from_env(config.device)
        try:
            self._build(config, data, strategy_cls, options)
        except BaseException:
            self.dist.shutdown(clean=False)  # a rank that fails setup must not leave gloo threads behind
            raise
        self.task_index = 0
        self.hook_seconds = 0.0
        self.result = RunResult(config, len(self.scenario),
                                params=sum(p.numel() for p in self.model.parameters()))

    def _build(self, config: RunConfig, data: Optional[ArrayData], strategy_cls, options) -> None:
        """Device, output folder, scenario, model, strategy and (under torchrun) the DDP wrapper."""
        self.device = torch.device(config.device)
        if self.dist.enabled and config.device == "cuda":
            self.device = torch.device("cuda", self.dist.rank % torch.cuda.device_count())
        self.out = Path(config.out) if config.out else None
        self._prepare_out_dir()

        data = data if data is not None else load_source(config.data)
        self.scenario = build_scenario(config.benchmark, data, config.scenario, config.tasks, config.seed,
                                       config.classes)
        torch.manual_seed(config.seed)
        self.model = build_model(config.arch, self.scenario.input_shape, self.scenario.head_sizes,
                                 self.scenario.setting, config.backbone, config.bits, config.hidden).to(self.device)
        if config.pretrained:
            from bitcl.pretrain import load_pretrained
            load_pretrained(self.model, config.pretrained)
        self.bit_states = [state for _, state in bit_states(self.model)]
        self.strategy = strategy_cls(options, self)
        self.net = self.strategy.training_module() or self.model  # what is trained and evaluated
        self.train_model = self.net
        if self.dist.enabled:
            self._check_ranks_agree_on_setup()
            from torch.nn.parallel import DistributedDataParallel
            # buffers (codes, frozen counts) are not broadcast every step: the projection is
            # deterministic, so they stay identical; a checksum at each task end proves it.
            # Unused parameters: the heads of other tasks.
            # torch >= 2.13 renamed broadcast_buffers (and warns on the old name)
            no_sync = ({"forward_sync_buffers": False}
                       if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                       else {"broadcast_buffers": False})
            self.train_model = DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True, **no_sync)

    def _check_ranks_agree_on_setup(self) -> None:
        self.dist.require_agreement(digest(bitcl.__version__.encode()), "the bitcl version")
        data = [t for task in self.scenario.tasks for t in (task.y_train, task.y_test)]
        data += [self.scenario.tasks[0].x_train, self.scenario.tasks[-1].x_test]
        self.dist.require_agreement(digest(*data), "the training data (every rank must load the same data)")
        self.dist.require_agreement(digest(*self.model.state_dict().values()), "the initial model")

    def state_checksum(self) -> int:
        """A hash of the model's parameters and buffers (codes, frozen counts) and the strategy state."""
        return digest(*self.model.state_dict().values(), *self.strategy.state_tensors().values())

    # -- files ------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Optional[Path]:
        return self.out / "checkpoints" if self.out else None

    def _prepare_out_dir(self) -> None:
        if self.out is None:
            return
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"--out {self.out}: exists and is not a directory")
        holds_run = self.out.is_dir() and ((self.out / "results.json").exists() or (self.out / "checkpoints").exists())
        if not holds_run or self.config.resume:
            return
        if not self.config.overwrite:
            raise ConfigError(f"--out {self.out}: already holds a run (use --overwrite to replace it "
                              "or --resume to continue it)")

    def _clear_out_dir(self) -> None:
        """--overwrite: remove the previous run, only once everything has been validated."""
        if self.out is None or not self.config.overwrite:
            return
        if self.dist.is_main:
            for name in ("results.json", "accuracy_matrix.csv", "log.txt"):
                (self.out / name).unlink(missing_ok=True)
            shutil.rmtree(self.out / "checkpoints", ignore_errors=True)
        self.dist.barrier()

    def _log(self, line: str) -> None:
        if not self.dist.is_main:
            return
        if not self.config.quiet:
            print(line, file=sys.stderr, flush=True)
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / "log.txt", "a") as f:
                f.write(line + "\n")

    def _resume(self) -> None:
        latest = ckpt.latest_checkpoint(self.checkpoint_dir) if self.checkpoint_dir else None
        if latest is None:
            return
        t, path = latest
        tensors, meta = ckpt.read_checkpoint(path)
        progress = meta.get("bitcl_progress")
        if not progress:
            raise ConfigError(f"{path}: has no run progress; cannot resume from it")
        saved = {k: v for k, v in progress["config"].items() if k not in _RESUME_FREE}
        current = {k: v for k, v in self.config.to_dict().items() if k not in _RESUME_FREE}
        if saved != current:
            changed = sorted(k for k in current if saved.get(k) != current[k])
            raise ConfigError(f"--resume: the run in {self.out} was made with different settings ({', '.join(changed)})")
        ckpt.load_model_state(self.model, tensors, str(path))
        self.strategy.load_state_tensors(ckpt.strategy_tensors(tensors))
        for key, value in progress["result"].items():
            setattr(self.result, key, value)
        self.task_index = t + 1
        self._log(f"resumed from {path} (tasks 0..{t} complete)")

    # -- randomness --------------------------------------------------------------------
    def generator(self, *purpose) -> torch.Generator:
        """A CPU generator for ``purpose`` (e.g. ``("fisher", task)``) of this run's seed."""
        return torch.Generator().manual_seed(derived_seed(self.config.seed, *purpose))

    def importance_batches(self, task: Task, samples: int, batch_size: int, purpose: str):
        """Batches ``(x, y, u)`` of a fixed random subset of ``task``'s training data (this rank's share).

        ``samples <= 0`` means all. ``u`` holds one uniform number per sample, drawn in the
        global sample order, so label sampling (sampled Fisher) is the same on any number of
        ranks. Returns the batches and the global sample count, so that sums all-reduced over
        ranks divide into per-sample means.
        """
        n = len(task.y_train)
        k = n if samples <= 0 else min(samples, n)
        generator = self.generator(purpose, task.index)
        idx = torch.randperm(n, generator=generator)[:k]
        uniforms = torch.rand(k, generator=generator, dtype=torch.float64)
        idx, uniforms = idx[self.dist.rank::self.dist.world_size], uniforms[self.dist.rank::self.dist.world_size]
        batches = [(task.inputs(task.x_train[idx[s:s + batch_size]]).to(self.device),
                    task.y_train[idx[s:s + batch_size]].to(self.device), uniforms[s:s + batch_size])
                   for s in range(0, len(idx), batch_size)]
        return batches, k

    # -- training ------------------------------------------------------------------------
    def project(self) -> None:
        """Keep every quantised weight inside the window its frozen bits allow."""
        for state in self.bit_states:
            state.project_()

    def _optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.config.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.config.lr)
        return torch.optim.SGD(params, lr=self.config.lr, momentum=self.config.momentum)

    def task_loss(self, parts: list[Task], offsets: list[int], indices: torch.Tensor, global_count: int) -> torch.Tensor:
        """Cross-entropy of this rank's samples ``indices``, summed and divided by the *global*
        batch size (times the world size, since DDP averages gradients over ranks): the
        gradient is exactly the global batch mean, even for uneven or empty shards."""
        scale = self.dist.world_size / global_count
        if len(parts) == 1:
            task = parts[0]
            x = task.inputs(task.x_train[indices]).to(self.device, non_blocking=True)
            y = task.y_train[indices].to(self.device, non_blocking=True)
            return self.strategy.loss(self.train_model(x, task.index), y) * scale
        which = torch.bucketize(indices, torch.tensor(offsets[1:]), right=True)
        total = 0.0
        for k, task in enumerate(parts):
            local = indices[which == k] - offsets[k]
            if len(local) or (k == 0 and len(indices) == 0):
                x = task.inputs(task.x_train[local]).to(self.device)
                y = task.y_train[local].to(self.device)
                total = total + self.strategy.loss(self.train_model(x, task.index), y)
        return total * scale

    def train_task(self, task: Task, epochs: Optional[int] = None, tag: str = "order") -> list[float]:
        """Train ``task`` for ``epochs`` (default: the configured number); returns seconds per epoch.

        ``tag`` names the batch-order stream, so that extra passes (e.g. ANPyC's retraining
        after each pruning step) draw their own reproducible orders."""
        cfg = self.config
        epochs = cfg.epochs if epochs is None else epochs
        parts = [self.scenario.tasks[i] for i in self.strategy.training_tasks(task.index)]
        sizes = [len(p.y_train) for p in parts]
        offsets = list(np.cumsum([0] + sizes))
        n = offsets[-1]
        self.current_parts, self.current_offsets = parts, offsets
        self._independent = self.generator("independent", task.index)
        if n < self.dist.world_size:
            raise ConfigError(f"task {task.index} has {n} training samples, fewer than the {self.dist.world_size} ranks")
        optimizer = self._optimizer()
        steps_per_epoch = math.ceil(n / cfg.batch_size)
        scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, epochs * steps_per_epoch))
                     if cfg.lr_schedule == "cosine" else None)
        bar = self._progress_bar(task, epochs * steps_per_epoch)
        self.net.train()
        epoch_seconds = []
        for epoch in range(epochs):
            start = time.perf_counter()
            order = torch.randperm(n, generator=self.generator(tag, task.index, epoch))
            running, seen = 0.0, 0
            for step in range(steps_per_epoch):
                batch = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
                global_count = len(batch)
                if self.dist.enabled:
                    batch = batch[self.dist.rank::self.dist.world_size]
                loss = self.task_loss(parts, offsets, batch, global_count)
                penalty = self.strategy.penalty()
                total = loss if penalty is None else loss + penalty
                value = total.item()
                if not math.isfinite(value):
                    raise TrainingDiverged(f"task {task.index}, epoch {epoch}, step {step}: loss is {value} "
                                           "(lower --lr?); checkpoints of earlier tasks are intact")
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                hook_start = time.perf_counter()
                self.strategy.after_backward()
                self.hook_seconds += time.perf_counter() - hook_start
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                self.project()
                hook_start = time.perf_counter()
                self.strategy.after_step()
                self.hook_seconds += time.perf_counter() - hook_start
                running += value
                seen += 1
                if bar is not None and (step % 20 == 0 or step == steps_per_epoch - 1):
                    bar.update(step + 1 + epoch * steps_per_epoch - bar.n)
                    bar.set_postfix(epoch=epoch, loss=f"{running / seen:.4f}")
            epoch_seconds.append(time.perf_counter() - start)
        if bar is not None:
            bar.close()
        return epoch_seconds

    def independent_gradient(self, params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
        """Gradient of (task loss + penalty) on a fresh minibatch, drawn independently of the
        step's batch, at the current parameters (for SIU, SIB and SOS). ``.grad`` is untouched."""
        n = self.current_offsets[-1]
        batch = torch.randint(n, (self.config.batch_size,), generator=self._independent)
        global_count = len(batch)
        if self.dist.enabled:
            batch = batch[self.dist.rank::self.dist.world_size]
        train_model, self.train_model = self.train_model, self.net  # no DDP reducer for autograd.grad
        try:
            loss = self.task_loss(self.current_parts, self.current_offsets, batch, global_count) / self.dist.world_size
        finally:
            self.train_model = train_model
        penalty = self.strategy.penalty()
        if penalty is not None:
            loss = loss + penalty
        names = list(params)
        grads = torch.autograd.grad(loss, [params[k] for k in names], allow_unused=True)
        out = {}
        for name, g in zip(names, grads):
            g = torch.zeros_like(params[name]) if g is None else g
            if self.dist.enabled:
                self.dist.all_reduce_(g).div_(self.dist.world_size)
            out[name] = g
        return out

    def _progress_bar(self, task: Task, total: int):
        if self.config.quiet or not self.dist.is_main or not sys.stderr.isatty():
            return None
        from tqdm import tqdm
        return tqdm(total=total, desc=f"task {task.index + 1}/{len(self.scenario)}", leave=False, file=sys.stderr)

    # -- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, task: Task) -> float:
        """Accuracy on ``task``'s test split (sharded over ranks, counts all-reduced)."""
        was_training = self.net.training
        self.net.eval()
        n = len(task.y_test)
        indices = torch.arange(self.dist.rank, n, self.dist.world_size)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for start in range(0, len(indices), self.config.eval_batch_size):
            idx = indices[start:start + self.config.eval_batch_size]
            x = task.inputs(task.x_test[idx]).to(self.device)
            pred = self.net(x, task.index).argmax(1)
            correct += (pred == task.y_test[idx].to(self.device)).sum()
        self.dist.all_reduce_(correct)
        self.net.train(was_training)
        return int(correct) / n

    # -- bookkeeping -------------------------------------------------------------------------
    def capacity(self) -> tuple[float, dict[str, float]]:
        """Fraction of all bits of all quantised weights that are frozen, overall and per tensor."""
        per_tensor = {}
        frozen = total = 0
        for name, state in bit_states(self.model):
            f, t = state.frozen_bits(), state.total_bits()
            per_tensor[name] = f / t
            frozen, total = frozen + f, total + t
        return (frozen / total if total else 0.0), per_tensor

    def _save(self, task: Task) -> None:
        if self.checkpoint_dir is None or not self.dist.is_main:
            return
        progress = {"task": task.index, "config": self.config.to_dict(), "result": self.result.progress(),
                    "model": self.model_spec()}
        ckpt.save_checkpoint(self.checkpoint_dir / f"task-{task.index}.safetensors", self.model,
                             self.strategy.state_tensors(), progress)

    def model_spec(self) -> dict:
        """What rebuilds this model without the data (stored in every checkpoint)."""
        cfg, sc = self.config, self.scenario
        return {"arch": cfg.arch, "input_shape": list(sc.input_shape), "hidden": list(cfg.hidden),
                "setting": sc.setting, "head_sizes": list(sc.head_sizes), "backbone": cfg.backbone,
                "bits": cfg.bits, "benchmark": cfg.benchmark, "seed": cfg.seed, "tasks": len(sc),
                "permuted": any(t.permutation is not None for t in sc.tasks),
                "active_outputs": list(sc.active_outputs), "class_order": list(sc.class_order)}

    def _write_outputs(self) -> None:
        if self.out is None or not self.dist.is_main:
            return
        ckpt.atomic_write_text(self.out / "results.json", json.dumps(self.result.to_json(), indent=2))
        rows = [",".join(f"task{j}" for j in range(self.result.tasks))]
        rows += [",".join(f"{a:.6f}" for a in row) for row in self.result.accuracy_matrix]
        ckpt.atomic_write_text(self.out / "accuracy_matrix.csv", "\n".join(rows) + "\n")

    def close(self, clean: bool = True) -> None:
        """Release the process group if this engine created it (see ``DistContext.shutdown``)."""
        self.train_model = self.net  # drop DDP's reducer (and its gloo work) before the group goes
        self.dist.shutdown(clean)

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> RunResult:
        self._clear_out_dir()
        if self.config.resume:
            self._resume()
        timing = self.result.timing
        for t in range(self.task_index, len(self.scenario)):
            task = self.scenario.tasks[t]
            if self.scenario.setting == "class":
                self.model.set_active_outputs(self.scenario.active_outputs[t])
            self.strategy.before_task(task)
            start = time.perf_counter()
            self.hook_seconds = 0.0
            epochs = self.train_task(task)
            timing["train_seconds"].append(time.perf_counter() - start)
            hooks = self.hook_seconds  # before consolidation, which may train again (ANPyC)
            timing.setdefault("step_hook_seconds", []).append(hooks)
            timing["epoch_seconds"].append(sum(epochs) / len(epochs) if epochs else 0.0)
            start = time.perf_counter()
            self.strategy.after_task(task)
            timing["consolidate_seconds"].append(time.perf_counter() - start)
            if self.dist.enabled:  # every rank must hold the same codes, frozen counts and state
                checksums = self.dist.gather_ints(self.state_checksum())
                if len(set(checksums)) > 1:
                    raise TrainingDiverged(f"task {t}: ranks hold different model states after consolidation "
                                           f"(checksums {checksums}); stopping")
                self.result.extra.setdefault("rank_checksums", []).append(checksums)
            # importance work (per-step hooks + consolidation) relative to training time
            timing.setdefault("importance_fraction", []).append(
                (hooks + timing["consolidate_seconds"][-1]) / max(timing["train_seconds"][-1], 1e-9))
            start = time.perf_counter()
            row = [self.evaluate(other) for other in self.scenario.tasks]
            timing["eval_seconds"].append(time.perf_counter() - start)
            self.result.accuracy_matrix.append(row)
            if self.bit_states:
                overall, per_layer = self.capacity()
                self.result.capacity.append(overall)
                self.result.capacity_per_layer.append(per_layer)
            self.result.state_bytes.append(self.strategy.state_bytes())
            self.result.extra.update(self.strategy.extra_results())
            self._save(task)
            self.task_index = t + 1
            cap = f", capacity {self.result.capacity[-1]:.3f}" if self.result.capacity else ""
            self._log(f"task {t + 1}/{len(self.scenario)}: acc on task {t} {row[t]:.4f}, mean over seen "
                      f"{sum(row[:t + 1]) / (t + 1):.4f}, train {timing['train_seconds'][-1]:.1f}s, "
                      f"consolidate {timing['consolidate_seconds'][-1]:.2f}s{cap}")
        self._write_outputs()
        return self.result


def run(config: RunConfig, data: Optional[ArrayData] = None) -> RunResult:
    """Run a continual-learning experiment (the Python twin of ``bitcl run``).

    Under ``torchrun`` the process group is created here and destroyed before returning, on
    success and on error alike.
    """
    engine = Engine(config, data)
    clean = False
    try:
        result = engine.run()
        clean = True
        return result
    finally:
        engine.close(clean)
