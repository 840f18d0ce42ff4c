"""Importance regularisers vs BLIP on data/mnist15k.npz, at each method's default strength.

    .venv/bin/python benchmarks/bench_regularizers.py [final|largebatch|all]

The defaults are the validation-chosen strengths of benchmarks/search_regularizers.py
(benchmarks/results/search_regularizers.json); this script no longer searches (its old search
scored on the test split).
* final: Split-MNIST (5 tasks, task-incremental, MLP 784-1200, 5 epochs) for every regulariser,
  finetune, joint and BLIP, and Permuted-MNIST (domain-incremental: one shared head;
  PERM_TASKS tasks x PERM_EPOCHS epochs); tables by `bitcl report`.
* largebatch: SI and SOS (alpha = 1) at batch 256 and 2048 on Permuted-MNIST
  (domain-incremental, same tasks; at 2048, 8x the epochs so both see the same number
  of steps; lr scaled with the square root of the batch).
Runs go to benchmarks/out/runs/reg-*.
"""
from __future__ import annotations

import json
import os
import sys

import torch

from _timing import write_json
from bitcl.config import RunConfig
from bitcl.engine import run
from bitcl.report import write_report
from bitcl.strategies import get_strategy, make_options

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "mnist15k.npz")
RUNS = os.path.join(HERE, "out", "runs")
METHODS = ["ewc", "si", "siu", "sib", "sos", "mas", "masx", "af", "rewc"]
# Permuted-MNIST protocol: the issue asks for 10 tasks; 5 tasks x 1 epoch is what fitted in
# the session that produced the README's figures (2 shared cores).
# BITCL_PERM_TASKS=10 BITCL_PERM_EPOCHS=3 runs the full protocol.
PERM_TASKS = int(os.environ.get("BITCL_PERM_TASKS", 5))
PERM_EPOCHS = int(os.environ.get("BITCL_PERM_EPOCHS", 1))
PERM = "perm" if (PERM_TASKS, PERM_EPOCHS) == (5, 1) else f"perm{PERM_TASKS}x{PERM_EPOCHS}"


def go(name, **kw):
    cfg = RunConfig(data=DATA, out=os.path.join(RUNS, name), overwrite=True, quiet=True, **kw)
    r = run(cfg)
    print(f"{name:<40} ACC {r.acc:.4f} BWT {r.bwt:+.4f} state {r.state_bytes[-1]:>10,} B "
          f"train {sum(r.timing['train_seconds']):6.1f}s", flush=True)
    return r


def default_c(method):
    return make_options(get_strategy(method)).c


def final():
    split, perm = [], []
    for m in METHODS + ["finetune", "joint", "blip"]:
        go(f"reg-split5-{m}", method=m, benchmark="split-mnist", epochs=5)
        split.append(f"reg-split5-{m}")
        go(f"reg-{PERM}-{m}", method=m, benchmark="permuted-mnist", scenario="domain", tasks=PERM_TASKS,
           epochs=PERM_EPOCHS)
        perm.append(f"reg-{PERM}-{m}")
    for name, dirs in (("split", split), (PERM, perm)):
        report = os.path.join(HERE, "out", f"regularizers_{name}", "report.md")
        print(write_report([os.path.join(RUNS, d) for d in dirs], report))


def largebatch():
    rows = {}
    for m in ("si", "sos"):
        c = default_c(m)  # the validation choice (search_regularizers.py)
        # the same number of optimiser steps at both batch sizes (8x the epochs at 8x the batch),
        # so that a difference comes from the batch size, not from training less
        for batch, lr, epochs in ((256, 3e-3, PERM_EPOCHS), (2048, 3e-3 * 8 ** 0.5, 8 * PERM_EPOCHS)):
            r = go(f"reg-largebatch-{m}-b{batch}", method=m, benchmark="permuted-mnist", scenario="domain",
                   tasks=PERM_TASKS, epochs=epochs, batch_size=batch, lr=lr, method_options={"c": c})
            rows[f"{m}@{batch}"] = {"acc": r.acc, "bwt": r.bwt, "c": c, "lr": lr, "epochs": epochs}
    write_json("regularizers_largebatch.json", rows)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    torch.set_num_threads(2)
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    for part in ("final", "largebatch"):
        if which in (part, "all"):
            globals()[part]()
