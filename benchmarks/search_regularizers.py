"""Choose every regulariser's penalty strength on VALIDATION data, then measure it once on the test split.

    .venv/bin/python benchmarks/search_regularizers.py [--quick]

Issue 13 ("honest defaults"): the old defaults (EWC c=1000, SI 20, MAS 100, AF 10, ANPyC λ=1000, ...)
came from a search scored on the test split. This script replaces them.

Methods: every registered method (``bitcl.strategies``) whose Options has a field named ``c`` or
``lam`` (the penalty strength), discovered from the registry so that a new method is searched
too. Excluded, with the reason recorded in the JSON: DLCFT, whose c = 1 makes its penalty exactly
the past tasks' losses under the linearisation (a constant of the method, not a tuning knob).

Protocol (the same for every candidate and for the test runs): Split-MNIST, 5 tasks,
task-incremental (a head per task), MLP 784-1200 with 20-bit Bit layers, 5 epochs per task, Adam
at lr 3e-3 with cosine annealing within each task, batch 64 (the engine defaults; ``preset=False``),
seed 0, data data/mnist15k.npz. Five epochs per task was sized by timing one run first (about
15 s with one torch thread on an idle core) so that the whole search fits in about 45 minutes of
wall time on a machine shared by several jobs.

Search: each candidate trains on 90 % of the training split and is scored on the other 10 %
(``validation=0.1``: a stratified hold-out of each class's training digits; the test split is never
read). Grid: the old default × {0.1, 1, 10}; while the best is on an edge of the grid, one more
decade beyond it (at most ``EXTEND`` extra decades per side). The highest validation ACC is the
choice (ties: the higher BWT, then the smaller strength). Writes
benchmarks/results/search_regularizers.json (every candidate's validation ACC/BWT/forgetting, the
choice per method, the protocol). Then each method runs once at its choice on the test split (the
whole training split, same protocol), with finetune as the reference, and
benchmarks/results/regularizers_split.json holds ACC, BWT and forgetting per method.

``--quick``: a smoke run (2 tasks, 1 epoch, two candidates per method, no extension) written to
benchmarks/out/ (not a committed result).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _env import environment, write_result  # noqa: E402

from bitcl.config import RunConfig  # noqa: E402
from bitcl.engine import run  # noqa: E402
from bitcl.strategies import get_strategy, strategy_names  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "mnist15k.npz")
STRENGTH_FIELDS = ("c", "lam")
# Methods that have a strength field but must not be tuned, with the reason (kept in the JSON).
EXCLUDED = {"dlcft": "c = 1 makes DLCFT's penalty exactly the past tasks' losses under the linearisation "
                     "(exact by construction, not a tuning knob)"}
FACTORS = (0.1, 1.0, 10.0)
EXTEND = 2
EPOCHS = 5
PROTOCOL = dict(benchmark="split-mnist", scenario="task", epochs=EPOCHS, data=DATA, quiet=True, preset=False,
                seed=0, arch="mlp", hidden=[1200], bits=20)
PROTOCOL_TEXT = (f"Split-MNIST, 5 tasks, task-incremental, MLP 784-1200, 20 bits, {EPOCHS} epochs per task, Adam "
                 "lr 3e-3 cosine, batch 64 (engine defaults, preset=False), seed 0, data/mnist15k.npz")


def strength_field(method: str) -> dataclasses.Field | None:
    """The Options field holding ``method``'s penalty strength (``c`` or ``lam``), or None."""
    options = get_strategy(method).Options
    for f in dataclasses.fields(options):
        if f.name in STRENGTH_FIELDS:
            return f
    return None


def searched_methods() -> dict[str, tuple[str, float]]:
    """method -> (option name, current default) for every registered method with a strength, less EXCLUDED."""
    out = {}
    for name in strategy_names():
        f = strength_field(name)
        if f is not None and name not in EXCLUDED:
            out[name] = (f.name, float(f.default))
    return out


def nice(value: float) -> float:
    """Round a product of decades to 6 significant digits (0.1 * 0.1 is 0.010000000000000002)."""
    return float(f"{value:.6g}")


def summary(result) -> dict:
    return {"acc": result.acc, "bwt": result.bwt, "forgetting": result.forgetting,
            "accuracy_matrix": result.accuracy_matrix, "train_seconds": sum(result.timing["train_seconds"])}


