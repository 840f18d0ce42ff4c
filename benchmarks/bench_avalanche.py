"""bitcl where users already work: the same BLIP run through the CLI engine, bitcl.fit and Avalanche.

Part 1 (benchmarks/results/avalanche.json): time of BLIP on Split-MNIST (embedded 5,000
digits, 5 tasks, task-incremental, MLP 784-256-heads, 20-bit codes, 1 epoch, SGD lr 0.05,
batch 64, constant lr) through (a) ``bitcl.engine.run`` (the CLI path, the baseline),
(b) ``bitcl.fit`` on TensorDatasets, (c) ``bitcl.fit`` on DataLoaders, (d) Avalanche ``Naive``
with ``BLIPPlugin``, (e) the same ``Naive`` without it and (f) ``Naive`` with a plugin that does
nothing (Avalanche's own cost of calling a plugin's hooks at every step, which any plugin pays). The statistic is training +
consolidation time (evaluation and set-up excluded) in CPU seconds of this process: bitcl's
runner times its phases with ``time.perf_counter``, which reads ``time.process_time`` while a
path is timed (:func:`cpu_clock`), so a busy shared machine does not add its waiting to one
path and not another. ``--repeats`` rounds each run every path once, the order rotated from
round to round; per path the median and the minimum are reported, and its ratio to the CLI
path is the median over rounds of the ratio within the round (paths of one round share the
machine's load), with a distribution-free 95 % interval for the plugin's medians: on these shared
virtual machines two identical paths differ by a fifth or more in single rounds, so the verdict
against the 1.15 target (``blip_plugin_against_target``) is "undecided" unless the interval
says. Wall times of each whole call (set-up and evaluation included) and the load average of
each round are recorded too, and the share of the CLI loop that is BLIP's
consolidation (Fisher and freezing), work that Naive without the plugin never does. The plugin
path's own consolidation is timed too (its ``after_training_exp``), so its cost over Naive splits
into that consolidation, Avalanche's cost of calling any plugin (path f) and the rest (bitcl's hooks,
the projection after every step); ``--more-epochs``
repeats the whole timing at more epochs per task (``paths_by_epochs``), where the once-per-task
consolidation weighs less.

Part 2 (benchmarks/results/avalanche_defects.json): the behaviour of Avalanche 0.6's own EWC,
SI and MAS plugins that issue 18 describes, measured here:
* SI: whether its stored "old" weights share memory with the parameters on CPU, and the
  importance it ends an experience with; the clamp of its importance;
* MAS: what its penalty hook does when the task loss is exactly zero;
* EWC: its importance (squared mean-minibatch gradient, true labels) against the per-sample
  empirical Fisher of the same model and data (bitcl's ``--fisher empirical``).

Run:  nice -n 5 .venv/bin/python benchmarks/bench_avalanche.py [--repeats 15]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
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
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin  # noqa: E402
from bitcl.api import benchmark_tasks, fit  # noqa: E402
from bitcl.config import RunConfig  # noqa: E402
from bitcl.engine import run as engine_run  # noqa: E402
from bitcl.models import build_model  # noqa: E402
from _env import write_result  # noqa: E402

HIDDEN, LR, BATCH, PRIOR = 256, 0.05, 64, 1e-8
PLUGIN_TARGET = 1.15  # issue 25: Naive + BLIPPlugin over Naive alone
FIT_TARGETS = {"fit_datasets": 1.05, "fit_dataloaders": 1.10}  # issue 25: bitcl.fit over the CLI loop


def median_interval(values, level: float = 0.95) -> list[float]:
    """Distribution-free interval for the median of ``values`` (order statistics: the ranks j and
    n + 1 - j with P(Binomial(n, 1/2) < j) <= (1 - level) / 2), so a claim about a ratio's median
    carries the spread of its rounds; the whole range when there are too few values for ``level``."""
    x, n = sorted(values), len(values)
    j, tail = 0, 0.0
    while j < n // 2 and tail + math.comb(n, j) / 2 ** n <= (1 - level) / 2:
        tail += math.comb(n, j) / 2 ** n
        j += 1
    j = max(j, 1)
    return [x[j - 1], x[n - j]]


def against_target(interval: list[float], target: float = PLUGIN_TARGET) -> str:
    """"within" when the whole interval is at or below ``target``, "above" when all of it is above,
    else "undecided" (the rounds do not tell)."""
    return "within" if interval[1] <= target else "above" if interval[0] > target else "undecided"


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


WALL = time.perf_counter  # the real wall clock, kept while cpu_clock() swaps time.perf_counter


@contextlib.contextmanager
def cpu_clock():
    """``time.perf_counter`` reads this process's CPU time (``time.process_time``) inside the block:
    the phase timings bitcl's runner records (``timing.train_seconds``...) become CPU seconds."""
    time.perf_counter = time.process_time
    try:
        yield
    finally:
        time.perf_counter = WALL


