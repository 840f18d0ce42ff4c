"""Choose AlexNet's and ResNet-18's training defaults on VALIDATION data (issue 22), then check them.

    .venv/bin/python benchmarks/search_backbones.py [--quick] [--out DIR]

The protocol and the candidates (batch-norm policy, optimiser, learning rate and momentum, chosen
together) are the
sweep spec benchmarks/sweeps/backbones_defaults.toml, run by ``bitcl sweep`` (runs into --out,
default benchmarks/out/sweeps/backbones_defaults/: resumable, so an interrupted search continues
where it stopped). Each candidate trains finetune on 90 % of the training split and is scored on
the held-out 10 %; per backbone and scenario (task- and class-incremental) the candidate whose
worst task is best learnt (``min_diagonal``) is chosen, and the sweep runs each choice on the test
split. A backbone has one default (what ``bitcl/models`` registers): the candidate whose worst
``min_diagonal`` over both scenarios is highest; this script runs it on the test split in both
scenarios (reusing the sweep's run where the choices agree).

Writes ``search_backbones`` through ``_env.write_result`` (benchmarks/results/ from a clean tree,
benchmarks/out/ otherwise): every candidate's validation diagonal, ACC and seconds per epoch, the
choice per backbone and scenario, and the test-split diagonal of each choice.
``--quick``: a smoke run (1 epoch, the 2,000-digit test file, two candidates) to benchmarks/out/.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sweeps import HERE, default_out, save, shrink  # noqa: E402

from bitcl.sweep import load_spec, run_sweep  # noqa: E402
from bitcl.sweep.backends import execute  # noqa: E402
from bitcl.sweep.spec import flag  # noqa: E402

SPEC = HERE / "sweeps" / "backbones_defaults.toml"


def run_figures(folder: Path) -> dict:
    """The diagonal, ACC and mean wall seconds per training epoch of one finished run (wall time:
    on a shared machine it includes waiting for the cores, see the environment's load average)."""
    results = json.loads((folder / "results.json").read_text())
    matrix = results["accuracy_matrix"]
    epochs = results["timing"]["epoch_seconds"]
    return {"diagonal": [row[t] for t, row in enumerate(matrix)], "acc": results["acc"],
            "forgetting": results["forgetting"], "epoch_seconds": statistics.fmean(epochs) if epochs else None,
            "evaluated_on": results["config"]["data_source"]["evaluated_on"], "run": str(folder)}


def scenario_of(group: str) -> tuple[str, str]:
    """(arch, scenario) from a sweep group label such as ``split-mnist/arch=resnet18/scenario=task``."""
    fields = dict(part.split("=", 1) for part in group.split("/") if "=" in part)
    return fields["arch"], fields["scenario"]


def default_choice(scenarios: dict, option: list[str]) -> dict:
    """The one default of a backbone: the candidate (its values of ``option``, the spec's [select]
    option) whose worst ``min_diagonal`` over the scenarios is highest (ties: the candidate listed
    first), among those that ran in every scenario."""
    scores: dict[tuple, list] = {}
    for per_scenario in scenarios.values():
        for c in per_scenario["candidates"]:
            scores.setdefault(tuple(c[k] for k in option), []).append(c["min_diagonal"])
    best, best_score = None, None
    for value, found in scores.items():
        if len(found) == len(scenarios) and None not in found and (best_score is None or min(found) > best_score):
            best, best_score = dict(zip(option, value)), min(found)
    return {"chosen": best, "worst_min_diagonal": best_score}


def test_run(out: Path, settings: dict, threads: int) -> dict:
    """``settings`` on the test split, in ``out/defaults/`` (reused when finished)."""
    folder = out / "defaults" / f"arch={settings['arch']}" / f"scenario={settings['scenario']}"
    if not (folder / "results.json").is_file():
        argv = [a for key, value in settings.items() for a in flag(key, value)]
        argv += ["--out", str(folder), "--overwrite", "--quiet"]
        status, last, _ = execute(argv, threads)
        if status != 0:
            return {"error": last, "argv": argv}
    return run_figures(folder)


def main(quick: bool, out: Path) -> None:
    started = time.time()
    spec = load_spec(SPEC)
    if quick:
        shrink(spec)
        spec.grid["pad_to"] = [32]
    summary = run_sweep(spec, out)
    backbones: dict[str, dict] = {}
    for group, choice in summary["selection"]["groups"].items():
        option = list(choice["option"])
        arch, scenario = scenario_of(group)
        candidates = []
        for c in choice["candidates"]:
            figures = [run_figures(out / name) for name in c["runs"] if (out / name / "results.json").is_file()]
            candidates.append({**dict(zip(option, c["value"])), "validation": figures,
                               "min_diagonal": c.get("min_diagonal", {}).get("mean"), "failed": c["failed"]})
        chosen = None if choice["chosen"] is None else dict(zip(option, choice["chosen"]))
        backbones.setdefault(arch, {"scenarios": {}})["scenarios"][scenario] = {
            "candidates": candidates, "chosen": chosen, "test": None}
    for record in summary["runs"]:
        arch, scenario = record["settings"]["arch"], record["settings"]["scenario"]
        if record["status"] == "done":
            backbones[arch]["scenarios"][scenario]["test"] = run_figures(out / record["name"])
    common = {k: v[0] for k, v in spec.grid.items() if len(v) == 1 and k not in ("scenario", "method", "seed")}
    for arch, entry in backbones.items():
        entry["default"] = default_choice(entry["scenarios"], list(spec.select.option))
        entry["default"]["test"] = {}
        for scenario, per_scenario in entry["scenarios"].items():
            if per_scenario["chosen"] == entry["default"]["chosen"] and per_scenario["test"] is not None:
                figures = per_scenario["test"]  # the sweep already ran it on the test split
            else:
                settings = {**common, "method": "finetune", "seed": 0, "arch": arch, "scenario": scenario,
                            **entry["default"]["chosen"]}
                figures = test_run(out, settings, spec.threads or 1)
            entry["default"]["test"][scenario] = figures
    protocol = ("quick smoke run: 1 epoch, tests/data/mnist2k.npz" if quick else
                "see benchmarks/sweeps/backbones_defaults.toml")
    path = save("search_backbones", {
        "protocol": protocol + "; candidates trained on 90% of the training split and scored on the held-out 10% "
                               "(validation=0.1, stratified per class; the test split is never read for the choice); "
                               "each choice then run on the test split in its own scenario, seed 0",
        "selection": "per backbone and scenario (scenarios.*.chosen): highest min_diagonal (the worst task's "
                     "accuracy right after learning it) on validation; ties: the candidate listed first. The "
                     "backbone's one default (default.chosen, registered in bitcl/models): the candidate whose "
                     "worst min_diagonal over both scenarios is highest; default.test: it on the test split",
        "spec": str(SPEC.relative_to(HERE.parent)), "threads_per_run": spec.threads,
        "backbones": backbones, "failed": summary["failed"], "search_seconds": time.time() - started}, quick)
    for arch, entry in backbones.items():
        for scenario, per_scenario in entry["scenarios"].items():
            print(f"{arch} {scenario}: chosen {per_scenario['chosen']}")
        test = {s: f.get("diagonal") for s, f in entry["default"]["test"].items()}
        print(f"{arch} default {entry['default']['chosen']}: test diagonal {test}")
    print(f"wrote {path} (sweep in {out}) in {time.time() - started:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Choose the backbones' training defaults on validation data.")
    parser.add_argument("--quick", action="store_true", help="smoke run written to benchmarks/out/")
    parser.add_argument("--out", default=None, help="sweep directory (default benchmarks/out/sweeps/...)")
    args = parser.parse_args()
    name = "backbones_defaults" + ("_quick" if args.quick else "")
    main(args.quick, Path(args.out) if args.out else default_out(name))
