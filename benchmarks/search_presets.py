"""Choose presets on VALIDATION data, then measure them on the test split.

    .venv/bin/python benchmarks/search_presets.py permuted-blip [--quick] [--out DIR]

permuted-blip: the spec benchmarks/sweeps/search_permuted_blip.toml, run by ``bitcl sweep``
(resumable; runs into --out, default benchmarks/out/sweeps/search_permuted_blip/). Every candidate
(learning rate, batch size, BLIP's Fisher prior, chosen together) trains on 90 % of the training
split and is scored on the other 10 %; the best validation ACC is the preset (bitcl/presets.py cites
the result file); only then is it run on the test split, over seeds 0-2.

Writes benchmarks/results/search_permuted_blip.json (every candidate's validation figures and the
choice) and benchmarks/results/preset_permuted_blip.json (test ACC/BWT per seed, mean and 95 % t
interval). ``--quick``: a smoke run (2 tasks, 1 epoch, the small test file, two candidates, seed 0)
written to benchmarks/out/.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sweeps import HERE, by_name, default_out, mean_figures, save, shrink  # noqa: E402

from bitcl.sweep import load_spec, run_sweep  # noqa: E402

SPECS = {"permuted-blip": HERE / "sweeps" / "search_permuted_blip.toml"}


def permuted_blip(quick: bool, out: Path) -> None:
    spec = load_spec(SPECS["permuted-blip"])
    if quick:
        shrink(spec)
    summary = run_sweep(spec, out)
    records = by_name(summary["selection_runs"] + summary["runs"])
    (group, choice), = summary["selection"]["groups"].items()
    names = list(choice["option"])
    candidates = [{**dict(zip(names, c["value"])), "validation": mean_figures(c["runs"], records)}
                  for c in choice["candidates"]]
    chosen = dict(zip(names, choice["chosen"]))
    protocol = "quick smoke run: 2 tasks, 1 epoch, tests/data/mnist2k.npz" if quick else (
        "Permuted-MNIST, 10 tasks, task-incremental, 3 epochs, MLP 784-1200, 20 bits")
    save("search_permuted_blip", {
        "protocol": protocol + "; trained on 90% of the training split, scored on the held-out 10% (--validation 0.1)",
        "spec": str(SPECS["permuted-blip"].relative_to(HERE.parent)), "candidates": candidates, "chosen": chosen},
        quick)
    row = summary["benchmarks"][spec.grid["benchmark"][0]]["ranking"][0]
    seeds = [{"seed": r["settings"]["seed"], **r["results"]} for r in summary["runs"] if r["status"] == "done"]
    path = save("preset_permuted_blip", {
        "protocol": protocol + ", test split; mean and 95% Student t interval over seeds",
        "setting": chosen, "seeds": seeds, "acc": row["acc"], "bwt": row["bwt"], "forgetting": row["forgetting"],
        "mean_acc": row["acc"]["mean"], "mean_bwt": row["bwt"]["mean"], "failed": summary["failed"]}, quick)
    print(f"chosen on validation: {chosen}; wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Choose presets on validation data.")
    parser.add_argument("what", nargs="?", default="permuted-blip", choices=sorted(SPECS))
    parser.add_argument("--quick", action="store_true", help="smoke run written to benchmarks/out/")
    parser.add_argument("--out", default=None, help="sweep directory (default benchmarks/out/sweeps/...)")
    args = parser.parse_args()
    name = "search_" + args.what.replace("-", "_") + ("_quick" if args.quick else "")
    permuted_blip(args.quick, Path(args.out) if args.out else default_out(name))
