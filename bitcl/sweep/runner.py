"""Run a sweep: choose on validation (optional), run the grid, retry failures, summarise.

Resumable and idempotent: a run whose folder holds a finished results.json (with the settings the
sweep asks for, made by this code: its ``code_digest``) is not run again; one made by other code is
run again with ``--overwrite`` (the old run stays until the new one is complete); a run interrupted part-way continues from its last checkpoint
(``bitcl run --resume``); a failed run is retried ``retries`` times and, if it still fails, is
reported with the last line of its stderr. Restarting an interrupted sweep therefore continues it.
"""
from __future__ import annotations

import fcntl
import math
import os
from pathlib import Path
from typing import Callable, Optional

from bitcl.errors import BitclError, ConfigError
from bitcl.sweep.backends import Job, make_backend
from bitcl.sweep.spec import METRICS, RunSpec, Spec, assign, check_runs, expand, make_run, nice
from bitcl.versions import code_digest

LOCK_NAME = ".bitcl-sweep.lock"


class Sweep:
    """The state of one sweep in ``out``: every run's record, and the backend (started on first use)."""

    def __init__(self, spec: Spec, out: Path, log: Callable[[str], None] = print):
        self.spec, self.out, self.log = spec, out, log
        self.records: dict[str, dict] = {}
        self.replace: set[str] = set()  # finished runs made by other code: rerun with --overwrite
        self._backend = None
        self._lock_fd = -1

    # -- lifetime --------------------------------------------------------------------------------
    def __enter__(self) -> "Sweep":
        self.out.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.out / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"--out {self.out}: another bitcl sweep is running in it") from None
        self._lock_fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._backend is not None:
            self._backend.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # drops the flock

    def backend(self, n_runs: int):
        if self._backend is None:
            spec = self.spec
            self._backend = make_backend(spec.backend, self.out, n_runs, spec.workers, spec.threads, spec.ray,
                                         spec.slurm)
            self.log(f"backend {spec.backend}: {getattr(self._backend, 'workers', '')} workers x "
                     f"{self._backend.threads} threads" if spec.backend == "local" else
                     f"backend {spec.backend}: {self._backend.threads} threads per run")
        return self._backend

    # -- running ---------------------------------------------------------------------------------
    def folder(self, run: RunSpec) -> Path:
        return self.out / run.name

    def run_all(self, runs: list[RunSpec], reuse: bool = True) -> None:
        """Run what is not finished yet (everything when ``reuse`` is False: ``--overwrite``), with
        retries; every run gets a record."""
        check_runs(runs, self.out)
        pending = []
        for run in runs:
            finished = finished_results(self.folder(run), run) if reuse else None
            record = {"name": run.name, "dir": str(self.folder(run)), "settings": run.settings, "group": run.group,
                      "benchmark": run.benchmark, "attempts": 0}
            if finished is not None and finished.get("code_digest") != code_digest():
                self.replace.add(run.name)
                finished = None
            if finished is not None:
                record.update(status="done", reused=True, results=metrics_of(finished))
            else:
                pending.append(run)
            self.records[run.name] = record
        if len(pending) < len(runs):
            self.log(f"{len(runs) - len(pending)} of {len(runs)} runs already finished (not rerun)")
        if self.replace:
            self.log(f"{len(self.replace)} finished run(s) were made by other code (results.json code_digest): "
                     "rerunning them; each old run is kept until its new one completes")
        by_name = {run.name: run for run in pending}
        for attempt in range(1 + self.spec.retries):
            if not pending:
                break
            backend = self.backend(len(pending))
            jobs = [Job(run.name, tuple(self._argv(run))) for run in pending]
            failed = []
            for k, outcome in enumerate(backend.run(jobs), 1):
                run = by_name[outcome.job.name]
                record = self.records[run.name]
                record["attempts"] += 1
                record["seconds"] = outcome.seconds
                results = finished_results(self.folder(run), run) if outcome.returncode == 0 else None
                if results is not None:
                    record.update(status="done", reused=False, results=metrics_of(results), error=None)
                    self.log(f"[{k}/{len(jobs)}] {run.name}: ACC {results['acc']:.4f} ({outcome.seconds:.1f} s)")
                else:
                    error = outcome.error or "finished without results.json"
                    record.update(status="failed", error=error)
                    failed.append(run)
                    retry = attempt < self.spec.retries
                    self.log(f"[{k}/{len(jobs)}] {run.name}: failed (attempt {attempt + 1}"
                             f"{', will retry' if retry else ''}): {error}")
            pending = failed

    def _argv(self, run: RunSpec) -> list[str]:
        from bitcl.train.rundir import holds_run
        folder = self.folder(run)
        argv = run.argv(folder)
        if run.name in self.replace:  # once: a retry continues the new run's own checkpoints
            self.replace.discard(run.name)
            return argv + ([] if "--overwrite" in argv else ["--overwrite"])
        return argv + (["--resume"] if holds_run(folder) and "--overwrite" not in argv else [])

    # -- choosing on validation ------------------------------------------------------------------
    def select(self, points: list[dict], varying: list[str]) -> dict:
        """Run every candidate of ``[select]`` on the validation hold-out; the choice per group."""
        sel = self.spec.select
        seeds = list(sel.seeds) if sel.seeds is not None else list(self.spec.grid["seed"])
        groups: dict[str, dict] = {}
        for point in points:
            if sel.option_for(point["method"]) is not None:
                groups.setdefault(make_run(point, varying).group, point)
        option = {g: sel.option_for(p["method"]) for g, p in groups.items()}
        names = varying + sel.options
        record: dict = {**sel.as_dict(), "seeds": seeds, "groups": {}}
        if sel.sampler == "optuna":
            from bitcl.sweep.optuna_select import select_with_optuna
            record["groups"] = select_with_optuna(self, groups, option, seeds, names)
            return record
        values = {g: sel.values_for(p["method"]) for g, p in groups.items()}
        for round_ in range(sel.extend + 1):
            runs = {}
            for g, point in groups.items():
                for v in values[g]:
                    for s in seeds:
                        run = self.candidate_run(point, option[g], v, s, names)
                        runs[run.name] = (g, v, run)
            self.run_all([r for _, _, r in runs.values()])
            record["groups"] = {g: {"option": option[g], **self.choose(g, values[g], runs)} for g in groups}
            grown = False
            if round_ < sel.extend:
                for g, choice in record["groups"].items():
                    ordered = _ordered(values[g])
                    if choice["chosen"] is None or len(ordered) < 2:
                        continue
                    if choice["chosen"] == ordered[0]:
                        values[g].append(nice(ordered[0] / sel.extend_factor))
                        grown = True
                    elif choice["chosen"] == ordered[-1]:
                        values[g].append(nice(ordered[-1] * sel.extend_factor))
                        grown = True
            if not grown:
                break
        for g, choice in record["groups"].items():
            ordered = _ordered(values[g])
            choice["on_edge"] = (choice["chosen"] is not None and _numeric(values[g])
                                 and choice["chosen"] in (ordered[0], ordered[-1]))
        return record

    def candidate_run(self, point: dict, option, value, seed: int, names: list[str]) -> RunSpec:
        """The validation run of one candidate ``value`` of ``option`` at ``seed`` (under ``select/``)."""
        return make_run({**assign(point, option, value), "validation": self.spec.select.fraction, "seed": seed},
                        names, prefix="select")

    def choose(self, group: str, values: list, runs: dict) -> dict:
        """The best candidate of ``group`` by the mean metric of its runs (``runs``: name -> (group, value, run))."""
        from bitcl.stats import summarize
        sel = self.spec.select
        sign = METRICS[sel.metric]
        candidates = []
        for v in _ordered(values):
            scores = [self.records[name]["results"][sel.metric] for name, (g, value, _) in runs.items()
                      if g == group and value == v and self.records[name]["status"] == "done"]
            failed = [name for name, (g, value, _) in runs.items()
                      if g == group and value == v and self.records[name]["status"] != "done"]
            entry = {"value": v, "runs": [n for n, (g, value, _) in runs.items() if g == group and value == v],
                     "failed": failed}
            if scores and not failed:
                entry[sel.metric] = summarize(scores, sel.metric).as_dict()
            candidates.append(entry)
        scored = [c for c in candidates if sel.metric in c]
        # the best mean; ties: the candidate first in order (the smaller value, or the one listed first)
        best = max(scored, key=lambda c: sign * round(c[sel.metric]["mean"], 12), default=None)
        return {"candidates": candidates, "chosen": None if best is None else best["value"],
                "note": None if best is not None else "every candidate failed: no choice, no test runs"}


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _ordered(values) -> list:
    """Numeric candidates in increasing order; others (strings, joint candidates) as listed."""
    return sorted(values) if _numeric(values) else list(values)


