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

``accuracy`` runs every method on both backbones on Split-MNIST of data/mnist15k.npz padded to
32x32 (2 tasks of 5 digits, 2 epochs per task), task- and class-incremental, over seeds 0, 1, 2,
and writes benchmarks/results/backbones_accuracy.json (each run, and per group the mean and 95 %
t interval of ACC, forgetting and the lowest diagonal entry). ``--validation 0.1`` evaluates on a
10 % hold-out of the training digits (how the defaults were chosen); ``--archs``, ``--methods``,
``--scenarios`` and ``--seeds`` select a part of the grid.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _timing import paired_ratio  # noqa: E402

from bitcl.models import build_model  # noqa: E402
from bitcl.quant import BitConv2d, bit_states  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ALEXNET_CONVS = ((3, 64, 4, 32), (64, 128, 3, 14), (128, 256, 2, 6))  # c_in, c_out, kernel, input side


def environment(device: str) -> dict:
    """torch version, threads, CPU (and GPU) model and the git commit the figures come from."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except OSError:
        commit = "unknown"
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu, "commit": commit,
           "python": platform.python_version(), "device": device}
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    from bitcl.kernels import backend
    env["kernel_backend"] = backend()
    return env


def write(name: str, payload: dict) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    return path


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
    from bitcl.strategies import get_strategy, make_options
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
    out = {"environment": environment(args.device)}
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
    print("wrote", write(f"backbones_speed_{args.device}.json", out))

# -- accuracy -------------------------------------------------------------------------------
ACCURACY_METHODS = ("blip", "ewc", "si", "mas", "anpyc", "dlcft", "finetune")
ARCHS = ("alexnet", "resnet18")
DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "mnist15k.npz")
# Split-MNIST of the 15,000-digit set (11,997 training digits), padded to 32x32: 2 tasks of 5 digits,
# 2 epochs per task, the engine's defaults otherwise (Adam, lr 3e-3 cosine-annealed per task, batch 64,
# --bn first-task with the running statistics recomputed at the end of each task, no dropout).
PROTOCOL = {"benchmark": "split-mnist", "data": "data/mnist15k.npz", "tasks": 2, "epochs": 2, "pad_to": 32}
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


def summaries(runs: list[dict]) -> list[dict]:
    """Per (arch, scenario, method): mean, std and 95 % t interval over seeds (bitcl.stats) of ACC,
    forgetting and the lowest diagonal entry (is every task learned?)."""
    from bitcl.stats import summarize

    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["arch"], r["scenario"], r["method"]), []).append(r)
    out = []
    for (arch, scenario, method), group in groups.items():
        entry = {"arch": arch, "scenario": scenario, "method": method, "seeds": [r["seed"] for r in group]}
        for key, values in (("acc", [r["acc"] for r in group]), ("forgetting", [r["forgetting"] for r in group]),
                            ("min_diagonal", [min(r["diagonal"]) for r in group])):
            entry[key] = summarize(values, key).as_dict()
        entry["cpu_seconds"] = sum(r["cpu_seconds"] for r in group)
        out.append(entry)
    return out


def accuracy(args) -> None:
    """Every method on both backbones, ``--seeds`` seeds, task- and class-incremental; one entry per run
    (written after every run, so a partial table survives an interruption) and the per-group summaries.
    ``--validation 0.1`` evaluates on a 10 % hold-out of each class's training digits instead of the
    test split: the mode in which the backbones' defaults were chosen."""
    from _env import write_result

    torch.set_num_threads(1)
    protocol = QUICK if args.quick else PROTOCOL
    name = "backbones_accuracy" + ("_quick" if args.quick else "") + ("_validation" if args.validation else "")
    out = {"protocol": {**protocol, "validation": args.validation, "threads": 1},
           "command": " ".join(["benchmarks/bench_backbones.py"] + sys.argv[1:]), "runs": []}
    for arch in args.archs:
        for scenario in args.scenarios:
            for method in args.methods:
                for seed in args.seeds:
                    entry = one_run(arch, method, scenario, seed, protocol, args.validation)
                    out["runs"].append(entry)
                    flagged = ", ".join(f"T{f['task']}" for f in entry["not_learned"]) or "-"
                    print(f"{arch:9s} {scenario:6s} {method:9s} seed {seed}  diagonal "
                          f"{' '.join(f'{a:.4f}' for a in entry['diagonal'])}  ACC {entry['acc']:.4f}  forgetting "
                          f"{entry['forgetting']:.4f}  not learned {flagged}  epoch {sum(entry['epoch_seconds']) / len(entry['epoch_seconds']):.0f}s  "
                          f"({entry['cpu_seconds']:.0f}s CPU)", flush=True)
                    out["summaries"] = summaries(out["runs"])
                    out["total_cpu_seconds"] = sum(r["cpu_seconds"] for r in out["runs"])
                    path = write_result(name, out)
    print("wrote", path)


def main() -> None:
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
    ap.add_argument("--validation", type=float, default=0.0,
                    help="evaluate on this fraction of the training digits held out (choosing defaults: 0.1)")
    args = parser.parse_args()
    if args.what == "speed":
        speed(args)
    else:
        accuracy(args)


if __name__ == "__main__":
    main()
