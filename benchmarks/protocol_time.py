"""Time estimates of the paper protocols (`bitcl run --preset NAME`, bitcl/presets.py PROTOCOLS).

    .venv/bin/python benchmarks/protocol_time.py [--what cpu|gpu|both] [--device cuda] [--samples 256]
        [--gpu-name NAME --gpu-tflops T --launch-us U] [--print-only]

A protocol runs for hours to days, so it is not timed whole. For each protocol, after a short
warm-up run, one task of ``--samples`` random images (8 times as many for MLPs) in the
protocol's input shape is trained for 1 and for 3 epochs with the protocol's network, method,
optimiser and batch size: half the difference gives the seconds per training sample per epoch,
the rest of the 1-epoch run the per-sample cost of everything else (consolidation, evaluation).
The estimate multiplies them by the protocol's training samples, epochs (ANPyC: plus its
retraining epochs) and tasks. Times are CPU seconds of this process on one thread
(``time.process_time``), i.e. the time on one free core, so other jobs on a shared machine do
not inflate them; a run on more cores is faster. With ``--device cuda``, wall-clock seconds.

GPU (``--what gpu``, no GPU needed): an estimate from FLOPs, not measured. The same short runs
are made on the CPU under a counter of every tensor operation (``OpCounter``: floating-point
operations from ``torch.utils.flop_counter``, and the operations that would each launch a GPU
kernel). The 2-epoch run minus the 1-epoch run gives one epoch's counts; over its steps, the
counts per training step. A step on the named GPU is assumed to take the longer of its FLOPs over
``--gpu-tflops`` (a sustained rate, stated, not measured) and its kernel launches times
``--launch-us`` (eager PyTorch runs one operation after another, so small networks are bound by
launches, not arithmetic). The protocol's steps times that, plus the rest (consolidation,
evaluation) priced the same way, is the estimate. Counts are deterministic, so the GPU estimate
does not depend on the machine that counts.

Writes benchmarks/results/protocol_time.json (or prints it with --print-only).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Optional

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks import _env  # noqa: E402  (imported first: the wall time a result records starts here)
from bitcl.config import RunConfig  # noqa: E402
from bitcl.data.sources import from_arrays  # noqa: E402
from bitcl.engine import run  # noqa: E402
from bitcl.presets import PROTOCOLS, protocol_settings  # noqa: E402
from bitcl.strategies.anpyc import pruning_schedule  # noqa: E402

# training samples of one pass over every task, from the datasets' official training splits
TRAIN_SAMPLES = {"split-mnist": 60_000, "permuted-mnist": 60_000, "alternating-cifar": 100_000,
                 "split-cifar10-100": 50_000 + 25_000, "dataset-sequence": 50_000 + 60_000 + 73_257 + 60_000,
                 "split-cifar100": 50_000}
INPUT = {"split-mnist": (28, 28), "permuted-mnist": (28, 28)}
DEFAULT_TASKS = {"split-mnist": 5, "alternating-cifar": 10, "split-cifar10-100": 6, "dataset-sequence": 4,
                 "split-cifar100": 10}

# the GPU the FLOP estimate names, and its assumptions (settings, not measurements; override on the command line)
GPU_NAME = "NVIDIA H100 SXM"
GPU_TFLOPS = 30.0  # assumed sustained FP32 rate: about half of the card's FP32 peak, small layers reach less
LAUNCH_US = 10.0  # assumed time per eager operation (kernel launch and PyTorch dispatch), the floor of a tiny step

# operations that launch no kernel: metadata and aliasing only
NO_KERNEL = {"empty", "empty_strided", "empty_like", "detach", "lift_fresh", "_to_copy_meta", "set_", "resize_",
             "_local_scalar_dense", "is_same_size", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset"}


def _with_defaults(settings: dict) -> dict:
    """The protocol's settings with bitcl's defaults for the epochs and batch size it leaves unset."""
    keys = ("benchmark", "method", "arch", "scenario", "backbone")
    resolved = RunConfig(**{k: settings[k] for k in keys if k in settings}).resolved()
    return {"epochs": resolved.epochs, "batch_size": resolved.batch_size, **settings}


def per_task_samples(settings: dict) -> float:
    total = TRAIN_SAMPLES[settings["benchmark"]]
    return total if settings["benchmark"] == "permuted-mnist" else total / DEFAULT_TASKS[settings["benchmark"]]


def _tasks(settings: dict) -> int:
    return settings.get("tasks") or DEFAULT_TASKS[settings["benchmark"]]


def _extra_epochs(settings: dict) -> int:
    """ANPyC's retraining epochs over the whole protocol (each pruning step retrains the task)."""
    opts = settings.get("method_options", {})
    if "retrain_epochs" not in opts:
        return 0
    schedule = pruning_schedule(opts["prune_first"], opts["prune_decay"], opts["prune_step"], _tasks(settings))
    return sum(len(steps) for steps in schedule) * opts["retrain_epochs"]


