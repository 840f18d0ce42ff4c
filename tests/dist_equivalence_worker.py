"""Runs every registered method (plus a few option variants) in sequence, in ONE process group.

Used by ``tests/test_distributed.py``: launched once under ``torchrun --nproc_per_node=2``
and once as a plain single process, on the same data and global batches, so the test can
compare the checkpoints of the two runs method by method.

    python tests/dist_equivalence_worker.py DATA.npz OUT_DIR

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

import torch
import torch.distributed as dist

torch.set_num_threads(1)

# the methods' own defaults, except: fewer pruning steps (time), and importance batches of 53 so
# that a task's 160 samples end in a global batch of 1, whose share on rank 1 is empty
EDGE = 53
FAST_OPTIONS = {"anpyc": {"prune_first": 20.0, "batch": EDGE}, "ewc": {"batch": EDGE}, "mas": {"batch": EDGE},
                "blip": {"fisher_batch": EDGE}, "dlcft": {"batch": EDGE}}
# option variants that take a different code path under DDP (checked in addition to the defaults)
VARIANTS = {
    "ewc-online": ("ewc", {"mode": "online"}),
    "dlcft-all-diagonal": ("dlcft", {"layers": 0, "curvature": "diagonal"}),
    "dlcft-all-kfac": ("dlcft", {"layers": 0, "curvature": "kfac"}),
    "blip-empirical": ("blip", {"fisher": "empirical"}),
}
SCENARIO_RUNS = {"joint-class": ("joint", "class", {}), "si-domain": ("si", "domain", {}),
                 "blip-class": ("blip", "class", {})}
# other backbones: conv has no batch norm (must match), alexnet has (must be refused up front)
ARCH_RUNS = {"blip-conv": ("blip", "conv", {}), "ewc-conv": ("ewc", "conv", {}),
             "dlcft-conv-kfac": ("dlcft", "conv", {"layers": 0, "curvature": "kfac"}),
             "finetune-alexnet": ("finetune", "alexnet", {})}
BATCH = 25  # odd shards on 2 ranks (13 + 12): the uneven-shard path is exercised every step


def not_distributable():
    """finetune declared not distributable: the refusal path, whatever the registry holds."""
    from bitcl.strategies import get_strategy
    return type("NotDistributable", (get_strategy("finetune"),), {"distributable": False})


def plan() -> dict[str, tuple[str, str, str, dict, object]]:
    """``{label: (method, scenario, arch, options, strategy class or None)}``: every registered method
    (generated from the registry), then the variants."""
    from bitcl.strategies import get_strategy, strategy_names
    runs = {}
    for name in strategy_names():
        cls = get_strategy(name)
        scenario = "task" if "task" in cls.scenarios else cls.scenarios[0]
        runs[name] = (name, scenario, "mlp", dict(FAST_OPTIONS.get(name, {})), None)
    for label, (method, options) in VARIANTS.items():
        runs[label] = (method, "task", "mlp", {**FAST_OPTIONS.get(method, {}), **options}, None)
    for label, (method, scenario, options) in SCENARIO_RUNS.items():
        runs[label] = (method, scenario, "mlp", {**FAST_OPTIONS.get(method, {}), **options}, None)
    for label, (method, arch, options) in ARCH_RUNS.items():
        runs[label] = (method, "task", arch, {**FAST_OPTIONS.get(method, {}), **options}, None)
    runs["not-distributable"] = ("finetune", "task", "mlp", {}, not_distributable())
    return runs


def config_for(method: str, scenario: str, arch: str, options: dict, data: str, out: Path):
    from bitcl.config import RunConfig
    return RunConfig(method=method, benchmark="split-mnist", scenario=scenario, arch=arch, tasks=2,
                     classes=[0, 1, 2, 3], epochs=1, batch_size=BATCH, hidden=[16], width=4, data=data, quiet=True,
                     seed=0, out=str(out), method_options=options)


def main(data: str, out_dir: str) -> None:
    from bitcl.engine import Engine
    from bitcl.errors import ConfigError
    out = Path(out_dir)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")  # the engines borrow this group; none of them destroys it
    status = {}
    try:
        for label, (method, scenario, arch, options, strategy_cls) in plan().items():
            try:
                engine = Engine(config_for(method, scenario, arch, options, data, out / label),
                                strategy_cls=strategy_cls)
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
    main(sys.argv[1], sys.argv[2])
