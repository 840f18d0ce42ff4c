"""Choose AlexNet's and ResNet-18's training defaults on VALIDATION data (issue 22), then check them.

    .venv/bin/python benchmarks/search_backbones.py [--quick] [--out DIR]

The protocol and the candidates (optimiser, learning rate and momentum, chosen together) are the
sweep spec benchmarks/sweeps/backbones_defaults.toml, run by ``bitcl sweep`` (runs into --out,
default benchmarks/out/sweeps/backbones_defaults/: resumable, so an interrupted search continues
where it stopped). Each candidate trains finetune on 90 % of the training split and is scored on
the held-out 10 %; per backbone the candidate whose worst task is best learnt (``min_diagonal``)
is chosen. The sweep then runs each choice on the test split (task-incremental), and this script
runs it class-incremental too (the same flags, ``--scenario class``), so that both of the issue's
scenarios are reported.

Writes ``search_backbones`` through ``_env.write_result`` (benchmarks/results/ from a clean tree,
benchmarks/out/ otherwise): every candidate's validation diagonal, ACC and seconds per epoch, the
choice per backbone, and the test-split diagonal of each choice in both scenarios.
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


def class_incremental(out: Path, settings: dict, threads: int) -> dict:
    """The chosen settings once more with ``--scenario class`` on the test split (reused when finished)."""
    folder = out / "class" / f"arch={settings['arch']}"
    if not (folder / "results.json").is_file():
        argv = [a for key, value in {**settings, "scenario": "class"}.items() for a in flag(key, value)]
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
    backbones = {}
    for group, choice in summary["selection"]["groups"].items():
        option = list(choice["option"])
        arch = group.split("arch=")[1].split("/")[0]
        candidates = []
        for c in choice["candidates"]:
            figures = [run_figures(out / name) for name in c["runs"] if (out / name / "results.json").is_file()]
            candidates.append({**dict(zip(option, c["value"])), "validation": figures,
                               "min_diagonal": c.get("min_diagonal", {}).get("mean"), "failed": c["failed"]})
        chosen = None if choice["chosen"] is None else dict(zip(option, choice["chosen"]))
        backbones[arch] = {"candidates": candidates, "chosen": chosen, "test": {}}
    for record in summary["runs"]:
        arch = record["settings"]["arch"]
        if record["status"] == "done":
            backbones[arch]["test"]["task"] = run_figures(out / record["name"])
    common = {k: v[0] for k, v in spec.grid.items() if len(v) == 1 and k not in ("scenario", "method", "seed")}
    for arch, entry in backbones.items():
        if entry["chosen"] is not None:
            settings = {**common, "method": "finetune", "seed": 0, "arch": arch, **entry["chosen"]}
            entry["test"]["class"] = class_incremental(out, settings, spec.threads or 1)
    protocol = ("quick smoke run: 1 epoch, tests/data/mnist2k.npz" if quick else
                "see benchmarks/sweeps/backbones_defaults.toml")
    path = save("search_backbones", {
        "protocol": protocol + "; candidates trained on 90% of the training split and scored on the held-out 10% "
                               "(validation=0.1, stratified per class; the test split is never read for the choice); "
                               "each choice then run on the test split, task- and class-incremental, seed 0",
        "selection": "highest min_diagonal (the worst task's accuracy right after learning it) on validation; "
                     "ties: the candidate listed first",
        "spec": str(SPEC.relative_to(HERE.parent)), "threads_per_run": spec.threads,
        "backbones": backbones, "failed": summary["failed"], "search_seconds": time.time() - started}, quick)
    for arch, entry in backbones.items():
        test = {s: f.get("diagonal") for s, f in entry["test"].items()}
        print(f"{arch}: chosen {entry['chosen']}; test diagonal {test}")
    print(f"wrote {path} (sweep in {out}) in {time.time() - started:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Choose the backbones' training defaults on validation data.")
    parser.add_argument("--quick", action="store_true", help="smoke run written to benchmarks/out/")
    parser.add_argument("--out", default=None, help="sweep directory (default benchmarks/out/sweeps/...)")
    args = parser.parse_args()
    name = "backbones_defaults" + ("_quick" if args.quick else "")
    main(args.quick, Path(args.out) if args.out else default_out(name))
