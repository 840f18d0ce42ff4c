"""Choose every regulariser's penalty strength on VALIDATION data, then measure it on the test split.

    .venv/bin/python benchmarks/search_regularizers.py [--quick] [--methods ewc,si] [--out DIR]

Issue 13 ("honest defaults"): each method's default strength is the choice of this search. The
protocol and the grid are the sweep spec benchmarks/sweeps/search_regularizers.toml, run by
``bitcl sweep`` (runs into --out, default benchmarks/out/sweeps/search_regularizers/: resumable,
so an interrupted search continues where it stopped). This script only turns the sweep's
summary.json into the two committed results:

* benchmarks/results/search_regularizers.json: every candidate's validation ACC/BWT/forgetting, the
  choice per method (highest validation ACC; ties: the smaller strength), and the excluded methods;
* benchmarks/results/regularizers_split.json: each method at its choice on the test split, mean
  and 95 % t interval over seeds 0-2, ranked, with Welch's p against the best.

``--quick``: a smoke run (2 tasks, 1 epoch, the 2,000-digit test file, seed 0, two candidates per
method, no extension), written to benchmarks/out/ (not a committed result).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sweeps import HERE, by_name, default_out, mean_figures, save, shrink  # noqa: E402

from bitcl.strategies import get_strategy, strategy_names  # noqa: E402
from bitcl.sweep import load_spec, run_sweep  # noqa: E402

SPEC = HERE / "sweeps" / "search_regularizers.toml"
STRENGTH_FIELDS = ("c", "lam")
EXCLUDED = {"dlcft": "c = 1 makes DLCFT's penalty exactly the past tasks' losses under the linearisation "
                     "(exact by construction, not a tuning knob)"}


def strength_field(method: str):
    for f in dataclasses.fields(get_strategy(method).Options):
        if f.name in STRENGTH_FIELDS:
            return f
    return None


def main(quick: bool, methods, out: Path) -> None:
    started = time.time()
    spec = load_spec(SPEC)
    if quick or methods:
        shrink(spec, methods) if quick else spec.grid.update(method=[m for m in spec.grid["method"] if m in methods])
    summary = run_sweep(spec, out)
    records = by_name(summary["selection_runs"] + summary["runs"])
    search, chosen = {}, {}
    for group, choice in summary["selection"]["groups"].items():
        method = group.split("/")[1]
        candidates = [{"value": c["value"], "validation": mean_figures(c["runs"], records)}
                      for c in choice["candidates"]]
        values = spec.select.values_for(method)
        search[method] = {"option": choice["option"], "grid": values, "candidates": candidates,
                          "chosen": choice["chosen"], "on_edge": choice["on_edge"]}
        chosen[method] = {"option": choice["option"], "value": choice["chosen"]}
    protocol = ("quick smoke run: 2 tasks, 1 epoch, tests/data/mnist2k.npz" if quick else
                "see benchmarks/sweeps/search_regularizers.toml")
    save("search_regularizers", {
        "protocol": protocol + "; every candidate trained on 90% of the training split and scored on the held-out "
                               "10% (validation=0.1, stratified per class; the test split is never read)",
        "selection": "highest mean validation ACC (ties: the smaller strength); grid and extension in the spec",
        "spec": str(SPEC.relative_to(HERE.parent)), "config": {k: v[0] for k, v in spec.grid.items()
                                                             if len(v) == 1 and k != "data"},
        "methods": search, "chosen": chosen,
        "excluded": {m: {"option": strength_field(m).name, "value": float(strength_field(m).default), "reason": why}
                     for m, why in EXCLUDED.items() if m in strategy_names() and strength_field(m) is not None},
        "search_seconds": time.time() - started}, quick)
    ranking = summary["benchmarks"]["split-mnist"]["ranking"]
    test = {}
    for row in ranking:
        method = row["configuration"].split("/")[0]
        test[method] = {"options": {chosen[method]["option"]: chosen[method]["value"]} if method in chosen else {},
                        "acc": row["acc"]["mean"], "bwt": row["bwt"]["mean"], "forgetting": row["forgetting"]["mean"],
                        "summary": {k: row[k] for k in ("acc", "bwt", "forgetting")}, "seeds": row["seeds"],
                        "rank": row["rank"], "p_vs_best": row["p_vs_best"],
                        "significantly_below_best": row["significantly_below_best"]}
    path = save("regularizers_split", {
        "protocol": protocol + "; trained on the whole training split, evaluated on the test split, each method at the "
                               "strength chosen on validation (search_regularizers.json); mean and 95% Student t "
                               "interval over seeds, Welch's t-test against the best",
        "methods": test, "failed": summary["failed"]}, quick)
    print(f"wrote {path} (sweep in {out}) in {time.time() - started:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Choose every regulariser's strength on validation data.")
    parser.add_argument("--quick", action="store_true", help="smoke run written to benchmarks/out/")
    parser.add_argument("--methods", default=None, help="only these methods (comma-separated)")
    parser.add_argument("--out", default=None, help="sweep directory (default benchmarks/out/sweeps/...)")
    args = parser.parse_args()
    methods = args.methods.split(",") if args.methods else None
    name = "search_regularizers" + ("_quick" if args.quick else "")
    main(args.quick, methods, Path(args.out) if args.out else default_out(name))
