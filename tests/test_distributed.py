"""torchrun with 2 CPU processes (gloo): same results as one process, identical ranks, fault tolerance."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bitcl.distributed import DistContext
from bitcl.errors import ConfigError
from tests.conftest import REPO_DATA, run_cli

# Every test here starts two or more interpreters (torchrun ranks, spawned processes): seconds each.
pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("dist_equivalence_worker.py")
# Stated tolerances of "2 ranks = 1 process" (README): every float tensor of every checkpoint
# (strategy/* importances, anchors, Fishers, curvatures; the model) and every tensor of codes
# (the rounding of those latents, at 20 bits) within FLOAT_RTOL of its largest magnitude (gloo
# sums shards in another order; observed at most 9e-6 on the MLP runs, 1.7e-4 on the conv net,
# 5.5e-4 on resnet18: see dist_equivalence_worker.py on batch-norm nets);
# integer and bool tensors (frozen counts, kept masks, task counters) equal; accuracies within one
# test digit of 80 (observed 0). A double-counted world size (a factor 2) is far outside.
FLOAT_RTOL = 1e-3
TEST_PER_TASK = 80
ACC_TOL = 1 / TEST_PER_TASK


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    """Digits 0-3 of data/mnist15k.npz: 80 training and 40 test digits each (2 tasks of 2)."""
    path = os.path.join(REPO_DATA, "mnist15k.npz")
    with np.load(path) as f:
        x, y, train = f["x"], f["y"], f["train"]
    rng = np.random.default_rng(0)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero((y == c) & (train == is_train)), n, replace=False)
                                   for c in range(4) for is_train, n in ((True, 80), (False, 40))]))
    out = tmp_path_factory.mktemp("tiny") / "digits0123.npz"
    np.savez(out, x=x[keep], y=y[keep], train=train[keep])
    return str(out)


@pytest.fixture(scope="module")
def micro_npz(tiny_npz, tmp_path_factory):
    """The first 8 training and 4 test digits of each class of ``tiny_npz``: a run of many small batches
    that takes seconds even on a ResNet-18."""
    with np.load(tiny_npz) as f:
        x, y, train = f["x"], f["y"], f["train"]
    keep = np.sort(np.concatenate([np.flatnonzero((y == c) & (train == is_train))[:n]
                                   for c in range(4) for is_train, n in ((True, 8), (False, 4))]))
    out = tmp_path_factory.mktemp("micro") / "digits0123_micro.npz"
    np.savez(out, x=x[keep], y=y[keep], train=train[keep])
    return str(out)


def compare_runs(one: Path, two: Path) -> list[str]:
    """Every difference between two run directories beyond the stated tolerances."""
    from safetensors.torch import load_file
    problems = []
    a, b = (json.loads((d / "results.json").read_text()) for d in (one, two))
    acc = np.abs(np.array(a["accuracy_matrix"]) - np.array(b["accuracy_matrix"])).max()
    if acc > ACC_TOL + 1e-12:
        problems.append(f"{one.name}: accuracy matrices differ by {acc:.4f}")
    if len(b["rank_checksums"]) != 2 or any(len(set(c)) != 1 for c in b["rank_checksums"]):
        problems.append(f"{one.name}: rank checksums {b['rank_checksums']}")
    for t in range(2):
        ta, tb = (load_file(d / "checkpoints" / f"task-{t}.safetensors") for d in (one, two))
        if ta.keys() != tb.keys():
            problems.append(f"{one.name} task {t}: tensors {sorted(ta.keys() ^ tb.keys())[:4]} in one run only")
            continue
        for key in ta:
            x, y = ta[key], tb[key]
            if x.is_floating_point() or key.endswith(".codes"):
                gap, scale = float((x.double() - y.double()).abs().max()), float(x.double().abs().max())
                bad = gap > FLOAT_RTOL * scale + (1 if key.endswith(".codes") else 1e-7)
            else:
                gap = int((x != y).sum())
                bad = gap > 0
            if bad:
                problems.append(f"{one.name} task {t}: {key} differs by {gap:g}")
    return problems


def test_every_method_two_processes_equal_one_process(tmp_path, tiny_npz):
    """Every registered method and variant: 2 gloo ranks hold the 1-process state after each task, or
    (the support matrix says so: not distributable) are refused before training; batch-norm backbones
    (alexnet, resnet18) included."""
    from bitcl.support import RUNS, data_parallel_outcome
    from tests.dist_equivalence_worker import plan
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.Popen([sys.executable, str(WORKER), tiny_npz, str(tmp_path / "one")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
           tiny_npz, str(tmp_path / "two")]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    two = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    one_log = single.communicate(timeout=240)[0]
    errors = "".join(p.read_text() for p in sorted(tmp_path.glob("*/error-rank*.txt")))
    assert two.returncode == 0 and single.returncode == 0, errors or (two.stderr[-2000:] + one_log[-2000:])
    status_one, status_two = (json.loads((tmp_path / d / "status.json").read_text()) for d in ("one", "two"))
    problems = []
    for label, run in plan().items():
        assert status_one[label] == "ran", (label, status_one[label])
        if run.strategy_cls is not None and not run.strategy_cls.distributable:
            refusal = status_two[label]
            assert refusal.startswith("refused: ") and "torchrun" in refusal and "\n" not in refusal, refusal
            continue
        expected = data_parallel_outcome(run.method, run.arch)  # the support matrix's torchrun column
        if expected != RUNS:
            assert status_two[label] == f"refused: {expected}", (label, status_two[label])
            continue
        assert status_two[label] == "ran", (label, status_two[label])
        problems += compare_runs(tmp_path / "one" / label, tmp_path / "two" / label)
    assert not problems, "\n".join(problems)

COMMON = ["--method", "blip", "--hidden", "100", "--epochs", "2", "--quiet"]


def torchrun(*args, max_restarts=0, **kwargs):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           f"--max-restarts={max_restarts}", "-m", "bitcl", "run", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return cmd, env


def test_joint_with_learning_norms_under_torchrun(tmp_path, micro_npz):
    """joint replay with --bn train on resnet18, global batch 3 (shards of 2 and 1, so a rank often lacks a
    task): every rank makes the same norm calls, so the 2-rank run completes with agreeing ranks."""
    cmd, env = torchrun("--method", "joint", "--arch", "resnet18", "--width", "4", "--bn", "train", "--batch-size",
                        "3", "--tasks", "2", "--classes", "0,1,2,3", "--epochs", "1", "--quiet", "--data", micro_npz,
                        "--out", tmp_path / "r")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]


def test_two_processes_equal_one_process(tmp_path, small_npz):
    """2 ranks: the run completes, ranks agree after every task, results equal a 1-process run."""
    cmd, env = torchrun(*COMMON, "--data", small_npz, "--out", tmp_path / "ddp")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[:2000] + "\n...\n" + done.stderr[-1000:]
    assert done.stdout.count("ACC") == 1  # only rank 0 reports
    single = run_cli("run", *COMMON, "--data", small_npz, "--out", tmp_path / "one")
    assert single.returncode == 0
    a = json.loads((tmp_path / "ddp" / "results.json").read_text())
    b = json.loads((tmp_path / "one" / "results.json").read_text())
    assert all(len(set(c)) == 1 and len(c) == 2 for c in a["rank_checksums"])
    diff = np.abs(np.array(a["accuracy_matrix"]) - np.array(b["accuracy_matrix"])).max()
    assert diff <= 0.005  # documented tolerance (README); identical on this machine
    assert a["capacity"] == pytest.approx(b["capacity"], abs=0.005)
    files = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert files == ["accuracy_matrix.csv", "checkpoints", "log.txt", "results.json"]
    assert (tmp_path / "ddp" / "log.txt").read_text().count("task 5/5") == 1


def worker_pids(parent: int) -> dict:
    """{rank: pid} of torchrun's worker processes."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
            found[int(env[b"RANK"])] = int(pid)
        except (OSError, KeyError, ValueError, IndexError):
            continue
    return found


