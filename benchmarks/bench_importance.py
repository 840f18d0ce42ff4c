"""Vectorised per-sample importance vs a naive per-sample loop, same samples, one process.

    .venv/bin/python benchmarks/bench_importance.py

MLP 784-1200-10 (quantised backbone), 256 real MNIST digits from
data/mnist15k.npz, 2 threads. Target (issue 5): >= 10x faster.
Writes benchmarks/results/importance_speed.json.
"""
from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F

from _timing import write_json
from bitcl.data import load_source
from bitcl.importance import batch_fisher_sums, layers_of, output_sensitivity_sums
from bitcl.models import build_model

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "mnist15k.npz")


def naive(model, params, x, per_sample_scalar, power):
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for n in range(len(x)):
        grads = torch.autograd.grad(per_sample_scalar(model(x[n:n + 1], 0)), list(params.values()))
        for k, g in zip(params, grads):
            total[k] += g.abs().pow(power)
    return total


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    data = load_source(DATA)
    x, y = data.x_train[:256], data.y_train[:256]
    model = build_model("mlp", (1, 28, 28), [10], "task")
    model.eval()
    params = dict(model.backbone_parameters())
    layers = layers_of(model, params)
    logits = lambda inp: model(inp, 0)
    rows = {}
    cases = {
        "fisher_empirical": (lambda: batch_fisher_sums(model, layers, logits, x, y, "empirical"),
                             lambda n: None, 2),
        "mas": (lambda: output_sensitivity_sums(model, layers, logits, x, "mas"),
                lambda n: None, 1),
    }
    for name, (fast_fn, _, power) in cases.items():
        start = time.perf_counter()
        for _ in range(3):
            fast = fast_fn()
        t_fast = (time.perf_counter() - start) / 3
        labels = iter(y.tolist())
        if name == "fisher_empirical":
            scalar = lambda z: F.cross_entropy(z, torch.tensor([next(labels)]))
        else:
            scalar = lambda z: torch.softmax(z, 1).pow(2).sum()
        start = time.perf_counter()
        slow = naive(model, params, x, scalar, power)
        t_slow = time.perf_counter() - start
        err = max(float(((fast[k] - slow[k]).abs().max() / slow[k].abs().max().clamp_min(1e-30))) for k in slow)
        rows[name] = {"vectorised_s": t_fast, "naive_loop_s": t_slow, "speedup": t_slow / t_fast,
                      "max_rel_error": err}
        print(f"{name:<17} vectorised {t_fast * 1e3:7.1f} ms  naive loop {t_slow * 1e3:8.1f} ms  "
              f"speed-up {t_slow / t_fast:5.1f}x  (max rel. diff {err:.1e}; target >= 10x)")
    path = write_json("importance_speed.json", {"samples": 256, "model": "784-1200-10 quant", "threads": 2,
                                                 "measures": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
