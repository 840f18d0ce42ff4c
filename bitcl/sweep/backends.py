"""Where a sweep's runs execute: local worker processes, a Ray cluster, or SLURM through submitit.

Every backend runs the same thing, :func:`execute`: one ``python -m bitcl run ...`` process with
``OMP_NUM_THREADS`` (and torch's intra-op threads, which follow it) set to the run's share of the
cores, so that ``workers x threads`` equals the cores and the machine is neither idle nor
oversubscribed. A run's outcome is its exit status and the last line of its stderr (bitcl's
one-line error).
"""
from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

from bitcl.errors import ConfigError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Job:
    """One attempt of one run: its name and its ``bitcl run`` flags."""

    name: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    job: Job
    returncode: int
    error: str  # the last line of stderr ("" when the run succeeded)
    seconds: float


def execute(argv: Sequence[str], threads: int, env: Optional[dict] = None) -> tuple[int, str, float]:
    """Run ``python -m bitcl run ARGV`` with ``threads`` threads; (exit status, last stderr line, seconds).

    A module-level function so that Ray and submitit can ship it to their workers."""
    environment = dict(os.environ, **(env or {}))
    environment.update({name: str(threads) for name in THREAD_VARIABLES})
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bitcl", "run", *argv], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env=environment)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    tail = lines[-1] if lines and done.returncode != 0 else ""
    if done.returncode != 0 and not tail:
        tail = f"exit status {done.returncode}"
    return done.returncode, tail, time.perf_counter() - started


def cores() -> int:
    """The cores this process may use (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def plan(n_runs: int, workers: Optional[int], threads: Optional[int]) -> tuple[int, int]:
    """(workers, threads per worker): by default one worker per core, up to the number of runs, and the
    cores shared out among the workers (at least one thread each)."""
    n = cores()
    if workers is None:
        workers = max(1, min(n if threads is None else max(1, n // threads), n_runs))
    if threads is None:
        threads = max(1, n // workers)
    return workers, threads


def _driver_env() -> dict:
    """What a worker needs from the driver's environment to import the same bitcl."""
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}


class LocalBackend:
    """A pool of ``workers`` threads, each driving one ``bitcl run`` process at a time."""

    name = "local"

    def __init__(self, workers: int, threads: int):
        self.workers, self.threads = workers, threads

    def run(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        env = _driver_env()
        with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
            futures = {pool.submit(execute, job.argv, self.threads, env): job for job in jobs}
            for future in concurrent.futures.as_completed(futures):
                code, tail, seconds = future.result()
                yield Outcome(futures[future], code, tail, seconds)

    def close(self) -> None:
        pass


class RayBackend:
    """Ray tasks of ``threads`` CPUs each, on the cluster at ``address`` or on a local Ray instance.

    On a cluster the sweep's --out and the data must be on a filesystem every node sees."""

    name = "ray"

    def __init__(self, threads: int, options: dict, workers: Optional[int] = None):
        try:
            import ray
        except ImportError:
            raise ConfigError("backend 'ray' needs Ray: pip install 'bitcl[ray]'") from None
        unknown = sorted(set(options) - {"address", "num_cpus"})
        if unknown:
            raise ConfigError(f"[ray] has unknown keys {unknown}; allowed: address, num_cpus")
        self.ray, self.threads = ray, threads
        self.started = not ray.is_initialized()
        if self.started:
            address = options.get("address")
            kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if address:
                kwargs["address"] = address
            else:  # a local instance: as many CPUs as the sweep's workers x threads
                kwargs["num_cpus"] = int(options.get("num_cpus") or (workers or 1) * threads)
            ray.init(**kwargs)
        self.task = ray.remote(num_cpus=threads)(execute)

    def run(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        env = _driver_env()
        pending = {self.task.remote(list(job.argv), self.threads, env): job for job in jobs}
        while pending:
            ready, _ = self.ray.wait(list(pending), num_returns=1)
            for ref in ready:
                job = pending.pop(ref)
                code, tail, seconds = self.ray.get(ref)
                yield Outcome(job, code, tail, seconds)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


class SubmititBackend:
    """SLURM jobs through submitit (``cluster = "local"`` runs them as local processes: for tests).

    Keys of the spec's ``[slurm]`` table other than ``cluster`` and ``parallel`` go to
    ``AutoExecutor.update_parameters`` (e.g. ``slurm_partition``, ``timeout_min``)."""

    name = "slurm"

    def __init__(self, folder: Path, threads: int, options: dict, workers: int):
        try:
            import submitit
        except ImportError:
            raise ConfigError("backend 'slurm' needs submitit: pip install 'bitcl[slurm]'") from None
        options = dict(options)
        cluster = options.pop("cluster", None)
        self.parallel = int(options.pop("parallel", workers if cluster == "local" else 1 << 30))
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        params = {"timeout_min": 24 * 60, "cpus_per_task": threads, **options}
        try:
            self.executor.update_parameters(**params)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"[slurm]: {str(error).splitlines()[0]}") from None
        self.threads = threads

    def run(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        env = _driver_env()
        waiting, running = list(jobs), {}
        while waiting or running:
            while waiting and len(running) < self.parallel:
                job = waiting.pop(0)
                running[self.executor.submit(execute, list(job.argv), self.threads, env)] = job
            finished = [j for j in running if j.done()]
            if not finished:
                time.sleep(0.2)
                continue
            for handle in finished:
                job = running.pop(handle)
                try:
                    code, tail, seconds = handle.result()
                except Exception as error:  # the job itself died (killed, node lost): a failed attempt
                    last = (str(error).strip().splitlines() or [""])[-1]
                    code, tail, seconds = 1, f"{type(error).__name__}: {last}", 0.0
                yield Outcome(job, code, tail, seconds)

    def close(self) -> None:
        pass


def make_backend(kind: str, folder: Path, n_runs: int, workers: Optional[int], threads: Optional[int],
                 ray_options: dict, slurm_options: dict):
    """The backend named ``kind`` (local, ray, slurm), sized for ``n_runs`` runs."""
    workers, threads = plan(n_runs, workers, threads)
    if kind == "local":
        return LocalBackend(workers, threads)
    if kind == "ray":
        return RayBackend(threads, ray_options, workers)
    if kind == "slurm":
        return SubmititBackend(folder / ".submitit", threads, slurm_options, workers)
    raise ConfigError(f"unknown backend {kind!r}; choose local, ray or slurm")

