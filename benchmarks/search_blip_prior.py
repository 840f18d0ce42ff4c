"""Choose BLIP's Fisher prior F_0 on the conv backbones on VALIDATION data, then measure it.

    .venv/bin/python benchmarks/search_blip_prior.py [--quick] [--out DIR]

The registered prior (``BlipOptions.fisher_prior``) was chosen on an MLP; this asks whether AlexNet
and ResNet-18 want another. The protocol and the candidates are the sweep spec
benchmarks/sweeps/search_blip_prior_backbones.toml (the backbone table's protocol,
task-incremental), run by ``bitcl sweep`` (runs into --out, default
benchmarks/out/sweeps/search_blip_prior_backbones/: resumable). Each candidate trains BLIP on 90 %
of the training split and is scored on the held-out 10 %; per backbone the candidate with the
highest validation ACC is chosen (Shi et al., CVPR 2021, Eq. 8: a larger F_0 freezes fewer bits,
so the prior trades keeping the old task against learning the new one), and the sweep runs the
choice on the test split over seeds 0-2.

Writes ``search_blip_prior_backbones`` through ``_env.write_result`` (benchmarks/results/ from a
clean tree, benchmarks/out/ otherwise): per backbone every candidate's validation diagonal, ACC,
forgetting and frozen fraction, the choice, whether it lies on the edge of the grid, the registered
prior, and the choice's test figures per seed with their mean and 95 % t interval.
``--quick``: a smoke run (1 epoch, the 2,000-digit test file, two candidates) to benchmarks/out/.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sweeps import HERE, default_out, save, shrink  # noqa: E402

from bitcl.stats import summarize  # noqa: E402
from bitcl.strategies.blip import BlipOptions  # noqa: E402
from bitcl.sweep import load_spec, run_sweep  # noqa: E402

SPEC = HERE / "sweeps" / "search_blip_prior_backbones.toml"


def figures(folder: Path) -> dict:
    """Diagonal, ACC, forgetting and the frozen fraction after the last task of one finished run."""
    results = json.loads((folder / "results.json").read_text())
    matrix = results["accuracy_matrix"]
    return {"diagonal": [row[t] for t, row in enumerate(matrix)], "acc": results["acc"],
            "forgetting": results["forgetting"], "frozen_fraction": results["capacity"][-1],
            "not_learned": results["not_learned"], "evaluated_on": results["config"]["data_source"]["evaluated_on"]}


def arch_of(group: str) -> str:
    """The backbone of a sweep group label such as ``split-mnist/blip/scenario=task/arch=resnet18``."""
    return dict(part.split("=", 1) for part in group.split("/") if "=" in part)["arch"]


def main(quick: bool, out: Path) -> None:
    started = time.time()
    spec = load_spec(SPEC)
    if quick:
        shrink(spec)
    summary = run_sweep(spec, out)
    backbones: dict[str, dict] = {}
    for group, choice in summary["selection"]["groups"].items():
        candidates = [{"fisher_prior": c["value"],
                       "validation": [figures(out / name) for name in c["runs"] if (out / name / "results.json").is_file()],
                       "failed": c["failed"]} for c in choice["candidates"]]
        backbones[arch_of(group)] = {"candidates": sorted(candidates, key=lambda c: c["fisher_prior"]),
                                     "chosen": choice["chosen"], "on_edge": choice["on_edge"], "test": []}
    for record in summary["runs"]:
        if record["status"] == "done":
            entry = backbones[record["settings"]["arch"]]
            entry["test"].append({"seed": record["settings"]["seed"], **figures(out / record["name"])})
    for entry in backbones.values():
        entry["test"].sort(key=lambda run: run["seed"])
        if entry["test"]:
            entry["test_summary"] = {
                "acc": summarize([r["acc"] for r in entry["test"]], "acc").as_dict(),
                "forgetting": summarize([r["forgetting"] for r in entry["test"]], "forgetting").as_dict(),
                "min_diagonal": summarize([min(r["diagonal"]) for r in entry["test"]], "min_diagonal").as_dict()}
    protocol = ("quick smoke run: 1 epoch, tests/data/mnist2k.npz" if quick else
                "see benchmarks/sweeps/search_blip_prior_backbones.toml")
    path = save("search_blip_prior_backbones", {
        "protocol": protocol + "; candidates trained on 90% of the training split and scored on the held-out 10% "
                               "(validation=0.1, stratified per class; the test split is never read for the choice), "
                               "seed 0; the choice then run on the test split over the spec's seeds",
        "selection": "per backbone: the highest validation ACC; ties: the smaller prior",
        "registered_prior": BlipOptions.fisher_prior, "spec": str(SPEC.relative_to(HERE.parent)),
        "threads_per_run": spec.threads, "backbones": backbones, "failed": summary["failed"],
        "search_seconds": time.time() - started}, quick)
    for arch, entry in backbones.items():
        test = entry.get("test_summary", {}).get("acc", {})
        print(f"{arch}: chosen prior {entry['chosen']} (on edge: {entry['on_edge']}), test ACC {test.get('mean')}")
    print(f"wrote {path} (sweep in {out}) in {time.time() - started:.0f} s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Choose BLIP's Fisher prior on the conv backbones on validation data.")
    parser.add_argument("--quick", action="store_true", help="smoke run written to benchmarks/out/")
    parser.add_argument("--out", default=None, help="sweep directory (default benchmarks/out/sweeps/...)")
    return parser


if __name__ == "__main__":
    args = build_parser().parse_args()
    name = "search_blip_prior_backbones" + ("_quick" if args.quick else "")
    main(args.quick, Path(args.out) if args.out else default_out(name))
