"""Paper-scale backbones: speed ratios (issue 17) and accuracy/forgetting of every method.

    .venv/bin/python benchmarks/bench_backbones.py speed [--device cpu|cuda] [--threads 1]
    .venv/bin/python benchmarks/bench_backbones.py accuracy [--quick]

``speed`` times, in one process, against baselines of the same process:

* BitConv2d forward+backward over nn.Conv2d at the AlexNet's three conv shapes, batch 64
  of 3x32x32 (target <= 1.2);
* the bit projection of every quantised AlexNet tensor after a step, over one SGD step
  (forward, backward, update) of the AlexNet at batch 64 (target <= 0.10);
* end-of-task consolidation (BLIP: per-sample Fisher of every quantised weight, then
  freezing) on 8,000 CIFAR-shaped samples, over 2 training epochs on the same samples at
  batch 64 (target <= 1.0, i.e. at most 2 epochs' time);
* with ``--device cuda``, also absolute training epochs per second of the AlexNet on
  50,000 CIFAR-shaped samples (one epoch timed after a warm-up epoch).

The inputs are random CIFAR-shaped tensors: timing does not depend on pixel values.
Writes benchmarks/results/backbones_speed_<device>.json.

``accuracy`` runs the methods on both backbones on Split-MNIST of data/mnist15k.npz padded to
32x32 (2 tasks of 5 digits, 2 epochs per task, each backbone's defaults), over seeds 0, 1, 2, and
writes benchmarks/results/backbones_accuracy.json: each run, and per backbone, scenario and method
the mean and 95 % t interval of ACC, forgetting and the lowest diagonal entry, and Welch's p of
BLIP's ACC against the method's. Runs go ``--workers`` at a time and are cached in ``--work``
(reused only when made by the same code: resumable). ``--validation 0.1`` evaluates on a 10 %
hold-out of the training digits; ``--archs``, ``--methods``, ``--scenarios`` and ``--seeds``
select a part of the grid. The README's table: ``accuracy --scenarios task``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _env import write_result  # noqa: E402  (imported first: the wall time a result records starts here)
from _timing import paired_ratio  # noqa: E402

from bitcl.models import build_model  # noqa: E402
from bitcl.quant import BitConv2d, bit_states  # noqa: E402
from bitcl.strategies import get_strategy, strategy_names  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ALEXNET_CONVS = ((3, 64, 4, 32), (64, 128, 3, 14), (128, 256, 2, 6))  # c_in, c_out, kernel, input side


def environment(device: str) -> dict:
    """The device the figures come from (``_env.write_result`` adds the CPU, threads, versions and commit)."""
    env = {"threads": torch.get_num_threads(), "device": device}
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    from bitcl.kernels import backend
    env["kernel_backend"] = backend()
    return env


def synchronized(fn, device: str):
    if device != "cuda":
        return fn

    def run():
        fn()
        torch.cuda.synchronize()
    return run


# -- speed ----------------------------------------------------------------------------------
def conv_ratio(device: str) -> dict:
    """BitConv2d fwd+bwd over nn.Conv2d, each AlexNet conv at batch 64, and for the three together."""
    bit_layers, plain_layers, inputs = [], [], []
    for c_in, c_out, k, side in ALEXNET_CONVS:
        bit = BitConv2d(c_in, c_out, k).to(device)
        plain = nn.Conv2d(c_in, c_out, k).to(device)
        plain.load_state_dict({"weight": bit.weight.detach(), "bias": bit.bias.detach()})
        bit_layers.append(bit)
        plain_layers.append(plain)
        inputs.append(torch.randn(64, c_in, side, side, device=device, requires_grad=True))

    def fwd_bwd(layers):
        def run():
            for layer, x in zip(layers, inputs):
                layer.zero_grad(set_to_none=True)
                x.grad = None
                layer(x).sum().backward()
        return synchronized(run, device)

    ratio, bit_s, plain_s = paired_ratio(fwd_bwd(bit_layers), fwd_bwd(plain_layers), rounds=7, inner=5)
    return {"ratio": ratio, "bitconv_seconds": bit_s, "conv_seconds": plain_s, "target": 1.2,
            "shapes": [list(s) for s in ALEXNET_CONVS], "batch": 64}


def alexnet_pair(device: str, classes: int = 10):
    torch.manual_seed(0)
    quant = build_model("alexnet", (3, 32, 32), [classes], "task").to(device)
    flt = build_model("alexnet", (3, 32, 32), [classes], "task", kind="float").to(device)
    return quant, flt


def sgd_step_fn(model, x, y, device):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x, 0), y).backward()
        opt.step()
    return synchronized(step, device)


def projection_ratio(device: str) -> dict:
    """Projection of every quantised AlexNet tensor (random frozen bits) over one SGD step."""
    quant, flt = alexnet_pair(device)
    gen = torch.Generator().manual_seed(0)
    states = [s for _, s in bit_states(quant)]
    for s in states:
        s.freeze(torch.randint(0, 12, s.codes.shape, generator=gen).to(device))
    x, y = torch.randn(64, 3, 32, 32, device=device), torch.randint(0, 10, (64,), device=device)

    def project():
        for s in states:
            s.project_()
    ratio, proj_s, step_s = paired_ratio(synchronized(project, device), sgd_step_fn(flt, x, y, device),
                                         rounds=7, inner=5)
    return {"ratio": ratio, "projection_seconds": proj_s, "sgd_step_seconds": step_s, "target": 0.10,
            "quantised_weights": sum(s.codes.numel() for s in states), "batch": 64}


def consolidation_ratio(device: str, samples: int = 8000, batch: int = 64) -> dict:
    """BLIP's end of task (Fisher over ``samples`` + freezing) over 2 training epochs on them."""
    from bitcl.strategies import make_options
    from bitcl.strategies.context import RunInfo, TaskContext

    torch.manual_seed(0)
    model = build_model("alexnet", (3, 32, 32), [10], "task").to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(samples, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (samples,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    states = [s for _, s in bit_states(model)]

    def epoch():
        model.train()
        for start in range(0, samples, batch):
            xb, yb = x[start:start + batch].to(device), y[start:start + batch].to(device)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb, 0), yb).backward()
            opt.step()
            for s in states:
                s.project_()
        if device == "cuda":
            torch.cuda.synchronize()

    class Ctx(TaskContext):
        def logits(self, inputs):
            return self.model(inputs, 0)

        def importance_batches(self, count, size, purpose):
            u = torch.rand(samples, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
            return [(x[s:s + size].to(device), y[s:s + size].to(device), u[s:s + size])
                    for s in range(0, samples, size)], samples

    blip_cls = get_strategy("blip")
    blip = blip_cls(make_options(blip_cls), model, RunInfo(1, "task", torch.device(device)))
    epoch()  # warm-up (allocator, thread pools)
    start = time.perf_counter()
    epoch()
    epoch()
    two_epochs = time.perf_counter() - start
    start = time.perf_counter()
    blip.end_task(Ctx(model, 0, blip.info))
    if device == "cuda":
        torch.cuda.synchronize()
    consolidate = time.perf_counter() - start
    frozen = sum(s.frozen_bits() for s in states) / sum(s.total_bits() for s in states)
    return {"ratio": consolidate / two_epochs, "consolidate_seconds": consolidate, "two_epochs_seconds": two_epochs,
            "target": 1.0, "samples": samples, "batch": batch, "fisher_batch": blip.options.batch,
            "fisher": blip.options.fisher, "capacity_after": frozen}


def epochs_per_second(device: str, samples: int = 50000, batch: int = 64) -> dict:
    """Training epochs per second of the quantised AlexNet on CIFAR-10-sized data (GPU only)."""
    model = build_model("alexnet", (3, 32, 32), [10], "task").to(device)
    x = torch.randn(samples, 3, 32, 32).pin_memory()
    y = torch.randint(0, 10, (samples,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    states = [s for _, s in bit_states(model)]

    def epoch():
        for start in range(0, samples, batch):
            xb = x[start:start + batch].to(device, non_blocking=True)
            yb = y[start:start + batch].to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb, 0), yb).backward()
            opt.step()
            for s in states:
                s.project_()
        torch.cuda.synchronize()
    epoch()
    start = time.perf_counter()
    epoch()
    seconds = time.perf_counter() - start
    return {"epochs_per_second": 1.0 / seconds, "epoch_seconds": seconds, "samples": samples, "batch": batch}


def speed(args) -> None:
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_backbones: --device cuda but CUDA is not available")
    out = {"device": environment(args.device)}
    out["bitconv_fwd_bwd"] = conv_ratio(args.device)
    print(f"BitConv2d fwd+bwd / nn.Conv2d (AlexNet shapes, batch 64): {out['bitconv_fwd_bwd']['ratio']:.3f}"
          " (target <= 1.2)", flush=True)
    out["projection"] = projection_ratio(args.device)
    print(f"projection / SGD step (AlexNet, batch 64): {out['projection']['ratio']:.4f} (target <= 0.10)", flush=True)
    out["consolidation"] = consolidation_ratio(args.device)
    c = out["consolidation"]
    print(f"BLIP consolidation on 8,000 samples / 2 epochs: {c['ratio']:.3f} (target <= 1.0; "
          f"{c['consolidate_seconds']:.1f}s vs {c['two_epochs_seconds']:.1f}s)", flush=True)
    if args.device == "cuda":
        out["training"] = epochs_per_second(args.device)
        print(f"AlexNet epochs per second (50,000 CIFAR-shaped samples): {out['training']['epochs_per_second']:.3f}")
    write_result(f"backbones_speed_{args.device}", out)  # benchmarks/results/ from a clean tree only

# -- accuracy -------------------------------------------------------------------------------
ACCURACY_METHODS = tuple(strategy_names())  # every method; a job whose scenario it does not support is skipped
ARCHS = ("alexnet", "resnet18")
DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "mnist15k.npz")
# Split-MNIST of the 15,000-digit set (11,997 training digits), padded to 32x32: 2 tasks of 5 digits,
# 2 epochs per task, each backbone's training defaults (bitcl list: chosen by search_backbones.py on
# validation data), --bn auto, batch 64, no dropout, no preset.
PROTOCOL = {"benchmark": "split-mnist", "data": "data/mnist15k.npz", "tasks": 2, "epochs": 2, "pad_to": 32,
            "preset": False}
