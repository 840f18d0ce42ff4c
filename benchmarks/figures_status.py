"""Which committed results were made by the code at HEAD, and what changed since the others were made.

    python benchmarks/figures_status.py [--strict] [--json]

Each file in benchmarks/results/ records the commit it was made at (``environment.git_commit``,
written by ``_env.write_result`` from a clean tree only) and its command. A result is *current*
when nothing that decides its numbers differs between that commit and HEAD: the package
(``bitcl/``), the compiled kernels (``kernels/``), the embedded data (``data/``), the script named
in its command and the benchmarks' shared helpers (``benchmarks/_*.py``). Runs at one thread are
bit-identical for the same code and seed (``tests/train/test_determinism.py``), so a current
result is what ``make figures`` would write at HEAD on the same kind of machine, timings aside:
provided the other packages are the same too. Each result records the versions of the packages
that can move a figure (``_env.PACKAGES``); a result is current only when they equal the pins of
``constraints.txt`` (the MinAtar figure moved with an unpinned dependency while bitcl's code did
not). A result made by HEAD's code whose package versions were not recorded is listed as such.
A result that is not current lists the changed files: whether they matter is for a reader to
judge, and rerunning its command settles it.

Prints one line per result (with the wall time its script recorded) and the total: what ``make
figures`` costs, less the runs a script reused from its cache; ``--json`` prints the same as JSON. ``--strict`` exits 1 when any
result is not current (or records no usable commit), e.g. before a release; a file of
``KEPT_AS_BEFORE`` (an older result the docs quote as the before of the one that replaced it) is
listed as such and never counts as current, but ``--strict`` does not require it to be.
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
# what decides a result's numbers, besides the script that made it (_env.py only records how a result
# was made and where it is written: it decides no number)
CODE_PATHS = ("bitcl", "kernels", "data", "benchmarks/_*.py", ":(exclude)benchmarks/_env.py")
CONSTRAINTS = os.path.join(ROOT, "constraints.txt")
# Results kept only as the "before" of the figure that replaced them, quoted as such in the docs:
# listed with their provenance, never current, and not required to be by --strict. The file that
# replaced each one must exist. {kept file: replacing file}
KEPT_AS_BEFORE = {"rl_sequence_db6ce38.json": "rl_sequence.json", "rl_sequence_f4c5760.json": "rl_sequence.json",
                  "backbones_accuracy_class_resnet18_variants_c4fe719.json": "backbones_accuracy_class_resnet18_variants.json",
                  "kernels_35765a9.json": "kernels.json"}


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def script_of(command: str) -> list[str]:
    """The benchmark scripts a recorded command runs (``python benchmarks/bench_x.py ...``)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return []
    return [w for w in words if w.startswith("benchmarks/") and w.endswith(".py")]


def status(path: str, pins: dict) -> dict:
    """One result's provenance: its commit and date, whether its code equals HEAD's, what changed."""
    name = os.path.relpath(path, ROOT)
    try:
        with open(path) as f:
            record = json.load(f)
        environment = record.get("environment", {})
    except (OSError, ValueError, AttributeError) as error:
        return {"file": name, "current": False, "problem": f"unreadable: {error}"}
    commit = str(environment.get("git_commit", ""))
    entry = {"file": name, "commit": commit[:12], "date": environment.get("date"),
             "command": environment.get("command", ""), "wall_seconds": record.get("wall_seconds")}
    if not commit or commit.endswith("+uncommitted") or commit == "unknown":
        return {**entry, "current": False, "problem": "made from uncommitted code (no reproducible commit)"}
    if _git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        return {**entry, "current": False, "problem": f"commit {commit[:12]} is not in this clone's history"}
    paths = [*CODE_PATHS, *script_of(entry["command"])]
    diff = _git("diff", "--name-only", commit, "HEAD", "--", *paths)
    if diff.returncode != 0:
        return {**entry, "current": False, "problem": f"git diff failed: {diff.stderr.strip()}"}
    changed = diff.stdout.split()
    packages = package_problem(environment.get("packages"), pins)
    current = not changed and packages is None
    replaced_by = KEPT_AS_BEFORE.get(os.path.basename(path))
    if replaced_by is not None:
        if not os.path.isfile(os.path.join(os.path.dirname(path), replaced_by)):
            return {**entry, "current": False, "problem": f"kept as the before of {replaced_by}, which is missing"}
        entry["before_of"], current = replaced_by, False
    return {**entry, "current": current, "code_current": not changed, "changed": changed, "packages": packages}