def _loop_seconds(result) -> float:
    """Training plus consolidation of every task (the per-task evaluation of all tasks excluded)."""
    return sum(result.timing["train_seconds"]) + sum(result.timing["consolidate_seconds"])


CONSOLIDATION: list[float] = []  # the CLI path's consolidation seconds (BLIP's Fisher and freezing), per call
PLUGIN_CONSOLIDATION: list[float] = []  # the same work inside BLIPPlugin (its after_training_exp), per call


class TimedBLIPPlugin(bav.BLIPPlugin):
    """BLIPPlugin whose end-of-experience work (Fisher and freezing) is timed in CPU seconds, so the
    plugin's cost splits into consolidation (what the CLI's runner does too) and the per-step hooks."""

    def after_training_exp(self, strategy, **kwargs):
        start = time.process_time()
        super().after_training_exp(strategy, **kwargs)
        PLUGIN_CONSOLIDATION[-1] += time.process_time() - start


class EmptyPlugin(SupervisedPlugin):
    """A plugin that does nothing: what Avalanche's loop costs for calling a plugin's hooks (its
    ``trigger_plugins`` at every hook point of every step), which BLIPPlugin pays like any plugin."""


def run_cli_path(tasks, epochs: int):
    config = RunConfig(method="blip", benchmark="split-mnist", scenario="task", epochs=epochs, batch_size=BATCH, lr=LR,
                       optimizer="sgd", lr_schedule="none", hidden=[HIDDEN], seed=0, quiet=True,
                       method_options={"fisher_prior": PRIOR})
    start = WALL()
    with cpu_clock():
        result = engine_run(config)
    CONSOLIDATION.append(sum(result.timing["consolidate_seconds"]))
    return WALL() - start, _loop_seconds(result), result.acc


def run_fit(tasks, loaders: bool, epochs: int):
    data = [(DataLoader(tr, batch_size=BATCH, shuffle=True), DataLoader(te, batch_size=1000)) for tr, te in tasks] \
        if loaders else tasks
    model = _model()
    start = WALL()
    with cpu_clock():
        result = fit(model, data, "blip", options={"fisher_prior": PRIOR}, optimizer="sgd", lr=LR,
                     lr_schedule="none", batch_size=BATCH, epochs=epochs, seed=0)
    return WALL() - start, _loop_seconds(result), result.acc


def run_avalanche(tasks, epochs: int, plugin: str = "blip"):
    """Avalanche ``Naive`` over the tasks with ``plugin``: ``"blip"`` (TimedBLIPPlugin), ``"empty"``
    (EmptyPlugin) or ``"none"``."""
    bench = tensors_benchmark(train_tensors=[tr.tensors for tr, _ in tasks], test_tensors=[te.tensors for _, te in tasks],
                              task_labels=list(range(len(tasks))), complete_test_set_only=False)
    model = Heads(_model())
    naive = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=LR), criterion=nn.CrossEntropyLoss(),
                  train_mb_size=BATCH, train_epochs=epochs, eval_mb_size=1000, device="cpu",
                  plugins={"blip": lambda: [TimedBLIPPlugin(fisher_prior=PRIOR)], "empty": lambda: [EmptyPlugin()],
                           "none": list}[plugin](),
                  evaluator=EvaluationPlugin(loggers=[]))
    if plugin == "blip":
        PLUGIN_CONSOLIDATION.append(0.0)
    start, cpu_start = WALL(), time.process_time()
    for experience in bench.train_stream:
        naive.train(experience)
    # training and consolidation; Avalanche's evaluation not run
    seconds, cpu_seconds = WALL() - start, time.process_time() - cpu_start
    with torch.no_grad():
        acc = sum(float((model(te.tensors[0], torch.full((len(te),), t)).argmax(1) == te.tensors[1]).float().mean())
                  for t, (_, te) in enumerate(tasks)) / len(tasks)
    return seconds, cpu_seconds, acc


