"""Runs every registered method (plus a few option variants) in sequence, in ONE process group.

Used by ``tests/test_distributed.py``: launched once under ``torchrun --nproc_per_node=2``
and once as a plain single process, on the same data and global batches, so the test can
compare the checkpoints of the two runs method by method.

    python tests/dist_equivalence_worker.py DATA.npz OUT_DIR [LABEL,LABEL...]

Writes ``OUT_DIR/<label>/`` (a normal run directory) per run and ``OUT_DIR/status.json``
(rank 0): ``{label: "ran" | "refused: <one-line error>"}``. An unexpected exception on any rank
writes ``OUT_DIR/error-rank<r>.txt`` and ends the process at once, so that torchrun stops the
other rank instead of leaving it waiting in a collective.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import NamedTuple, Optional

import torch
import torch.distributed as dist

torch.set_num_threads(1)

# the methods' own defaults, except: fewer pruning steps (time), and importance batches of 53 so
# that a task's 160 samples end in a global batch of 1, whose share on rank 1 is empty
EDGE = 53
FAST_OPTIONS = {"anpyc": {"prune_first": 20.0, "batch": EDGE}, "ewc": {"batch": EDGE}, "mas": {"batch": EDGE},
                "blip": {"batch": EDGE}, "dlcft": {"batch": EDGE}}
# option variants that take a different code path under DDP (checked in addition to the defaults)
VARIANTS = {
    "ewc-online": ("ewc", {"mode": "online"}),
    "dlcft-all-diagonal": ("dlcft", {"layers": 0, "curvature": "diagonal"}),
    "dlcft-all-kfac": ("dlcft", {"layers": 0, "curvature": "kfac"}),
    "blip-empirical": ("blip", {"fisher": "empirical"}),
}
SCENARIO_RUNS = {"joint-class": ("joint", "class", {}), "si-domain": ("si", "domain", {}),
                 "blip-class": ("blip", "class", {})}
# other backbones: conv has no batch norm; alexnet and resnet18 (at --width 4) have, synchronised over
# ranks (bitcl/models/norm.py): --bn first-task trains the norms on task 0 with the global batch's
# statistics, then freezes them; --bn train keeps training them, here inside DLCFT's torch.func.jvp.
# (The default, --bn auto, is per-task here: norms that learn in every task, so two tasks of the chaos
# described next; first-task checks the same synchronised path in task 0 and the frozen one after.)
# Batch-norm nets on MNIST are chaotic in float32 (a 1e-6 perturbation of a one-process resnet18 run,
# Adam or SGD at lr 0.05, grows to ~1% of a norm's bias within 7 steps; likely many activations tied
# at one exact value crossing a ReLU kink together), and so would be the reordered sums of 2 ranks. So
# these runs see the digits dithered, (255 x + U[0, 1)) / 256, and take small SGD steps (Adam also
# turns the float noise of a zero gradient, a conv bias before a norm, into steps of size lr).
SGD = {"optimizer": "sgd", "lr": 0.005, "bn": "first-task"}
BN_ARCHS = ("alexnet", "resnet18")
ARCH_RUNS = {"blip-conv": ("blip", "conv", {}, {}), "ewc-conv": ("ewc", "conv", {}, {}),
             # dlcft: the random network linearised as it is (its first-task warm-up is refused under torchrun)
             "dlcft-conv-kfac": ("dlcft", "conv", {"layers": 0, "curvature": "kfac", "warmup": "none"}, {}),
             "finetune-alexnet": ("finetune", "alexnet", {}, SGD),
             "blip-resnet18": ("blip", "resnet18", {}, SGD), "ewc-resnet18": ("ewc", "resnet18", {}, SGD),
             "dlcft-resnet18-bn-train": ("dlcft", "resnet18", {"layers": 0, "curvature": "diagonal", "warmup": "none"},
                                         {**SGD, "bn": "train"})}
BATCH = 25  # odd shards on 2 ranks (13 + 12): the uneven-shard path is exercised every step


def not_distributable():
    """finetune declared not distributable: the refusal path, whatever the registry holds."""
    from bitcl.strategies import get_strategy
    return type("NotDistributable", (get_strategy("finetune"),), {"distributable": False})


class Run(NamedTuple):
    method: str
    scenario: str
    arch: str
    options: dict
    strategy_cls: Optional[type] = None  # None: the registered one
    config: Optional[dict] = None  # RunConfig settings beside config_for's
    dithered: bool = False  # train on the dithered digits (see BN_ARCHS)


def plan() -> dict[str, Run]:
    """``{label: Run}``: every registered method (generated from the registry), then the variants."""
    from bitcl.strategies import get_strategy, strategy_names
    runs = {}
    for name in strategy_names():
        cls = get_strategy(name)
        scenario = "task" if "task" in cls.scenarios else cls.scenarios[0]
        runs[name] = Run(name, scenario, "mlp", dict(FAST_OPTIONS.get(name, {})))
    for label, (method, options) in VARIANTS.items():
        runs[label] = Run(method, "task", "mlp", {**FAST_OPTIONS.get(method, {}), **options})
    for label, (method, scenario, options) in SCENARIO_RUNS.items():
        runs[label] = Run(method, scenario, "mlp", {**FAST_OPTIONS.get(method, {}), **options})
    for label, (method, arch, options, config) in ARCH_RUNS.items():
        runs[label] = Run(method, "task", arch, {**FAST_OPTIONS.get(method, {}), **options}, config=config,
                          dithered=arch in BN_ARCHS)
    runs["not-distributable"] = Run("finetune", "task", "mlp", {}, not_distributable())
    return runs


def config_for(run: Run, data: str, out: Path):
    from bitcl.config import RunConfig
    return RunConfig(method=run.method, benchmark="split-mnist", scenario=run.scenario, arch=run.arch, tasks=2,
                     classes=[0, 1, 2, 3], epochs=1, batch_size=BATCH, hidden=[16], width=4, data=data, quiet=True,
                     seed=0, out=str(out), method_options=run.options, **(run.config or {}))


def dithered(path: str):
    """The digits of ``path`` (grey levels 0..255) plus uniform noise below one level, in [0, 1): no two
    pixels equal (fixed seed)."""
    from bitcl.data import ArrayData
    from bitcl.data.sources import load_source
    digits = load_source(path)
    generator = torch.Generator().manual_seed(0)
    return ArrayData(digits.name + "-dithered",
                     *((x * 255 + torch.rand(x.shape, generator=generator)) / 256 if x.is_floating_point() else x
                       for x in (digits.x_train, digits.y_train, digits.x_test, digits.y_test)))


def main(data: str, out_dir: str, only: Optional[list[str]] = None) -> None:
    """Every run of :func:`plan` (``only``: just those labels, for debugging one run)."""
    from bitcl.engine import Engine
    from bitcl.errors import ConfigError
    out = Path(out_dir)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")  # the engines borrow this group; none of them destroys it
    status = {}
    try:
        for label, run in plan().items():
            if only and label not in only:
                continue
            try:
                engine = Engine(config_for(run, data, out / label), strategy_cls=run.strategy_cls,
                                data=dithered(data) if run.dithered else None)
            except ConfigError as error:
                status[label] = f"refused: {error}"
                continue
            try:
                engine.run()
            finally:
                engine.close()
            status[label] = "ran"
            if rank == 0:
                (out / "status.json").write_text(json.dumps(status, indent=1))
    except BaseException:
        (out / f"error-rank{rank}.txt").write_text(f"while running {label}:\n{traceback.format_exc()}")
        sys.stderr.flush()
        os._exit(1)
    if rank == 0:
        (out / "status.json").write_text(json.dumps(status, indent=1))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # see bitcl.cli.exit_process: gloo's thread must not outlive interpreter teardown


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3].split(",") if len(sys.argv) > 3 else None)
