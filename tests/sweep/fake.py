"""A stand-in for ``bitcl.sweep.backends.execute`` that writes a valid results.json at once, so that
the sweep's bookkeeping (retries, resumption, selection, summaries) is tested in milliseconds."""
from __future__ import annotations

import json
import math
from pathlib import Path

from bitcl import metrics
from bitcl.sweep import load_spec, run_sweep
from bitcl.versions import code_digest


class FakeRuns:
    """``score(config) -> ACC`` decides each run's figures (or ``matrix(config) ->`` its 2x2 accuracy
    matrix); ``fail`` lists (name part, attempts to fail)."""

    def __init__(self, score=None, fail=None, matrix=None):
        self.score = score or (lambda cfg: 0.5 + 0.01 * cfg.seed)
        self.matrix = matrix
        self.fail = dict(fail or {})
        self.calls: list[list[str]] = []

    def __call__(self, argv, threads, env=None):
        from bitcl.run_args import config_from_args
        argv = list(argv)
        self.calls.append(argv)
        cfg = config_from_args(argv)
        for part, left in self.fail.items():
            if part in cfg.out and left > 0:
                self.fail[part] = left - 1
                Path(cfg.out).mkdir(parents=True, exist_ok=True)
                return 1, "bitcl run: error: simulated failure", 0.01
        acc = float(self.score(cfg))
        matrix = self.matrix(cfg) if self.matrix else [[acc + 0.1, 0.1], [acc, acc]]
        results = {"method": cfg.method, "benchmark": cfg.benchmark, "scenario": cfg.scenario, "seed": cfg.seed,
                   "tasks": 2, "accuracy_matrix": matrix, "acc": metrics.acc(matrix), "bwt": metrics.bwt(matrix),
                   "forgetting": metrics.forgetting(matrix), "timing": {"train_seconds": [0.1, 0.1]},
                   "memory": {"state_bytes": [0, 0]}, "config": cfg.resolved().to_dict(),  # as bitcl run records it
                   "code_digest": code_digest()}
        assert math.isfinite(results["acc"])
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "results.json").write_text(json.dumps(results))
        return 0, "", 0.01


def sweep(tmp_path: Path, text: str, out: str = "out") -> dict:
    """Write ``text`` as a spec under ``tmp_path`` and run it (quietly) into ``tmp_path / out``."""
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return run_sweep(load_spec(path), tmp_path / out, log=lambda line: None)
