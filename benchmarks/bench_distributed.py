"""1 vs 2 processes under torchrun (gloo, CPU) on this machine (issue 9).

    .venv/bin/python benchmarks/bench_distributed.py

BLIP on Split-MNIST (data/mnist15k.npz, MLP 784-1200, 3 epochs, global batch
64): wall time of `torchrun --nproc_per_node=1` (2 threads) against
`--nproc_per_node=2` (1 thread each), and whether the accuracy matrices agree.
Writes benchmarks/out/distributed.json.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from _timing import write_json

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "mnist15k.npz")


def launch(procs: int, threads: int, out: str) -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m", "bitcl",
           "run", "--method", "blip", "--data", DATA, "--epochs", "3", "--quiet", "--out", out]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main():
    with tempfile.TemporaryDirectory() as tmp:
        times = {1: [], 2: []}
        for round_ in range(2):
            for procs in (1, 2):
                times[procs].append(launch(procs, 2 // procs, f"{tmp}/p{procs}-{round_}"))
        a = json.load(open(f"{tmp}/p1-0/results.json"))
        b = json.load(open(f"{tmp}/p2-0/results.json"))
    out = {"seconds_1_process": times[1], "seconds_2_processes": times[2],
           "speedup_2_over_1": min(times[1]) / min(times[2]),
           "accuracy_matrices_equal": a["accuracy_matrix"] == b["accuracy_matrix"],
           "train_seconds_1": sum(a["timing"]["train_seconds"]), "train_seconds_2": sum(b["timing"]["train_seconds"])}
    write_json("distributed.json", out)
    print(f"wall time 1 process x 2 threads: {min(times[1]):.1f}s; 2 processes x 1 thread: {min(times[2]):.1f}s; "
          f"speed-up {out['speedup_2_over_1']:.2f}x; accuracy matrices equal: {out['accuracy_matrices_equal']}")


if __name__ == "__main__":
    main()