def finished_results(folder: Path, run: RunSpec) -> Optional[dict]:
    """The run's results.json when it is finished, checked against the settings the sweep asks for;
    None when there is none. ConfigError when the folder holds a run with other settings."""
    from bitcl.train.validate import read_results
    path = folder / "results.json"
    if not path.is_file():
        return None
    try:
        results = read_results(path)
    except BitclError as error:
        raise ConfigError(f"{path}: {str(error).splitlines()[0]} (move it away to rerun this run)") from None
    recorded = results.get("config", {})
    wanted = {k: v for k, v in run.settings.items() if k != "method_options"}
    as_run = _as_recorded(run, folder)
    pairs = [(k, recorded.get(k), getattr(as_run, k, v)) for k, v in wanted.items()]
    pairs += [(k, recorded.get("method_options", {}).get(k), v) for k, v in run.settings.get("method_options",
                                                                                               {}).items()]
    for key, have, want in pairs:
        if not _same(have, want):
            raise ConfigError(f"{folder}: holds a finished run with {key}={have!r}, but the sweep asks for "
                              f"{want!r}; use another --out or move that run away")
    return results


def _as_recorded(run: RunSpec, folder: Path):
    """The run's settings as ``bitcl run`` resolves and records them (``--bn auto`` becomes the policy
    it means in the run's scenario), or None when they do not resolve (then compared as written)."""
    from bitcl.run_args import config_from_args
    try:
        return config_from_args(run.argv(folder)).resolved()
    except BitclError:
        return None


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0) or a == b
    return a == b


