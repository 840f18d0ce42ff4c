"""Shared by the search scripts that run on `bitcl sweep` (benchmarks/sweeps/*.toml)."""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from _env import environment, write_result

HERE = Path(__file__).resolve().parent
SMALL_DATA = HERE.parent / "tests" / "data" / "mnist2k.npz"


def shrink(spec, methods=None) -> None:
    """The --quick smoke version of a search: 2 tasks, 1 epoch, the small MNIST file, seed 0, the
    first two candidates of each choice, no extension (``methods``: keep only these)."""
    import dataclasses
    spec.grid.update(tasks=[2], epochs=[1], data=[str(SMALL_DATA)], seed=[0])
    if methods:
        spec.grid["method"] = [m for m in spec.grid["method"] if m in methods]
    sel = spec.select
    if sel is not None:
        values = ({m: v[:2] for m, v in sel.values.items() if m in spec.grid["method"]}
                  if isinstance(sel.values, dict) else sel.values[:2])
        option = ({m: o for m, o in sel.option.items() if m in spec.grid["method"]}
                  if isinstance(sel.option, dict) else sel.option)
        spec.select = dataclasses.replace(sel, values=values, option=option, extend=0, seeds=(0,))


def by_name(records: list[dict]) -> dict[str, dict]:
    return {r["name"]: r for r in records}


def mean_figures(names: list[str], records: dict[str, dict]) -> dict:
    """Mean ACC, BWT and forgetting of the named (finished) runs, with the per-run values."""
    done = [records[n]["results"] for n in names if records[n]["status"] == "done"]
    out = {k: statistics.fmean(r[k] for r in done) for k in ("acc", "bwt", "forgetting")} if done else {}
    return {**out, "n": len(done), "runs": names}


def save(name: str, payload: dict, quick: bool) -> str:
    """benchmarks/results/NAME.json (write_result), or benchmarks/out/NAME_quick.json for --quick."""
    if not quick:
        return write_result(name, payload)
    folder = HERE / "out"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}_quick.json"
    path.write_text(json.dumps({**payload, "environment": environment()}, indent=2) + "\n")
    return str(path)


def default_out(name: str) -> Path:
    return Path(os.environ.get("BITCL_SWEEPS", HERE / "out" / "sweeps")) / name
