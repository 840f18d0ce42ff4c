"""Long task sequences: does ANPyC forget less than the plain regularisers? (issue 7)

    .venv/bin/python benchmarks/bench_long_sequence.py [TASKS] [--plot-only]

Permuted-MNIST (data/mnist15k.npz), TASKS tasks (default 20), task-incremental,
MLP 784-1200, 1 epoch per task, for anpyc, ewc (online), si, mas, blip and finetune.
Per method: ACC after every task (mean over the tasks seen), the first task's accuracy
over time, the fraction of weights still free (ANPyC: unpruned-by-nobody; BLIP:
1 - capacity), seconds per task. Writes benchmarks/out/long_sequence.json and .png.
"""
from __future__ import annotations

import json
import os
import sys

import torch

from _timing import write_json
from bitcl.config import RunConfig
from bitcl.engine import run

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "mnist15k.npz")

METHODS = {"anpyc": {}, "ewc": {"mode": "online"}, "si": {}, "mas": {}, "blip": {}, "finetune": {}}


def main(tasks: int) -> None:
    torch.set_num_threads(2)
    curves = {}
    for method, options in METHODS.items():
        options = dict(options)
        r = run(RunConfig(method=method, benchmark="permuted-mnist", tasks=tasks, epochs=1, data=DATA, quiet=True,
                          out=os.path.join(HERE, "out", "runs", f"long{tasks}-{method}"), overwrite=True,
                          method_options=options))
        m = r.accuracy_matrix
        free = r.extra.get("free_fraction") or ([1 - c for c in r.capacity] if method == "blip" else None)
        secs = [a + b for a, b in zip(r.timing["train_seconds"], r.timing["consolidate_seconds"])]
        curves[method] = {"acc_after_task": [sum(m[i][:i + 1]) / (i + 1) for i in range(tasks)],
                          "first_task": [m[i][0] for i in range(tasks)], "free_fraction": free,
                          "seconds_per_task": sum(secs) / tasks, "acc": r.acc, "bwt": r.bwt, "options": options}
        print(f"{method:<9} ACC {r.acc:.4f} BWT {r.bwt:+.4f} first task {m[0][0]:.3f} -> {m[-1][0]:.3f} "
              f"{sum(secs) / tasks:.1f}s/task", flush=True)
    write_json(f"long_sequence_{tasks}.json", curves)
    plot(curves, tasks)


def plot(curves: dict, tasks: int) -> None:
    """Three panels; one colour per method in every panel (the last holds only anpyc and blip)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for i, (method, c) in enumerate(curves.items()):
        style = dict(label=method, color=f"C{i}")
        axes[0].plot(range(1, tasks + 1), c["acc_after_task"], **style)
        axes[1].plot(range(1, tasks + 1), c["first_task"], **style)
        if c["free_fraction"]:
            axes[2].plot(range(1, tasks + 1), c["free_fraction"], **style)
    titles = ("mean accuracy over tasks seen", "accuracy on task 1",
              "fraction still free (anpyc: weights, blip: bits)")
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("tasks learned")
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "out", f"long_sequence_{tasks}.png"), dpi=100)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "--plot-only":  # redraw from the saved JSON
        n = int(sys.argv[1])
        plot(json.load(open(os.path.join(HERE, "out", f"long_sequence_{n}.json"))), n)
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
