"""bitcl where users already work: the same BLIP run through the CLI engine, bitcl.fit and Avalanche.

Part 1 (benchmarks/results/avalanche.json): wall time of BLIP on Split-MNIST (embedded 5,000
digits, 5 tasks, task-incremental, MLP 784-256-heads, 20-bit codes, 1 epoch, SGD lr 0.05,
batch 64, constant lr) through (a) ``bitcl.engine.run`` (the CLI path, the baseline),
(b) ``bitcl.fit`` on TensorDatasets, (c) ``bitcl.fit`` on DataLoaders, (d) Avalanche ``Naive``
with ``BLIPPlugin``. Each path runs ``--repeats`` times in this process (alternating); the
minimum is reported, with its ratio to the CLI path: training + consolidation time (evaluation
and set-up excluded; the wall times including them are recorded too).

Part 2 (benchmarks/results/avalanche_defects.json): the behaviour of Avalanche 0.6's own EWC,
SI and MAS plugins that issue 18 describes, measured here:
* SI: whether its stored "old" weights share memory with the parameters on CPU, and the
  importance it ends an experience with; the clamp of its importance;
* MAS: what its penalty hook does when the task loss is exactly zero;
* EWC: its importance (squared mean-minibatch gradient, true labels) against the per-sample
  empirical Fisher of the same model and data (bitcl's ``--fisher empirical``).

Run:  nice -n 5 .venv/bin/python benchmarks/bench_avalanche.py [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from types import SimpleNamespace

import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(1)

import bitcl  # noqa: E402
import bitcl.avalanche as bav  # noqa: E402  (makes torchvision importable before avalanche)
from avalanche.benchmarks import tensors_benchmark  # noqa: E402
from avalanche.models import MultiTaskModule  # noqa: E402
from avalanche.training import Naive  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin  # noqa: E402
from bitcl.api import benchmark_tasks, fit  # noqa: E402
from bitcl.config import RunConfig  # noqa: E402
from bitcl.engine import run as engine_run  # noqa: E402
from bitcl.models import build_model  # noqa: E402
from _env import write_result  # noqa: E402

HIDDEN, LR, BATCH, PRIOR = 256, 0.05, 64, 1e-8


def environment() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads()}


class Heads(MultiTaskModule):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward_single_task(self, x, task_label):
        return self.model(x, int(task_label))


def _model():
    torch.manual_seed(0)
    return build_model("mlp", (1, 28, 28), [2] * 5, "task", "quant", 20, [HIDDEN])


def _loop_seconds(result) -> float:
    """Training plus consolidation of every task (the per-task evaluation of all tasks excluded)."""
    return sum(result.timing["train_seconds"]) + sum(result.timing["consolidate_seconds"])


def run_cli_path(tasks):
    config = RunConfig(method="blip", benchmark="split-mnist", scenario="task", epochs=1, batch_size=BATCH, lr=LR,
                       optimizer="sgd", lr_schedule="none", hidden=[HIDDEN], seed=0, quiet=True,
                       method_options={"fisher_prior": PRIOR})
    start = time.perf_counter()
    result = engine_run(config)
    return time.perf_counter() - start, _loop_seconds(result), result.acc


def run_fit(tasks, loaders: bool):
    data = [(DataLoader(tr, batch_size=BATCH, shuffle=True), DataLoader(te, batch_size=1000)) for tr, te in tasks] \
        if loaders else tasks
    model = _model()
    start = time.perf_counter()
    result = fit(model, data, "blip", options={"fisher_prior": PRIOR}, optimizer="sgd", lr=LR,
                 lr_schedule="none", batch_size=BATCH, epochs=1, seed=0)
    return time.perf_counter() - start, _loop_seconds(result), result.acc


def run_avalanche(tasks, plugin: bool = True):
    bench = tensors_benchmark(train_tensors=[tr.tensors for tr, _ in tasks], test_tensors=[te.tensors for _, te in tasks],
                              task_labels=list(range(len(tasks))), complete_test_set_only=False)
    model = Heads(_model())
    naive = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=LR), criterion=nn.CrossEntropyLoss(),
                  train_mb_size=BATCH, train_epochs=1, eval_mb_size=1000, device="cpu",
                  plugins=[bav.BLIPPlugin(fisher_prior=PRIOR)] if plugin else [],
                  evaluator=EvaluationPlugin(loggers=[]))
    start = time.perf_counter()
    for experience in bench.train_stream:
        naive.train(experience)
    seconds = time.perf_counter() - start  # training and consolidation; Avalanche's evaluation not run
    with torch.no_grad():
        acc = sum(float((model(te.tensors[0], torch.full((len(te),), t)).argmax(1) == te.tensors[1]).float().mean())
                  for t, (_, te) in enumerate(tasks)) / len(tasks)
    return seconds, seconds, acc


def timing(repeats: int) -> dict:
    tasks = benchmark_tasks("split-mnist", scenario="task", seed=0)
    paths = {"cli_engine": lambda: run_cli_path(tasks), "fit_datasets": lambda: run_fit(tasks, False),
             "fit_dataloaders": lambda: run_fit(tasks, True), "avalanche_blip_plugin": lambda: run_avalanche(tasks),
             "avalanche_naive_no_plugin": lambda: run_avalanche(tasks, plugin=False)}
    runs = {name: [] for name in paths}
    for name, path in paths.items():  # warm-up: imports, compiled kernels, dynamo's first optimizer
        path()
    for _ in range(repeats):
        for name, path in paths.items():
            runs[name].append(path())
    base = min(loop for _, loop, _ in runs["cli_engine"])
    out = {}
    for name, values in runs.items():
        best = min(loop for _, loop, _ in values)
        out[name] = {"wall_seconds": [w for w, _, _ in values], "loop_seconds": [loop for _, loop, _ in values],
                     "best_loop_seconds": best, "ratio_to_cli": best / base, "acc": [a for _, _, a in values]}
        print(f"{name:26s} loop {best:6.2f}s  x{best / base:5.2f} of the CLI path  "
              f"(wall incl. setup {min(w for w, _, _ in values):6.2f}s)  ACC {values[-1][2]:.4f}")
    # the plugin's own cost, against the same Avalanche loop without it (Avalanche's overhead is
    # avalanche_naive_no_plugin's ratio_to_cli)
    plugin_ratio = out["avalanche_blip_plugin"]["best_loop_seconds"] / out["avalanche_naive_no_plugin"]["best_loop_seconds"]
    out["blip_plugin_over_naive"] = plugin_ratio
    print(f"BLIPPlugin / Naive without it: x{plugin_ratio:.3f}")
    return out


# -- Avalanche 0.6's own plugins --------------------------------------------------------------
def _small_setup():
    tasks = benchmark_tasks("split-mnist", scenario="domain", tasks=5, seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 2))
    return tasks, model


def si_defects() -> dict:
    from avalanche.training.plugins import SynapticIntelligencePlugin
    tasks, model = _small_setup()
    bench = tensors_benchmark(train_tensors=[tasks[0][0].tensors], test_tensors=[tasks[0][1].tensors], task_labels=[0])
    plugin = SynapticIntelligencePlugin(si_lambda=1.0)
    naive = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), criterion=nn.CrossEntropyLoss(),
                  train_mb_size=64, train_epochs=1, device="cpu", plugins=[plugin],
                  evaluator=EvaluationPlugin(loggers=[]))
    naive.train(bench.train_stream[0])
    name, param = next(iter(model.named_parameters()))
    shares = plugin.syn_data["old_theta"][name].data.data_ptr() == param.data_ptr()
    importance = sum(float(v.data.abs().sum()) for v in plugin.ewc_data[1].values())
    # the clamp: feed update_ewc_data a large path integral and read the largest importance
    syn = {k: {n: torch.full((4,), -100.0) for n in ("w",)} for k in ("trajectory", "cum_trajectory")}
    syn["new_theta"] = {"w": torch.ones(4)}
    ewc = ({"w": torch.zeros(4)}, {"w": torch.zeros(4)})
    holder = nn.Module()
    holder.w = nn.Parameter(torch.ones(4))
    SynapticIntelligencePlugin.update_ewc_data(holder, ewc, syn, 0.001, set(), 1)
    return {"old_theta_shares_storage_with_parameter_on_cpu": shares,
            "importance_sum_after_one_experience": importance,
            "importance_max_with_a_large_path_integral": float(ewc[1]["w"].max())}


def mas_defect() -> dict:
    from avalanche.training.plugins import MASPlugin
    plugin = MASPlugin()
    plugin.importance = {"w": torch.ones(1)}
    plugin.params = {"w": torch.zeros(1)}
    strategy = SimpleNamespace(clock=SimpleNamespace(train_exp_counter=1), loss=torch.tensor(0.0),
                               model=nn.Linear(1, 1, bias=False))
    try:
        plugin.before_backward(strategy)
        return {"zero_loss": "accepted"}
    except ValueError as error:
        return {"zero_loss": f"raises ValueError: {error}"}


def ewc_scale(epochs: int) -> dict:
    """After ``epochs`` of training: the ratio grows as the model converges (the mean gradient
    vanishes, the per-sample gradients do not)."""
    from avalanche.training.plugins import EWCPlugin
    from bitcl.importance import batch_fisher_sums, layers_of
    tasks, model = _small_setup()
    train = tasks[0][0]
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for epoch in range(epochs):
        for x, y in DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(epoch)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    x, y = train.tensors
    params = dict(model.named_parameters())
    sums = batch_fisher_sums(model.eval(), layers_of(model, params), model, x, y, "empirical")
    per_sample = sum(float(v.sum()) for v in sums.values()) / len(y)
    out = {"per_sample_empirical_fisher_sum": per_sample}
    for batch in (32, 64, 128):
        imp = EWCPlugin(ewc_lambda=1.0).compute_importances(model, nn.CrossEntropyLoss(), opt, train, "cpu", batch)
        total = sum(float(v.data.sum()) for v in imp.values())
        out[f"avalanche_batch_{batch}"] = {"importance_sum": total, "per_sample_over_avalanche": per_sample / total}
    return out


def defects() -> dict:
    out = {"si": si_defects(), "mas": mas_defect(),
           "ewc": {f"after_{e}_epochs": ewc_scale(e) for e in (1, 10)}}
    print(json.dumps(out, indent=2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    env = environment()
    import avalanche
    env.update({"avalanche": avalanche.__version__, "bitcl": bitcl.__version__})
    found = defects()
    write_result("avalanche_defects", {"versions": env, "measured": found})
    if not args.skip_timing:
        protocol = {"benchmark": "split-mnist (embedded 5,000 digits), 5 tasks, task-incremental", "hidden": HIDDEN,
                    "bits": 20, "epochs": 1, "optimizer": "sgd", "lr": LR, "batch_size": BATCH,
                    "fisher_prior": PRIOR, "repeats": args.repeats, "statistic": "min over repeats of training + consolidation seconds "
                    "(bitcl: timing.train_seconds + consolidate_seconds; Avalanche: wall time of its train "
                    "calls); wall_seconds adds data loading, model set-up and bitcl's evaluation"}
        write_result("avalanche", {"versions": env, "protocol": protocol, "paths": timing(args.repeats)})


if __name__ == "__main__":
    main()