def _one_task(settings: dict, epochs: int, samples: int, device: str) -> tuple[RunConfig, object]:
    """One task of ``samples`` random images in the protocol's input shape, and its RunConfig."""
    shape = INPUT.get(settings["benchmark"], (3, 32, 32))
    rng = np.random.default_rng(0)
    classes = 10
    y = np.arange(samples + 10 * classes) % classes
    x = rng.integers(0, 256, (len(y), *shape), dtype=np.uint8)
    train = np.arange(len(y)) < samples
    data = from_arrays("timing", x, y, train)
    options = dict(settings.get("method_options", {}))
    if "retrain_epochs" in options:
        options["retrain_epochs"] = 0  # retraining is counted as extra epochs in the estimate
    if settings.get("pretrained") and settings.get("method") == "dlcft":
        options["warmup"] = "none"  # a pre-trained start has no first-task warm-up
    # fetched weights change the values, not the time: the network is timed from its random initialisation
    config = {k: v for k, v in settings.items()
              if k not in ("benchmark", "data", "tasks", "method_options", "pretrained")}
    config.update(benchmark="permuted-mnist" if shape == (28, 28) else "split-cifar10", tasks=1, epochs=epochs,
                  device=device, quiet=True, method_options=options)
    if config["benchmark"] == "split-cifar10":
        config["scenario"] = "task"
    return RunConfig(**config), data


def time_one(settings: dict, epochs: int, samples: int, device: str) -> float:
    config, data = _one_task(settings, epochs, samples, device)
    # CPU: seconds of this process (robust to other jobs on a shared machine); GPU: wall-clock seconds
    clock = time.process_time if device == "cpu" else time.perf_counter
    start = clock()
    run(config, data=data)
    if device != "cpu":
        torch.cuda.synchronize()
    return clock() - start


