"""Time estimates of the paper protocols (`bitcl run --preset NAME`, bitcl/presets.py PROTOCOLS).

    .venv/bin/python benchmarks/protocol_time.py [--device cuda] [--samples 256] [--print-only]

A protocol runs for hours to days, so it is not timed whole. For each protocol, after a short
warm-up run, one task of ``--samples`` random images (8 times as many for MLPs) in the
protocol's input shape is trained for 1 and for 3 epochs with the protocol's network, method,
optimiser and batch size: half the difference gives the seconds per training sample per epoch,
the rest of the 1-epoch run the per-sample cost of everything else (consolidation, evaluation).
The estimate multiplies them by the protocol's training samples, epochs (ANPyC: plus its
retraining epochs) and tasks. Times are CPU seconds of this process on one thread
(``time.process_time``), i.e. the time on one free core, so other jobs on a shared machine do
not inflate them; a run on more cores is faster. With ``--device cuda``, wall-clock seconds.
Writes benchmarks/results/protocol_time.json (or prints it with --print-only).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bitcl.config import RunConfig  # noqa: E402
from bitcl.data.sources import from_arrays  # noqa: E402
from bitcl.engine import run  # noqa: E402
from bitcl.presets import PROTOCOLS, protocol_settings  # noqa: E402
from bitcl.strategies.anpyc import pruning_schedule  # noqa: E402

# training samples of one pass over every task, from the datasets' official training splits
TRAIN_SAMPLES = {"split-mnist": 60_000, "permuted-mnist": 60_000, "alternating-cifar": 100_000,
                 "split-cifar10-100": 50_000 + 25_000, "dataset-sequence": 50_000 + 60_000 + 73_257 + 60_000}
INPUT = {"split-mnist": (28, 28), "permuted-mnist": (28, 28)}


def per_task_samples(settings: dict) -> float:
    total = TRAIN_SAMPLES[settings["benchmark"]]
    return total if settings["benchmark"] == "permuted-mnist" else total / {
        "split-mnist": 5, "alternating-cifar": 10, "split-cifar10-100": 6, "dataset-sequence": 4}[settings["benchmark"]]


def time_one(settings: dict, epochs: int, samples: int, device: str) -> float:
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
    config = {k: v for k, v in settings.items() if k not in ("benchmark", "data", "tasks", "method_options")}
    config.update(benchmark="permuted-mnist" if shape == (28, 28) else "split-cifar10", tasks=1, epochs=epochs,
                  device=device, quiet=True, method_options=options)
    if config["benchmark"] == "split-cifar10":
        config["scenario"] = "task"
    # CPU: seconds of this process (robust to other jobs on a shared machine); GPU: wall-clock seconds
    clock = time.process_time if device == "cpu" else time.perf_counter
    start = clock()
    run(RunConfig(**config), data=data)
    if device != "cpu":
        torch.cuda.synchronize()
    return clock() - start


def estimate(name: str, samples: int, device: str) -> dict:
    settings = protocol_settings(name)
    if settings.get("arch", "mlp") == "mlp":
        samples *= 8  # cheap networks: more samples for a stable difference
    time_one(settings, 1, 64, device)  # warm-up: first-call costs (imports, allocator, kernels) are not per sample
    t1, t3 = time_one(settings, 1, samples, device), time_one(settings, 3, samples, device)
    per_epoch = max(t3 - t1, 0.0) / 2 / samples
    other = max(t1 - per_epoch * samples, 0.0) / samples
    tasks = settings.get("tasks") or {"split-mnist": 5, "alternating-cifar": 10, "split-cifar10-100": 6,
                                      "dataset-sequence": 4}[settings["benchmark"]]
    opts = settings.get("method_options", {})
    extra = 0
    if "retrain_epochs" in opts:
        schedule = pruning_schedule(opts["prune_first"], opts["prune_decay"], opts["prune_step"], tasks)
        extra = sum(len(steps) for steps in schedule) * opts["retrain_epochs"]
    n = per_task_samples(settings)
    seconds = tasks * n * (settings["epochs"] * per_epoch + other) + extra * n * per_epoch
    return {"seconds_per_sample_epoch": per_epoch, "seconds_per_sample_other": other, "tasks": tasks,
            "samples_per_task": n, "epochs": settings["epochs"], "retrain_epochs_total": extra,
            "estimated_hours": seconds / 3600, "timed_samples": samples}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--print-only", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)  # one thread: process CPU time then equals the time on one free core
    out = {name: estimate(name, args.samples, args.device) for name, proto in PROTOCOLS.items() if not proto.refusal}
    payload = {"device": args.device, "protocols": out,
               "note": "estimates from short timed runs, not measurements of whole protocols"}
    if args.print_only:
        print(json.dumps(payload, indent=1))
        return
    from benchmarks._env import write_result
    print(write_result("protocol_time", payload))


if __name__ == "__main__":
    main()
