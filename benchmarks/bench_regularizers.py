"""Importance regularisers vs BLIP on shared/data/mnist15k.npz (issue 5).

    .venv/bin/python benchmarks/bench_regularizers.py [search|final|largebatch|all]

* search: c in {0.1, 1, 10, 100} x each method's default, Split-MNIST (5 tasks,
  task-incremental, MLP 784-1200, 5 epochs); the best ACC wins.
* final: Split-MNIST (10 epochs) with each method's best c, and Permuted-MNIST
  (10 tasks, domain-incremental: one shared head, 3 epochs) with the best c and 10x it,
  plus finetune, joint and BLIP; tables by `bitcl report`.
* largebatch: SI and SOS (alpha = 1) at batch 256 and 2048 on Permuted-MNIST
  (domain-incremental, 3 epochs, lr scaled with the batch).
Runs go to benchmarks/out/runs/reg-*; the choice of c to benchmarks/out/regularizers_search.json.
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
DATA = os.path.join(HERE, "..", "..", "shared", "data", "mnist15k.npz")
RUNS = os.path.join(HERE, "out", "runs")
METHODS = ["ewc", "si", "siu", "sib", "sos", "mas", "masx", "af", "rewc"]
SEARCH = os.path.join(HERE, "out", "regularizers_search.json")


def go(name, **kw):
    cfg = RunConfig(data=DATA, out=os.path.join(RUNS, name), overwrite=True, quiet=True, **kw)
    r = run(cfg)
    print(f"{name:<40} ACC {r.acc:.4f} BWT {r.bwt:+.4f} state {r.state_bytes[-1]:>10,} B "
          f"train {sum(r.timing['train_seconds']):6.1f}s", flush=True)
    return r


def default_c(method):
    return make_options(get_strategy(method)).c


def search():
    best = {}
    for m in METHODS:
        scores = {}
        for factor in (0.1, 1, 10, 100):
            c = default_c(m) * factor
            r = go(f"reg-search-{m}-c{c:g}", method=m, benchmark="split-mnist", epochs=5, method_options={"c": c})
            scores[c] = r.acc
        best[m] = {"best_c": max(scores, key=scores.get), "acc_by_c": scores}
    with open(SEARCH, "w") as f:
        json.dump(best, f, indent=2)
    print(json.dumps({m: v["best_c"] for m, v in best.items()}))


def final():
    best = json.load(open(SEARCH))
    split, perm = [], []
    for m in METHODS:
        c = best[m]["best_c"]
        split.append(go(f"reg-split-{m}", method=m, benchmark="split-mnist", epochs=10, method_options={"c": c}))
        for factor in (1, 10):
            perm.append(go(f"reg-perm-{m}-c{c * factor:g}", method=m, benchmark="permuted-mnist", scenario="domain",
                           epochs=3, method_options={"c": c * factor}))
    for m in ("finetune", "joint", "blip"):
        split.append(go(f"reg-split-{m}", method=m, benchmark="split-mnist", epochs=10))
        perm.append(go(f"reg-perm-{m}", method=m, benchmark="permuted-mnist", scenario="domain", epochs=3))
    for name, results in (("split", split), ("perm", perm)):
        dirs = sorted(d for d in os.listdir(RUNS) if d.startswith(f"reg-{name}-"))
        report = os.path.join(HERE, "out", f"regularizers_{name}", "report.md")
        print(write_report([os.path.join(RUNS, d) for d in dirs], report))


def largebatch():
    rows = {}
    for m in ("si", "sos"):
        c = json.load(open(SEARCH))[m]["best_c"] if os.path.exists(SEARCH) else default_c(m)
        for batch, lr in ((256, 3e-3), (2048, 3e-3 * 8 ** 0.5)):
            r = go(f"reg-largebatch-{m}-b{batch}", method=m, benchmark="permuted-mnist", scenario="domain", epochs=3,
                   batch_size=batch, lr=lr, method_options={"c": c})
            rows[f"{m}@{batch}"] = {"acc": r.acc, "bwt": r.bwt, "c": c, "lr": lr}
    write_json("regularizers_largebatch.json", rows)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    torch.set_num_threads(2)
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    for part in ("search", "final", "largebatch"):
        if which in (part, "all"):
            globals()[part]()
