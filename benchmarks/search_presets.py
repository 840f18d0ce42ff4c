"""Choose presets on VALIDATION data, then measure them once on the test split.

    .venv/bin/python benchmarks/search_presets.py permuted-blip [--quick]

permuted-blip: Permuted-MNIST (10 tasks, task-incremental, 3 epochs per task, MLP 784-1200,
20 bits) on data/mnist15k.npz. Every candidate (learning rate, batch size, BLIP's
Fisher prior) is trained on 90 % of the training split and scored on the other 10 %
(``--validation 0.1``: a stratified hold-out of each class's training digits; the test
split is never read). The best validation ACC is the preset (bitcl/presets.py cites the
result file); only then is the chosen setting run on the test split, over seeds 0-2.

Writes benchmarks/results/search_permuted_blip.json (every candidate's validation ACC/BWT and
the choice) and benchmarks/results/preset_permuted_blip.json (test ACC/BWT per seed).
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _env import write_result  # noqa: E402

from bitcl.config import RunConfig  # noqa: E402
from bitcl.engine import run  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "mnist15k.npz")

PERMUTED = dict(method="blip", benchmark="permuted-mnist", scenario="task", epochs=3, data=DATA, quiet=True,
                preset=False)
# (lr, batch size, Fisher prior): the engine defaults, then a faster schedule over priors
CANDIDATES = [(3e-3, 64, 1e-10), (6e-3, 32, 1e-10), (6e-3, 32, 3e-8), (6e-3, 32, 1e-7)]


def summary(result) -> dict:
    return {"acc": result.acc, "bwt": result.bwt, "forgetting": result.forgetting,
            "capacity": result.capacity[-1] if result.capacity else None,
            "accuracy_matrix": result.accuracy_matrix, "train_seconds": sum(result.timing["train_seconds"])}


def permuted_blip(quick: bool = False) -> None:
    candidates = CANDIDATES[:2] if quick else CANDIDATES
    tried = []
    for lr, batch, prior in candidates:
        cfg = RunConfig(**PERMUTED, lr=lr, batch_size=batch, validation=0.1, method_options={"fisher_prior": prior})
        r = run(cfg)
        tried.append({"lr": lr, "batch_size": batch, "fisher_prior": prior, "validation": summary(r)})
        print(f"lr {lr:g} batch {batch} prior {prior:g}: validation ACC {r.acc:.4f} BWT {r.bwt:+.4f}", flush=True)
    best = max(tried, key=lambda t: t["validation"]["acc"])
    chosen = {"lr": best["lr"], "batch_size": best["batch_size"], "fisher_prior": best["fisher_prior"]}
    write_result("search_permuted_blip", {
        "protocol": "Permuted-MNIST, 10 tasks, task-incremental, 3 epochs, MLP 784-1200, 20 bits; trained on 90% of "
                    "mnist15k's training split, scored on the held-out 10% (--validation 0.1)",
        "candidates": tried, "chosen": chosen})
    print(f"chosen on validation: {chosen}", flush=True)
    seeds = []
    for seed in (0, 1, 2):
        cfg = RunConfig(**{**PERMUTED, "preset": True}, seed=seed, lr=chosen["lr"], batch_size=chosen["batch_size"],
                        method_options={"fisher_prior": chosen["fisher_prior"]})
        r = run(cfg)
        seeds.append({"seed": seed, **summary(r)})
        print(f"test, seed {seed}: ACC {r.acc:.4f} BWT {r.bwt:+.4f}", flush=True)
    write_result("preset_permuted_blip", {
        "protocol": "Permuted-MNIST, 10 tasks, task-incremental, 3 epochs, MLP 784-1200, 20 bits, test split",
        "setting": chosen, "seeds": seeds,
        "mean_acc": sum(s["acc"] for s in seeds) / len(seeds),
        "mean_bwt": sum(s["bwt"] for s in seeds) / len(seeds)})


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("BITCL_THREADS", "1")))
    what = sys.argv[1] if len(sys.argv) > 1 else "permuted-blip"
    if what != "permuted-blip":
        raise SystemExit(f"unknown search {what!r}; choose permuted-blip")
    permuted_blip(quick="--quick" in sys.argv)