QUICK = dict(PROTOCOL, epochs=1)


def one_run(arch: str, method: str, scenario: str, seed: int, protocol: dict, validation: float) -> dict:
    """One run of the engine; its figures, its CPU and wall time, and the tasks flagged as not learned."""
    from bitcl.config import RunConfig
    from bitcl.engine import run

    settings = {k: v for k, v in protocol.items() if k != "data"}
    cpu, wall = time.process_time(), time.perf_counter()
    result = run(RunConfig(method=method, arch=arch, data=DATA, scenario=scenario, seed=seed, quiet=True,
                           validation=validation, **settings))
    return {"arch": arch, "method": method, "scenario": scenario, "seed": seed, "acc": result.acc,
            "bwt": result.bwt, "forgetting": result.forgetting, "accuracy_matrix": result.accuracy_matrix,
            "diagonal": [row[t] for t, row in enumerate(result.accuracy_matrix)],
            "epoch_seconds": result.timing["epoch_seconds"], "capacity": result.capacity,
            "not_learned": result.not_learned, "cpu_seconds": time.process_time() - cpu,
            "wall_seconds": time.perf_counter() - wall}


def summaries(runs: list[dict]) -> dict:
    """``[arch][scenario][method]``: the seeds, and the mean, std and 95 % t interval over seeds
    (bitcl.stats) of ACC, forgetting and the lowest diagonal entry (is every task learned?); and per
    method ``blip_vs`` (Welch's p of BLIP's ACC against its ACC, and whether BLIP is significantly
    higher, p < 0.05)."""
    from bitcl.stats import summarize, welch_p

    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["arch"], r["scenario"], r["method"]), []).append(r)
    out: dict = {}
    for (arch, scenario, method), group in groups.items():
        entry = {"seeds": [r["seed"] for r in group], "acc_values": [r["acc"] for r in group]}
        for key, values in (("acc", entry["acc_values"]), ("forgetting", [r["forgetting"] for r in group]),
                            ("min_diagonal", [min(r["diagonal"]) for r in group])):
            entry[key] = summarize(values, key).as_dict()
        entry["cpu_seconds"] = sum(r["cpu_seconds"] for r in group)
        out.setdefault(arch, {}).setdefault(scenario, {})[method] = entry
    for scenarios in out.values():
        for methods in scenarios.values():
            blip = methods.get("blip")
            for method, entry in methods.items():
                if blip is not None and method != "blip":
                    p = welch_p(blip["acc_values"], entry["acc_values"])
                    higher = p is not None and p < 0.05 and blip["acc"]["mean"] > entry["acc"]["mean"]
                    entry["blip_vs"] = {"acc_p_welch": p, "blip_significantly_higher": higher}
    return out