def test_killed_rank_restarts_from_last_task(tmp_path, small_npz):
    """kill -9 one rank mid-task under --max-restarts 1: the job resumes and matches an uninterrupted run."""
    # tasks 2 and 3 are left to run when the task-1 checkpoint appears: the kill lands mid-run
    args = ["--method", "blip", "--hidden", "100", "--epochs", "2", "--quiet", "--benchmark", "permuted-mnist",
            "--tasks", "4", "--data", small_npz, "--resume"]
    cmd, env = torchrun(*args, "--out", tmp_path / "whole")
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=300).returncode == 0
    cmd, env = torchrun(*args, "--out", tmp_path / "faulty", max_restarts=1)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = tmp_path / "faulty" / "checkpoints" / "task-1.safetensors"
    deadline = time.time() + 200
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = worker_pids(proc.pid)
    assert 1 in workers, "worker processes not found"
    os.kill(workers[1], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"resumed from" in (tmp_path / "faulty" / "log.txt").read_bytes()
    a = json.loads((tmp_path / "whole" / "results.json").read_text())
    b = json.loads((tmp_path / "faulty" / "results.json").read_text())
    assert a["accuracy_matrix"] == b["accuracy_matrix"]


def _agreement_worker(rank, path, value_of_rank, queue):
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    try:
        DistContext(rank, 2).require_agreement(value_of_rank[rank], "the training data")
        queue.put((rank, "ok"))
    except ConfigError as error:
        queue.put((rank, str(error)))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("values, expect", [((7, 7), "ok"), ((7, 8), "ranks disagree on the training data")])
def test_ranks_that_disagree_stop_with_a_clear_error(tmp_path, values, expect):
    """The agreement check (data, version, initial model) raises ConfigError on every rank on mismatch."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_agreement_worker, args=(r, str(tmp_path / "store"), values, queue)) for r in (0, 1)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(60)
    assert all(expect in results[r] for r in (0, 1))


def test_more_ranks_than_samples_is_refused(tmp_path):
    """A task with fewer training samples than ranks: one clear error line."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 28, 28), dtype=np.uint8)
    y = np.repeat(np.arange(10), 4)
    train = np.zeros(40, bool)
    train[[0, 4, 8, 12, 16, 20, 24, 28, 32, 36]] = True  # one training digit per class
    np.savez(tmp_path / "tiny.npz", x=x, y=y, train=train)
    cmd, env = torchrun("--method", "finetune", "--data", tmp_path / "tiny.npz", "--tasks", "10", "--epochs", "1",
                        "--quiet", "--hidden", "8", "--out", tmp_path / "r")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "fewer than the 2 ranks" in done.stderr


def _shutdown_worker(rank, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    from bitcl.distributed import init_from_env
    ctx = init_from_env("cpu")
    borrowed = DistContext(rank, 2)  # a context that did not create the group must leave it alone
    borrowed.shutdown()
    alive_after_borrowed = dist.is_initialized()
    ctx.shutdown()
    queue.put((rank, ctx.owns_group, alive_after_borrowed, dist.is_initialized()))


def test_the_context_that_created_the_group_destroys_it():
    """init_from_env's context owns the group: shutdown() destroys it (after a barrier); others do not."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_shutdown_worker, args=(r, port, queue)) for r in (0, 1)]
    for p in procs:
        p.start()
    results = dict((r, rest) for r, *rest in (queue.get(timeout=60) for _ in procs))
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert results == {0: [False, True, False], 1: [False, True, False]}