def pinned_versions(path: str = CONSTRAINTS) -> dict:
    """``{normalised name: version}`` of the ``name==version`` lines of constraints.txt."""
    pins = {}
    try:
        with open(path) as f:
            for line in f:
                name, sep, version = line.split("#", 1)[0].strip().partition("==")
                if sep:
                    pins[name.strip().lower().replace("_", "-")] = version.strip()
    except OSError:
        pass
    return pins


def package_problem(recorded: dict | None, pins: dict) -> str | None:
    """Why the packages a result was made with are not the pinned ones, or None when they are."""
    if not isinstance(recorded, dict):
        return "package versions not recorded"
    differing = [f"{name} {version} (pinned {pins.get(name.lower())})" for name, version in sorted(recorded.items())
                 if version is not None and pins.get(name.lower()) not in (None, version)]
    return ("made with " + ", ".join(differing)) if differing else None


def statuses(results: str = RESULTS) -> list[dict]:
    """The status of every benchmarks/results/*.json (the archive/ folder is not a figure)."""
    pins = pinned_versions()  # read once, not once per result
    return [status(p, pins) for p in sorted(glob.glob(os.path.join(results, "*.json")))]


def describe(entry: dict) -> str:
    wall = entry.get("wall_seconds")
    minutes = f"{wall / 60:6.1f} min" if isinstance(wall, (int, float)) else "     ? min"
    head = (f"{os.path.basename(entry['file']):28s} {entry.get('commit', '?'):12s} {str(entry.get('date'))[:10]:10s} "
            f"{minutes}")
    if entry.get("problem"):
        return f"{head}  NOT CURRENT: {entry['problem']}"
    if entry.get("before_of"):
        return f"{head}  kept as the before of {entry['before_of']} (not a current figure)"
    if entry["current"]:
        return f"{head}  current (same code and packages as HEAD)"
    if entry["code_current"]:
        return f"{head}  same code as HEAD; {entry['packages']}"
    shown = ", ".join(entry["changed"][:4]) + (f" and {len(entry['changed']) - 4} more" if len(entry["changed"]) > 4 else "")
    return f"{head}  NOT CURRENT: {len(entry['changed'])} file(s) changed since: {shown}"


def total_hours(found: list[dict]) -> float:
    """The recorded wall time of the scripts behind ``found``, in hours: a script that wrote several files
    (one command, one run) counted once."""
    by_run = {(e.get("command"), e.get("commit"), round(e["wall_seconds"] or 0)) for e in found
              if isinstance(e.get("wall_seconds"), (int, float))}
    return sum(seconds for _, _, seconds in by_run) / 3600


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
        kept = sum(bool(e.get("before_of")) for e in found)
        code_only = sum(bool(e.get("code_current")) and not e["current"] and not e.get("before_of") for e in found)
        print(f"{current} of {len(found) - kept} results were made by the code at HEAD with the pinned packages; "
              f"{code_only} more by the code at HEAD with other or unrecorded package versions"
              + (f"; {kept} older file(s) kept as the before of a figure" if kept else ""))
        print(f"their scripts ran {total_hours(found):.1f} h of wall time in all, as recorded (a script that wrote "
              "two files counted once; runs a script reused from its cache not counted)")
    return 1 if args.strict and not all(e["current"] or e.get("before_of") for e in found) else 0


if __name__ == "__main__":
    sys.exit(main())