def job_name(arch: str, method: str, scenario: str, seed: int) -> str:
    return f"{arch}-{scenario}-{method}-seed{seed}"


def table_jobs(archs, methods, scenarios, seeds) -> list[tuple[str, str, str, int]]:
    """(arch, method, scenario, seed) of every run of the table; a method is not run in a scenario it
    does not support (ft-fix is task-incremental only), and a line says so."""
    supported = {method: get_strategy(method).scenarios for method in methods}
    for method in methods:
        unsupported = [s for s in scenarios if s not in supported[method]]
        if unsupported:
            print(f"{method}: not run in the {', '.join(unsupported)} scenario (the method does not support it)")
    return [(arch, method, scenario, seed) for arch in archs for scenario in scenarios for method in methods
            for seed in seeds if scenario in supported[method]]


def cached_run(work: str, job: tuple, protocol: dict, validation: float) -> dict:
    """One run of the table, from ``work`` when a finished one was made by the same protocol and the
    same code (``_env.code_version``), else run now and cached there (the table is resumable)."""
    from _env import code_version

    torch.set_num_threads(1)
    path = os.path.join(work, job_name(*job) + ".json")
    made_by = {"job": list(job), "protocol": protocol, "validation": validation, "code": code_version()}
    if os.path.isfile(path):
        cached = json.load(open(path))
        if cached.get("made_by") == made_by:
            return cached["run"]
    entry = one_run(*job, protocol, validation)
    os.makedirs(work, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump({"made_by": made_by, "run": entry}, f)
    os.replace(path + ".tmp", path)
    return entry


def accuracy(args) -> None:
    """Every method on both backbones, ``--seeds`` seeds, in ``--scenarios``: one entry per run and the
    per-group summaries. Runs go ``--workers`` at a time (one torch thread each) and are cached in
    ``--work`` (reused only when made by the same code), so an interrupted table resumes.
    ``--validation 0.1`` evaluates on a 10 % hold-out of each class's training digits instead of the
    test split: the mode in which the backbones' defaults were chosen."""
    import multiprocessing

    protocol = QUICK if args.quick else PROTOCOL
    name = ("backbones_accuracy" + (f"_{args.part}" if args.part else "") + ("_quick" if args.quick else "")
            + ("_validation" if args.validation else ""))
    work = args.work or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", name)
    jobs = table_jobs(args.archs, args.methods, args.scenarios, args.seeds)
    runs = []
    with multiprocessing.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
        pending = [pool.apply_async(cached_run, (work, job, protocol, args.validation)) for job in jobs]
        for job, waiting in zip(jobs, pending):
            entry = waiting.get()
            runs.append(entry)
            flagged = ", ".join(f"T{f['task']}" for f in entry["not_learned"]) or "-"
            epoch = sum(entry["epoch_seconds"]) / max(len(entry["epoch_seconds"]), 1)
            print(f"{job_name(*job):32s} diagonal {' '.join(f'{a:.4f}' for a in entry['diagonal'])}  ACC "
                  f"{entry['acc']:.4f}  forgetting {entry['forgetting']:.4f}  not learned {flagged}  epoch "
                  f"{epoch:.0f}s  ({entry['cpu_seconds']:.0f}s CPU)", flush=True)
    out = {"protocol": {**protocol, "validation": args.validation, "threads": 1, "workers": args.workers,
                        "settings": "the defaults of each backbone (bitcl list) and --bn auto; no preset"},
           "command": " ".join(["python", "benchmarks/bench_backbones.py"] + sys.argv[1:]), "runs": runs,
           "summaries": summaries(runs), "total_cpu_seconds": sum(r["cpu_seconds"] for r in runs)}
    write_result(name, out)


def table(args) -> None:
    """Print the Markdown table of a committed backbones_accuracy.json, every figure with its marker
    (docs/results.md quotes it; tests/test_readme_figures.py checks each number against the file)."""
    name = "backbones_accuracy" + (f"_{args.part}" if args.part else "") + ".json"
    path = os.path.join(RESULTS, name)
    if not os.path.isfile(path):
        sys.exit(f"bench_backbones table: {path}: no such result (run `accuracy` with the same --part first)")
    data = json.load(open(path))

    def fig(path: str, value: float, digits: int) -> str:
        return f"{value:.{digits}f}<!-- fig: {name} {path} -->"

    def interval(path: str, summary: dict) -> str:
        if summary["low"] is None:  # one seed: no interval
            return f"{fig(path + '.mean', summary['mean'], 4)} (1 seed)"
        return (f"{fig(path + '.mean', summary['mean'], 4)} [{fig(path + '.low', summary['low'], 4)}, "
                f"{fig(path + '.high', summary['high'], 4)}]")

    print("| backbone | method | ACC [95 % t] | forgetting [95 % t] | lowest diagonal [95 % t] | BLIP's ACC vs this: "
          "Welch p |")
    print("|---|---|---|---|---|---|")
    for arch, scenarios in data["summaries"].items():
        for scenario, methods in scenarios.items():
            for method, entry in methods.items():
                at = f"summaries.{arch}.{scenario}.{method}"
                versus = entry.get("blip_vs")
                p = "–" if versus is None or versus["acc_p_welch"] is None else fig(
                    at + ".blip_vs.acc_p_welch", versus["acc_p_welch"], 2)
                print(f"| {arch} | `{method}` | {interval(at + '.acc', entry['acc'])} | "
                      f"{interval(at + '.forgetting', entry['forgetting'])} | "
                      f"{interval(at + '.min_diagonal', entry['min_diagonal'])} | {p} |")


def part_name(value: str) -> str:
    """``--part``: a suffix of the result's file name, so letters, digits, ``_`` and ``-`` only."""
    if not value.replace("_", "").replace("-", "").isalnum():
        raise argparse.ArgumentTypeError(f"--part must be letters, digits, _ or -, got {value!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line (``speed``, ``accuracy``, ``table``); ``--part``'s default is None, not "",
    because argparse passes a string default through ``type`` and ``part_name`` refuses ""."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    sp.add_argument("--threads", type=int, default=1)
    ap = sub.add_parser("accuracy")
    ap.add_argument("--quick", action="store_true", help="1 epoch per task (not for quoting)")
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    ap.add_argument("--methods", nargs="+", default=list(ACCURACY_METHODS), choices=ACCURACY_METHODS)
    ap.add_argument("--scenarios", nargs="+", default=["task", "class"], choices=("task", "class"))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=2, help="runs at a time, one torch thread each")
    ap.add_argument("--part", default=None, type=part_name, help="write backbones_accuracy_PART.json: a table made in pieces "
                    "(e.g. --scenarios class --archs alexnet --part class_alexnet) keeps each piece's file")
    ap.add_argument("--work", default=None, help="run cache (default benchmarks/out/backbones_accuracy*)")
    ap.add_argument("--validation", type=float, default=0.0,
                    help="evaluate on this fraction of the training digits held out (choosing defaults: 0.1)")
    tp = sub.add_parser("table", help="print the Markdown table of benchmarks/results/backbones_accuracy.json")
    tp.add_argument("--part", default=None, type=part_name, help="the table of backbones_accuracy_PART.json instead")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    {"speed": speed, "accuracy": accuracy, "table": table}[args.what](args)


if __name__ == "__main__":
    main()
