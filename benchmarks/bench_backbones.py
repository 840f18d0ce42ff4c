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

``accuracy`` runs every method on both backbones on MNIST padded to 32x32 (the data
here), with the reduced protocol stated in the JSON, and writes
benchmarks/results/backbones_accuracy.json.
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
PROTOCOL = {"benchmark": "split-mnist", "scenario": "task", "tasks": 5, "epochs": 2, "batch_size": 64, "lr": 1e-3,
            "optimizer": "adam", "pad_to": 32, "bn": "first-task", "seed": 0,
            "train_per_digit": 250, "test_per_digit": 100}
QUICK = dict(PROTOCOL, epochs=1, train_per_digit=20, test_per_digit=10)


def padded_mnist_subset(path: str, protocol: dict) -> str:
    """A class-balanced subset of data/mnist15k.npz (seed 0), written to ``path``."""
    import numpy as np
    source = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "mnist15k.npz")
    with np.load(source) as f:
        x, y, train = f["x"], f["y"], f["train"]
    rng = np.random.default_rng(0)
    keep = []
    for digit in range(10):
        keep += list(rng.choice(np.flatnonzero(train & (y == digit)), protocol["train_per_digit"], replace=False))
        keep += list(rng.choice(np.flatnonzero(~train & (y == digit)), protocol["test_per_digit"], replace=False))
    keep = np.sort(np.array(keep))
    np.savez(path, x=x[keep], y=y[keep], train=train[keep])
    return path


def accuracy(args) -> None:
    """Every method on both backbones, the reduced protocol above; one JSON entry per run."""
    import tempfile

    from bitcl.config import RunConfig
    from bitcl.engine import run

    torch.set_num_threads(1)
    protocol = QUICK if args.quick else PROTOCOL
    settings = {k: v for k, v in protocol.items() if k not in ("train_per_digit", "test_per_digit")}
    out = {"environment": environment("cpu"), "protocol": protocol,
           "command": "benchmarks/bench_backbones.py accuracy" + (" --quick" if args.quick else ""), "runs": []}
    name = "backbones_accuracy_quick.json" if args.quick else "backbones_accuracy.json"
    with tempfile.TemporaryDirectory() as tmp:
        data = padded_mnist_subset(os.path.join(tmp, "mnist_subset.npz"), protocol)
        for arch in ("alexnet", "resnet18"):
            for method in ACCURACY_METHODS:
                cpu, wall = time.process_time(), time.perf_counter()
                result = run(RunConfig(method=method, arch=arch, data=data, quiet=True, **settings))
                entry = {"arch": arch, "method": method, "acc": result.acc, "bwt": result.bwt,
                         "forgetting": result.forgetting, "accuracy_matrix": result.accuracy_matrix,
                         "capacity": result.capacity, "cpu_seconds": time.process_time() - cpu,
                         "wall_seconds": time.perf_counter() - wall}
                out["runs"].append(entry)
                print(f"{arch:9s} {method:9s} ACC {entry['acc']:.4f}  BWT {entry['bwt']:+.4f}  forgetting "
                      f"{entry['forgetting']:.4f}  ({entry['cpu_seconds']:.0f}s CPU)", flush=True)
                write(name, out)  # after every run: a partial table survives an interruption
    out["total_cpu_seconds"] = sum(r["cpu_seconds"] for r in out["runs"])
    print("wrote", write(name, out))
    if not args.quick:
        plot_accuracy(out)


def plot_accuracy(out: dict) -> None:
    """docs/backbones_accuracy.png: ACC and forgetting per method, one panel per backbone."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, arch in zip(axes, ("alexnet", "resnet18")):
        runs = [r for r in out["runs"] if r["arch"] == arch]
        pos = range(len(runs))
        ax.bar([p - 0.2 for p in pos], [r["acc"] for r in runs], 0.4, label="ACC")
        ax.bar([p + 0.2 for p in pos], [r["forgetting"] for r in runs], 0.4, label="forgetting")
        ax.set_xticks(list(pos), [r["method"] for r in runs], rotation=30)
        ax.set_title(f"{arch}: Split-MNIST padded to 32x32, task-incremental")
        ax.set_ylim(0, 1)
    axes[0].legend()
    fig.tight_layout()
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "backbones_accuracy.png")
    fig.savefig(path, dpi=110)
    print("wrote", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    sp.add_argument("--threads", type=int, default=1)
    ap = sub.add_parser("accuracy")
    ap.add_argument("--quick", action="store_true", help="a smoke-sized protocol (not for quoting)")
    args = parser.parse_args()
    if args.what == "speed":
        speed(args)
    else:
        accuracy(args)


if __name__ == "__main__":
    main()
