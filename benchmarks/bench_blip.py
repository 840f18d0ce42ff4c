"""BLIP benchmarks on data/mnist15k.npz (issue 4): accuracy, speed, memory, 50 tasks.

    .venv/bin/python benchmarks/bench_blip.py [accuracy|scenarios|speed|long|all]

* accuracy: Split-MNIST (5 tasks, task-incremental, MLP 784-1200, 10 epochs) for blip,
  finetune (quantised) and finetune --backbone float; Permuted-MNIST (10 tasks, 3 epochs)
  for blip and finetune at the engine defaults; seeds 0-2, 95 % t intervals, Welch's p of
  BLIP's ACC against each (blip_accuracy.json). BLIP at the
  validation-chosen Permuted-MNIST preset: benchmarks/search_presets.py.
* scenarios: BLIP and finetune on Split-MNIST, domain- and class-incremental, 10 epochs.
* speed: BLIP's mean epoch time over finetune --backbone float's, same configuration,
  same process; consolidation (Fisher + bit update) on 8,000 samples over one training
  epoch over 8,000 samples.
* long: 50 permuted tasks, 1 epoch each: capacity and new-task accuracy per task, and
  state bytes per weight after 1, 10 and 50 tasks.
Runs go to benchmarks/out/runs/, summaries to benchmarks/results/blip_*.json (with the environment).
"""
from __future__ import annotations

import os
import sys

import torch

import _env  # noqa: F401  (imported first: _env.STARTED, the start of the wall time a result records)
from _timing import write_json
from bitcl.config import RunConfig
from bitcl.engine import run
from bitcl.report import write_report

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "mnist15k.npz")
RUNS = os.path.join(HERE, "out", "runs")


def go(name: str, **kw):
    cfg = RunConfig(data=DATA, out=os.path.join(RUNS, name), overwrite=True, quiet=True, **kw)
    result = run(cfg)
    print(f"{name:<32} ACC {result.acc:.4f} BWT {result.bwt:+.4f} "
          f"capacity {result.capacity[-1] if result.capacity else 0:.3f} "
          f"train {sum(result.timing['train_seconds']):.1f}s", flush=True)
    return result


def summary(result) -> dict:
    return {"acc": result.acc, "bwt": result.bwt, "forgetting": result.forgetting,
            "capacity": result.capacity[-1] if result.capacity else None, "state_bytes": result.state_bytes[-1],
            "accuracy_matrix": result.accuracy_matrix, "train_seconds": sum(result.timing["train_seconds"])}


SEEDS = (0, 1, 2)


def accuracy() -> None:
    """Split-MNIST at the engine defaults (10 epochs): BLIP, finetune (quantised) and finetune (float);
    Permuted-MNIST at the engine defaults (3 epochs): BLIP and finetune; each over seeds 0, 1 and 2.
    Per run: every seed's figures, and the mean, std and 95 % Student t interval of ACC, BWT and
    forgetting over the seeds (bitcl.stats); per benchmark, Welch's p of BLIP's ACC against each other
    run's. Permuted-MNIST at its validation-chosen preset is benchmarks/search_presets.py's job."""
    from bitcl.stats import summarize, welch_p

    plan = [("split-blip", "split-mnist", 10, dict(method="blip")),
            ("split-finetune", "split-mnist", 10, dict(method="finetune")),
            ("split-finetune-float", "split-mnist", 10, dict(method="finetune", backbone="float")),
            ("permuted-blip-defaults", "permuted-mnist", 3, dict(method="blip")),
            ("permuted-finetune-defaults", "permuted-mnist", 3, dict(method="finetune"))]
    runs = {}
    for name, benchmark, epochs, kw in plan:
        per_seed = [summary(go(f"{name}-seed{seed}", benchmark=benchmark, epochs=epochs, preset=False, seed=seed,
                               **kw)) for seed in SEEDS]
        runs[name] = {"benchmark": benchmark, "method": kw["method"], "seeds": list(SEEDS), "per_seed": per_seed,
                      **{key: summarize([r[key] for r in per_seed], key).as_dict()
                         for key in ("acc", "bwt", "forgetting")}}
    for name, entry in runs.items():
        blip = next(n for n, e in runs.items() if e["method"] == "blip" and e["benchmark"] == entry["benchmark"])
        if name != blip:
            entry["blip_acc_p_welch"] = welch_p([r["acc"] for r in runs[blip]["per_seed"]],
                                                [r["acc"] for r in entry["per_seed"]])
    write_json("blip_accuracy.json", {
        "protocol": "mnist15k, MLP 784-1200, 20 bits, task-incremental; Split-MNIST 5 tasks x 10 epochs, "
                    "Permuted-MNIST 10 tasks x 3 epochs; engine defaults (Adam lr 3e-3, batch 64, prior 1e-10); "
                    "seeds 0, 1, 2; intervals: 95 % Student t over the seeds; p: Welch's t-test of BLIP's ACC "
                    "against the run's, same benchmark",
        "runs": runs, "targets": {"split_acc": 0.99, "split_bwt": -0.002}})
    for name, entry in runs.items():
        acc = entry["acc"]
        p = entry.get("blip_acc_p_welch")
        print(f"{name:28s} ACC {acc['mean']:.4f} [{acc['low']:.4f}, {acc['high']:.4f}]  BWT {entry['bwt']['mean']:+.4f}"
              + (f"  BLIP vs this: Welch p {p:.3g}" if p is not None else ""))


