"""Every method before and after the engine refactor: same accuracy matrix, and the time it took.

    .venv/bin/python benchmarks/parity_previous_engine.py OLD_TREE

OLD_TREE is a checkout of the commit before the refactor (``git worktree add /tmp/old 7d5380a``;
its ``kernels/`` folder is used as ``bitcl.kernels``). Each method runs in a fresh subprocess
per tree (Split-MNIST, 5 tasks, 1 epoch, MLP 784-256, the committed 2,000-digit subset
tests/data/mnist2k.npz), alternating old and new so that machine load affects both alike.
Writes benchmarks/results/parity_previous_engine.json.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _env import write_result  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
NEW_TREE = os.path.dirname(HERE)
DATA = os.path.join(NEW_TREE, "tests", "data", "mnist2k.npz")
METHODS = ["finetune", "joint", "blip", "ewc", "si", "siu", "sib", "sos", "mas", "masx", "af", "rewc", "anpyc"]

SCRIPT = r"""
import json, sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from bitcl.config import RunConfig
from bitcl.engine import run
cfg = dict(method=sys.argv[2], data=sys.argv[3], epochs=1, hidden=[256], quiet=True, tasks=5,
           batch_size=64, lr=3e-3)
if sys.argv[2] == "anpyc":
    cfg["method_options"] = {"retrain_epochs": 1}
start = time.perf_counter()
r = run(RunConfig(**cfg))
print(json.dumps({"matrix": r.accuracy_matrix, "acc": r.acc, "bwt": r.bwt,
                  "train_seconds": sum(r.timing["train_seconds"]), "wall_seconds": time.perf_counter() - start,
                  "state_bytes": r.state_bytes[-1]}))
"""


def one(tree: str, method: str) -> dict:
    env = dict(os.environ, PYTHONPATH=tree)
    done = subprocess.run([sys.executable, "-c", SCRIPT, tree, method, DATA], capture_output=True, text=True,
                          env=env, cwd=tree, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{tree} {method}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(old_tree: str) -> None:
    rows = []
    for method in METHODS:
        old = one(old_tree, method)
        new = one(NEW_TREE, method)
        same = old["matrix"] == new["matrix"]
        rows.append({"method": method, "old": old, "new": new, "identical_matrix": same,
                     "train_time_ratio_new_over_old": new["train_seconds"] / old["train_seconds"]})
        print(f"{method:<9} ACC old {old['acc']:.4f} new {new['acc']:.4f} identical {same} "
              f"train time new/old {rows[-1]['train_time_ratio_new_over_old']:.2f}", flush=True)
    write_result("parity_previous_engine", {
        "protocol": "Split-MNIST, 5 tasks, 1 epoch, MLP 784-256, tests/data/mnist2k.npz, one subprocess per "
                    "method and tree, 1 thread", "old_tree": old_tree, "methods": rows})


if __name__ == "__main__":
    main(sys.argv[1])