def metrics_of(results: dict) -> dict:
    """The figures a sweep keeps from a run's results.json."""
    matrix = results["accuracy_matrix"]
    return {"acc": results["acc"], "bwt": results["bwt"], "forgetting": results["forgetting"],
            "acc_after_task": [sum(row[: i + 1]) / (i + 1) for i, row in enumerate(matrix)],
            "min_diagonal": min(row[i] for i, row in enumerate(matrix)),
            "train_seconds": sum(results.get("timing", {}).get("train_seconds", []))}


def run_sweep(spec: Spec, out: Path, log: Callable[[str], None] = print) -> dict:
    """Run ``spec`` into ``out``; returns the summary (also written to out/summary.json and .md)."""
    from bitcl.sweep.summary import write_summary
    with Sweep(spec, out, log) as sweep:
        runs = expand(spec)
        selection = None
        if spec.select is not None:
            points = [_point(r) for r in runs]
            selection = sweep.select(points, spec.varying)
            chosen = {g: c["chosen"] for g, c in selection["groups"].items()}
            option = {g: c["option"] for g, c in selection["groups"].items()}
            varying = spec.varying + spec.select.options
            runs = []
            for point in points:
                group = make_run(point, spec.varying).group
                if group in chosen and chosen[group] is None:
                    continue  # every candidate failed: reported in the selection record
                if group in chosen:
                    point = assign(point, option[group], chosen[group])
                runs.append(make_run(point, varying))
            log("chosen on validation: " + ", ".join(f"{g} {option[g]}={v!r}" for g, v in chosen.items()))
        sweep.run_all(runs)
        return write_summary(spec, out, [sweep.records[r.name] for r in runs], selection,
                             [r for r in sweep.records.values() if r["name"].startswith("select/")])


def _point(run: RunSpec) -> dict:
    return {**{k: v for k, v in run.settings.items() if k != "method_options"}, **run.settings.get("method_options",
                                                                                                   {})}