def scenarios() -> None:
    """BLIP (and finetune for reference) in the domain- and class-incremental settings."""
    dirs = []
    for scenario in ("domain", "class"):
        for method in ("blip", "finetune"):
            name = f"split-{scenario}-{method}"
            go(name, method=method, benchmark="split-mnist", scenario=scenario, epochs=10)
            dirs.append(os.path.join(RUNS, name))
    print(write_report(dirs, os.path.join(HERE, "out", "blip_scenarios", "report.md")))


def speed(rounds: int = 3) -> None:
    """Float and BLIP runs alternate, ``rounds`` pairs: each pair's ratio is taken from runs
    that ran next to each other, and the median pair is reported (a load spike during one
    run moves one pair, not the figure)."""
    common = dict(benchmark="split-mnist", epochs=3, tasks=5, preset=False)
    pairs = []
    for r in range(rounds):
        float_run = go(f"speed-finetune-float-{r}", method="finetune", backbone="float", **common)
        blip_run = go(f"speed-blip-{r}", method="blip", **common)
        pairs.append((sum(blip_run.timing["epoch_seconds"]) / 5, sum(float_run.timing["epoch_seconds"]) / 5))
    ratios = [b / f for b, f in pairs]
    blip_epoch, float_epoch = sorted(pairs, key=lambda p: p[0] / p[1])[len(pairs) // 2]
    cons = go("speed-consolidation", method="blip", benchmark="permuted-mnist", tasks=2, epochs=1, preset=False,
              method_options={"samples": 8000})
    n_train = 11997
    epoch_8000 = cons.timing["epoch_seconds"][0] * 8000 / n_train
    out = {"epoch_ratio_blip_over_float_finetune": blip_epoch / float_epoch, "target_epoch_ratio": 1.25,
           "epoch_ratio_per_pair": ratios,
           "blip_epoch_s": blip_epoch, "float_finetune_epoch_s": float_epoch,
           "consolidation_8000_s": cons.timing["consolidate_seconds"][0], "epoch_over_8000_s": epoch_8000,
           "consolidation_over_epoch": cons.timing["consolidate_seconds"][0] / epoch_8000,
           "target_consolidation_over_epoch": 1.0, "threads": torch.get_num_threads()}
    write_json("blip_speed.json", out)
    print(f"BLIP epoch / finetune --backbone float epoch: {out['epoch_ratio_blip_over_float_finetune']:.3f} "
          f"(target <= 1.25)")
    print(f"consolidation on 8,000 samples / one epoch over 8,000 samples: {out['consolidation_over_epoch']:.3f} "
          f"(target <= 1.0; {out['consolidation_8000_s']:.2f}s vs {epoch_8000:.2f}s)")


def long() -> None:
    result = go("permuted50-blip", method="blip", benchmark="permuted-mnist", tasks=50, epochs=1)
    quantised = 784 * 1200 + 1200
    out = {"capacity": result.capacity, "new_task_accuracy": [result.accuracy_matrix[i][i] for i in range(50)],
           "final_accuracy": result.accuracy_matrix[-1], "acc": result.acc, "bwt": result.bwt,
           "state_bytes": result.state_bytes,
           "state_bytes_per_quantised_weight": {str(t): result.state_bytes[t - 1] / quantised for t in (1, 10, 50)}}
    write_json("blip_50_tasks.json", out)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6.5, 3.6))
        ax.plot(range(1, 51), out["capacity"], label="fraction of bits frozen")
        ax.plot(range(1, 51), out["new_task_accuracy"], label="accuracy on the task just learned")
        ax.plot(range(1, 51), out["final_accuracy"], ".", markersize=3, label="accuracy after all 50 tasks")
        ax.set_xlabel("task")
        ax.set_ylim(0, 1)
        ax.set_title("BLIP, 50 permuted-MNIST tasks (1 epoch each, MLP 784-1200, 20 bits)", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(HERE, "out", "blip_50_tasks.png"), dpi=110)
    except ImportError:
        pass
    print(f"50 tasks: capacity {out['capacity'][0]:.3f} -> {out['capacity'][-1]:.3f}; new-task accuracy "
          f"{out['new_task_accuracy'][0]:.3f} -> {out['new_task_accuracy'][-1]:.3f}; ACC {result.acc:.4f}")
    print("state bytes per quantised weight after 1, 10, 50 tasks:", out["state_bytes_per_quantised_weight"])


if __name__ == "__main__":
    torch.set_num_threads(2)
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    for part in ("accuracy", "scenarios", "speed", "long"):
        if which in (part, "all"):
            globals()[part]()