class OpCounter(TorchDispatchMode):
    """Counts the tensor operations that would each launch a GPU kernel (views and allocations excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        schema = func._schema
        aliasing = any(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns)
        if not aliasing and schema.name.split("::")[-1] not in NO_KERNEL:
            self.ops += 1
        return func(*args, **(kwargs or {}))


def count_one(settings: dict, epochs: int, samples: int) -> tuple[float, int]:
    """(floating-point operations, kernel-launching operations) of one short run, counted on the CPU."""
    config, data = _one_task(settings, epochs, samples, "cpu")
    flops = FlopCounterMode(display=False)
    ops = OpCounter()
    with flops, ops:
        run(config, data=data)
    return float(flops.get_total_flops()), ops.ops


def _samples_for(settings: dict, samples: int) -> int:
    return samples * 8 if settings.get("arch", "mlp") == "mlp" else samples  # cheap networks: more samples


def estimate(name: str, samples: int, device: str) -> dict:
    """The CPU (or ``device``) estimate from timed short runs."""
    settings = _with_defaults(protocol_settings(name))
    samples = _samples_for(settings, samples)
    time_one(settings, 1, 64, device)  # warm-up: first-call costs (imports, allocator, kernels) are not per sample
    t1, t3 = time_one(settings, 1, samples, device), time_one(settings, 3, samples, device)
    per_epoch = max(t3 - t1, 0.0) / 2 / samples
    other = max(t1 - per_epoch * samples, 0.0) / samples
    tasks, extra, n = _tasks(settings), _extra_epochs(settings), per_task_samples(settings)
    seconds = tasks * n * (settings["epochs"] * per_epoch + other) + extra * n * per_epoch
    return {"seconds_per_sample_epoch": per_epoch, "seconds_per_sample_other": other, "tasks": tasks,
            "samples_per_task": n, "epochs": settings["epochs"], "retrain_epochs_total": extra,
            "estimated_hours": seconds / 3600, "timed_samples": samples}


def gpu_estimate(name: str, samples: int, tflops: float = GPU_TFLOPS, launch_us: float = LAUNCH_US) -> dict:
    """The GPU estimate from counted FLOPs and kernel launches (see the module's docstring)."""
    settings = _with_defaults(protocol_settings(name))
    samples = max(samples, 4 * settings["batch_size"])  # counts are exact: a few steps suffice
    (f1, o1), (f2, o2) = count_one(settings, 1, samples), count_one(settings, 2, samples)
    steps = math.ceil(samples / settings["batch_size"])
    step_flops, step_ops = (f2 - f1) / steps, (o2 - o1) / steps
    other_flops, other_ops = max(f1 - (f2 - f1), 0.0) / samples, max(o1 - (o2 - o1), 0) / samples  # per sample
    rate, launch = tflops * 1e12, launch_us * 1e-6
    step_s = max(step_flops / rate, step_ops * launch)
    other_s = max(other_flops / rate, other_ops * launch)  # per training sample
    tasks, extra, n = _tasks(settings), _extra_epochs(settings), per_task_samples(settings)
    steps_per_epoch = math.ceil(n / settings["batch_size"])
    total_steps = (tasks * settings["epochs"] + extra) * steps_per_epoch
    seconds = total_steps * step_s + tasks * n * other_s
    return {"flops_per_step": step_flops, "ops_per_step": step_ops, "flops_other_per_sample": other_flops,
            "ops_other_per_sample": other_ops, "step_bound": "launches" if step_ops * launch >= step_flops / rate
            else "flops", "seconds_per_step": step_s, "steps": total_steps, "tasks": tasks, "samples_per_task": n,
            "epochs": settings["epochs"], "retrain_epochs_total": extra, "estimated_hours": seconds / 3600,
            "counted_samples": samples}


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--what", choices=("cpu", "gpu", "both"), default="both",
                   help="cpu: timed short runs; gpu: the estimate from counted FLOPs (no GPU needed)")
    p.add_argument("--device", default="cpu", help="where the timed runs train (cuda: a measured GPU time)")
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--protocols", default=None, help="comma-separated names (default: every runnable protocol)")
    p.add_argument("--gpu-name", default=GPU_NAME)
    p.add_argument("--gpu-tflops", type=float, default=GPU_TFLOPS, help="assumed sustained FP32 TFLOP/s")
    p.add_argument("--launch-us", type=float, default=LAUNCH_US, help="assumed microseconds per eager operation")
    p.add_argument("--print-only", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # one thread: process CPU time then equals the time on one free core
    names = [n for n, proto in PROTOCOLS.items() if not proto.refusal]
    if args.protocols:
        unknown = sorted(set(args.protocols.split(",")) - set(names))
        if unknown:
            p.error(f"--protocols: unknown or not runnable: {', '.join(unknown)}")
        names = args.protocols.split(",")
    payload: dict = {"note": "estimates from short runs, not measurements of whole protocols"}
    if args.what in ("cpu", "both"):
        payload["device"] = args.device
        payload["protocols"] = {name: estimate(name, args.samples, args.device) for name in names}
    if args.what in ("gpu", "both"):
        payload["gpu"] = {
            "how": "estimate from FLOPs, not measured: counted FLOPs and kernel-launching operations per training "
                   f"step, each step taking the longer of FLOPs / {args.gpu_tflops:g} TFLOP/s (assumed sustained "
                   f"FP32 rate of an {args.gpu_name}) and operations x {args.launch_us:g} us (assumed per-operation "
                   "launch cost), times the protocol's steps",
            "gpu_name": args.gpu_name, "assumed_tflops": args.gpu_tflops, "assumed_launch_us": args.launch_us,
            "protocols": {name: gpu_estimate(name, args.samples, args.gpu_tflops, args.launch_us) for name in names}}
    if args.print_only:
        print(json.dumps(payload, indent=1))
        return
    print(_env.write_result("protocol_time", payload))


if __name__ == "__main__":
    main()
