"""Which committed results were made by the code at HEAD, and what changed since the others were made.

    python benchmarks/figures_status.py [--strict] [--json]

Each file in benchmarks/results/ records the commit it was made at (``environment.git_commit``,
written by ``_env.write_result`` from a clean tree only) and its command. A result is *current*
when nothing that decides its numbers differs between that commit and HEAD: the package
(``bitcl/``), the compiled kernels (``kernels/``), the embedded data (``data/``), the script named
in its command and the benchmarks' shared helpers (``benchmarks/_*.py``). Runs at one thread are
bit-identical for the same code and seed (``tests/train/test_determinism.py``), so a current
result is what ``make figures`` would write at HEAD on the same kind of machine, timings aside.
A result that is not current lists the changed files: whether they matter is for a reader to
judge, and rerunning its command settles it.

Prints one line per result; ``--json`` prints the same as JSON. ``--strict`` exits 1 when any
result is not current (or records no usable commit), e.g. before a release.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
# what decides a result's numbers, besides the script that made it
CODE_PATHS = ("bitcl", "kernels", "data", "benchmarks/_*.py")


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def script_of(command: str) -> list[str]:
    """The benchmark scripts a recorded command runs (``python benchmarks/bench_x.py ...``)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return []
    return [w for w in words if w.startswith("benchmarks/") and w.endswith(".py")]


def status(path: str) -> dict:
    """One result's provenance: its commit and date, whether its code equals HEAD's, what changed."""
    name = os.path.relpath(path, ROOT)
    try:
        with open(path) as f:
            environment = json.load(f).get("environment", {})
    except (OSError, ValueError) as error:
        return {"file": name, "current": False, "problem": f"unreadable: {error}"}
    commit = str(environment.get("git_commit", ""))
    entry = {"file": name, "commit": commit[:12], "date": environment.get("date"),
             "command": environment.get("command", "")}
    if not commit or commit.endswith("+uncommitted") or commit == "unknown":
        return {**entry, "current": False, "problem": "made from uncommitted code (no reproducible commit)"}
    if _git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        return {**entry, "current": False, "problem": f"commit {commit[:12]} is not in this clone's history"}
    paths = [*CODE_PATHS, *script_of(entry["command"])]
    diff = _git("diff", "--name-only", commit, "HEAD", "--", *paths)
    if diff.returncode != 0:
        return {**entry, "current": False, "problem": f"git diff failed: {diff.stderr.strip()}"}
    changed = diff.stdout.split()
    return {**entry, "current": not changed, "changed": changed}


def statuses(results: str = RESULTS) -> list[dict]:
    """The status of every benchmarks/results/*.json (the archive/ folder is not a figure)."""
    return [status(p) for p in sorted(glob.glob(os.path.join(results, "*.json")))]


def describe(entry: dict) -> str:
    head = f"{os.path.basename(entry['file']):28s} {entry.get('commit', '?'):12s} {str(entry.get('date'))[:10]:10s}"
    if entry.get("problem"):
        return f"{head}  NOT CURRENT: {entry['problem']}"
    if entry["current"]:
        return f"{head}  current (same code as HEAD)"
    shown = ", ".join(entry["changed"][:4]) + (f" and {len(entry['changed']) - 4} more" if len(entry["changed"]) > 4 else "")
    return f"{head}  NOT CURRENT: {len(entry['changed'])} file(s) changed since: {shown}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strict", action="store_true", help="exit 1 when any result is not current")
    parser.add_argument("--json", action="store_true", help="print the statuses as JSON")
    args = parser.parse_args(argv)
    found = statuses()
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        for entry in found:
            print(describe(entry))
        current = sum(e["current"] for e in found)
        print(f"{current} of {len(found)} results were made by the code at HEAD")
    return 1 if args.strict and not all(e["current"] for e in found) else 0


if __name__ == "__main__":
    sys.exit(main())