def timing(repeats: int, epochs: int = 1) -> dict:
    tasks = benchmark_tasks("split-mnist", scenario="task", seed=0)
    paths = {"cli_engine": lambda: run_cli_path(tasks, epochs), "fit_datasets": lambda: run_fit(tasks, False, epochs),
             "fit_dataloaders": lambda: run_fit(tasks, True, epochs),
             "avalanche_blip_plugin": lambda: run_avalanche(tasks, epochs),
             "avalanche_naive_no_plugin": lambda: run_avalanche(tasks, epochs, plugin="none"),
             "avalanche_naive_empty_plugin": lambda: run_avalanche(tasks, epochs, plugin="empty")}
    names = list(paths)
    runs = {name: [] for name in paths}
    for name, path in paths.items():  # warm-up: imports, compiled kernels, dynamo's first optimizer
        path()
    load = []
    CONSOLIDATION.clear()
    PLUGIN_CONSOLIDATION.clear()
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotated: no path always runs first
            runs[name].append(paths[name]())
        load.append(os.getloadavg()[0])

    def loops(name):
        return [loop for _, loop, _ in runs[name]]

    def ratios(name, base):  # the within-round ratios
        return [a / b for a, b in zip(loops(name), loops(base))]

    def ratio(name, base):  # median over rounds of the within-round ratio
        return statistics.median(ratios(name, base))

    out = {}
    for name, values in runs.items():
        out[name] = {"wall_seconds": [w for w, _, _ in values], "loop_cpu_seconds": loops(name),
                     "median_loop_cpu_seconds": statistics.median(loops(name)),
                     "best_loop_cpu_seconds": min(loops(name)), "ratio_to_cli": ratio(name, "cli_engine"),
                     "ratio_to_cli_interval": median_interval(ratios(name, "cli_engine")),
                     "ratio_of_best_to_cli": min(loops(name)) / min(loops("cli_engine")),
                     "acc": [a for _, _, a in values]}
        print(f"{name:28s} loop CPU median {out[name]['median_loop_cpu_seconds']:6.3f}s "
              f"min {out[name]['best_loop_cpu_seconds']:6.3f}s  x{out[name]['ratio_to_cli']:5.2f} of the CLI path "
              f"(x{out[name]['ratio_of_best_to_cli']:5.2f} by minima)  ACC {values[-1][2]:.4f}")
    for name, target in FIT_TARGETS.items():
        out[name]["against_target"] = against_target(out[name]["ratio_to_cli_interval"], target)
    # the plugin's own cost, against the same Avalanche loop without it (Avalanche's overhead is
    # avalanche_naive_no_plugin's ratio_to_cli)
    out["blip_plugin_over_naive"] = ratio("avalanche_blip_plugin", "avalanche_naive_no_plugin")
    out["blip_plugin_over_naive_interval"] = median_interval(ratios("avalanche_blip_plugin", "avalanche_naive_no_plugin"))
    out["blip_plugin_against_target"] = against_target(out["blip_plugin_over_naive_interval"])
    out["blip_plugin_over_naive_by_minima"] = (min(loops("avalanche_blip_plugin"))
                                               / min(loops("avalanche_naive_no_plugin")))
    # what BLIP adds to any training loop (the CLI's consolidation, in its loop's CPU seconds): a floor
    # for blip_plugin_over_naive, since Naive without the plugin consolidates nothing
    out["cli_consolidation_share"] = statistics.median(c / loop for c, loop in zip(CONSOLIDATION, loops("cli_engine")))
    # the plugin's cost split in two: its consolidation (Fisher and freezing, the work of the CLI's
    # end_task, which Naive alone never does) and everything else it adds (hooks, projection after
    # every step), each over Naive alone in the same round
    with_plugin, naive = loops("avalanche_blip_plugin"), loops("avalanche_naive_no_plugin")
    out["plugin_consolidation_over_naive"] = statistics.median(
        c / b for c, b in zip(PLUGIN_CONSOLIDATION, naive))  # one entry per timed plugin call, in order
    without = [(a - c) / b for a, c, b in zip(with_plugin, PLUGIN_CONSOLIDATION, naive)]
    out["blip_plugin_over_naive_without_consolidation"] = statistics.median(without)
    out["blip_plugin_over_naive_without_consolidation_interval"] = median_interval(without)
    # Avalanche's own cost of having a plugin at all (hook dispatch at every step), over Naive alone
    out["empty_plugin_over_naive"] = ratio("avalanche_naive_empty_plugin", "avalanche_naive_no_plugin")
    out["empty_plugin_over_naive_interval"] = median_interval(ratios("avalanche_naive_empty_plugin",
                                                                     "avalanche_naive_no_plugin"))
    out["load_average_per_round"] = load
    low, high = out["blip_plugin_over_naive_interval"]
    print(f"BLIPPlugin / Naive without it: x{out['blip_plugin_over_naive']:.3f} "
          f"(95% interval {low:.3f}..{high:.3f}: {out['blip_plugin_against_target']} x{PLUGIN_TARGET}) "
          f"(x{out['blip_plugin_over_naive_by_minima']:.3f} by minima); consolidation is "
          f"{out['cli_consolidation_share']:.3f} of the CLI loop; without its consolidation "
          f"x{out['blip_plugin_over_naive_without_consolidation']:.3f} (consolidation "
          f"{out['plugin_consolidation_over_naive']:.3f} of Naive); a plugin doing nothing "
          f"x{out['empty_plugin_over_naive']:.3f}; load average per round {load}")
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
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds of every path")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--more-epochs", type=int, nargs="*", default=[5, 10],
                        help="also time every path at these epochs per task (paths_by_epochs): BLIP's "
                             "consolidation is once per task, so its share falls as training grows")
    args = parser.parse_args()
    env = environment()
    import avalanche
    env.update({"avalanche": avalanche.__version__, "bitcl": bitcl.__version__})
    found = defects()
    write_result("avalanche_defects", {"versions": env, "measured": found})
    if not args.skip_timing:
        protocol = {"benchmark": "split-mnist (embedded 5,000 digits), 5 tasks, task-incremental", "hidden": HIDDEN,
                    "bits": 20, "epochs": 1, "more_epochs": args.more_epochs, "optimizer": "sgd", "lr": LR, "batch_size": BATCH,
                    "fisher_prior": PRIOR, "repeats": args.repeats,
                    "clock": "CPU seconds of this process (time.process_time) for training + consolidation "
                             "(bitcl: timing.train_seconds + consolidate_seconds, timed with that clock; "
                             "Avalanche: its train calls); wall_seconds: wall time of each whole call, with "
                             "data loading, model set-up and bitcl's evaluation",
                    "rounds": "after one warm-up call of every path, each round runs every path once, the order "
                              "rotated by one path per round",
                    "statistic": "per path: median and min over rounds (median_loop_cpu_seconds, "
                                 "best_loop_cpu_seconds); ratio_to_cli and blip_plugin_over_naive: median over "
                                 "rounds of the within-round ratio; ratio_of_best_to_cli and "
                                 "blip_plugin_over_naive_by_minima: ratio of the minima; cli_consolidation_share: median over "
                                 "rounds of the CLI path's consolidation seconds over its loop seconds; "
                                 "plugin_consolidation_over_naive and blip_plugin_over_naive_without_consolidation: "
                                 "the plugin's end-of-experience CPU seconds (Fisher and freezing) over Naive's "
                                 "loop, and the plugin path's loop less them over Naive's, medians over rounds; "
                                 "empty_plugin_over_naive: Naive with a plugin that does nothing over Naive alone "
                                 "(Avalanche's own cost of any plugin), median over rounds; *_interval: a "
                                 "distribution-free 95% interval for that median (order statistics of the "
                                 "rounds' ratios); blip_plugin_against_target: 'within' when that interval "
                                 "of blip_plugin_over_naive lies at or below plugin_target, 'above' when above "
                                 "it, else 'undecided'; per path, ratio_to_cli_interval: the same interval for "
                                 "ratio_to_cli, and for the fit paths against_target: that verdict against "
                                 "fit_targets",
                    "plugin_target": PLUGIN_TARGET, "fit_targets": FIT_TARGETS}
        paths = timing(args.repeats)
        by_epochs = {str(e): timing(args.repeats, e) for e in args.more_epochs}
        write_result("avalanche", {"versions": env, "protocol": protocol, "paths": paths,
                                   "paths_by_epochs": by_epochs})


if __name__ == "__main__":
    main()