def train(method: str, options: dict, validation: float, protocol: dict) -> dict:
    t0 = time.time()
    r = run(RunConfig(method=method, validation=validation, method_options=options, **protocol))
    out = summary(r)
    print(f"{method:<9} {options} {'validation' if validation else 'test':<10} ACC {r.acc:.4f} BWT {r.bwt:+.4f} "
          f"({time.time() - t0:.0f} s)", flush=True)
    return out


def best_of(candidates: list[dict]) -> dict:
    """Highest validation ACC; ties: higher BWT, then the smaller strength."""
    return max(candidates, key=lambda c: (round(c["validation"]["acc"], 12), round(c["validation"]["bwt"], 12),
                                          -c["value"]))


def search_method(method: str, option: str, default: float, protocol: dict, factors, extend: int) -> dict:
    tried: dict[float, dict] = {}

    def attempt(value: float) -> None:
        if value not in tried:
            tried[value] = {"value": value, "validation": train(method, {option: value}, 0.1, protocol)}

    for factor in factors:
        attempt(nice(default * factor))
    for _ in range(extend):
        values = sorted(tried)
        best = best_of(list(tried.values()))["value"]
        if best == values[0]:
            attempt(nice(values[0] / 10))
        elif best == values[-1]:
            attempt(nice(values[-1] * 10))
        else:
            break
    candidates = [tried[v] for v in sorted(tried)]
    chosen = best_of(candidates)
    values = [c["value"] for c in candidates]
    return {"option": option, "previous_default": default, "candidates": candidates, "chosen": chosen["value"],
            "on_edge": chosen["value"] in (values[0], values[-1])}


def main(quick: bool = False) -> None:
    protocol = dict(PROTOCOL, tasks=2, epochs=1) if quick else PROTOCOL
    factors, extend = ((0.1, 1.0), 0) if quick else (FACTORS, EXTEND)
    started = time.time()
    methods = searched_methods()
    print(f"methods with a strength: {sorted(methods)}; excluded: {sorted(EXCLUDED)}", flush=True)
    search = {m: search_method(m, opt, default, protocol, factors, extend) for m, (opt, default) in methods.items()}
    text = PROTOCOL_TEXT if not quick else "quick smoke run: 2 tasks, 1 epoch"
    payload = {
        "protocol": text + "; every candidate trained on 90% of the training split and scored on the held-out 10% "
                           "(validation=0.1, stratified per class; the test split is never read)",
        "selection": "highest validation ACC (ties: higher BWT, then smaller strength); grid: previous default x "
                     f"{list(factors)}, extended by a decade while the best is on an edge (at most {extend} per side)",
        "config": {k: v for k, v in protocol.items() if k not in ("quiet", "data")},
        "methods": search,
        "chosen": {m: {"option": s["option"], "value": s["chosen"]} for m, s in search.items()},
        "excluded": {m: {"option": strength_field(m).name, "value": float(strength_field(m).default), "reason": why}
                     for m, why in EXCLUDED.items() if m in strategy_names() and strength_field(m) is not None},
        "search_seconds": time.time() - started}
    if quick:
        os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
        with open(os.path.join(HERE, "out", "search_regularizers_quick.json"), "w") as f:
            json.dump({**payload, "environment": environment()}, f, indent=2)
    else:
        write_result("search_regularizers", payload)
    print("chosen on validation: " + ", ".join(f"{m} {s['option']}={s['chosen']:g}" for m, s in search.items()),
          flush=True)

    test = {"finetune": {"options": {}, **train("finetune", {}, 0.0, protocol)}}
    for m, s in search.items():
        test[m] = {"options": {s["option"]: s["chosen"]}, **train(m, {s["option"]: s["chosen"]}, 0.0, protocol)}
    result = {"protocol": text + "; trained on the whole training split, evaluated on the test split, each method "
                                 "at the strength chosen on validation (search_regularizers.json)",
              "config": payload["config"], "methods": test}
    if quick:
        with open(os.path.join(HERE, "out", "regularizers_split_quick.json"), "w") as f:
            json.dump({**result, "environment": environment()}, f, indent=2)
    else:
        write_result("regularizers_split", result)
    print(f"done in {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("BITCL_THREADS", "1")))
    unknown = [a for a in sys.argv[1:] if a != "--quick"]
    if unknown:
        print(f"search_regularizers.py: unknown argument {unknown[0]!r}; the only flag is --quick", file=sys.stderr)
        raise SystemExit(2)
    main(quick="--quick" in sys.argv)
