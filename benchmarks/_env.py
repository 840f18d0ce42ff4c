"""Where a benchmark's result goes, and what it records about how it was made.

Every committed figure (benchmarks/results/*.json) must come from committed code, so
:func:`write_result` writes into benchmarks/results/ only from a clean checkout (no tracked
file modified, no untracked source file). From a dirty tree it writes the same JSON under
benchmarks/out/ (git-ignored) and says so: a draft, never a figure. Each result records the
commit, the command that made it, the environment and the wall time since the script started.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
DRAFTS = os.path.join(HERE, "out")
STARTED = time.time()  # the script's start, as near as a benchmark's first import
SOURCE_SUFFIXES = (".py", ".c", ".h", ".toml", ".cfg", ".txt")


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True, timeout=30,
                          check=True).stdout


def code_version() -> dict:
    """The git trees of the code a run executes (bitcl/ and kernels/): a cached run made by other code
    is never reused, whatever changed elsewhere in the repository (benchmarks, docs)."""
    trees = {}
    for part in ("bitcl", "kernels"):
        try:
            trees[part] = _git("rev-parse", f"HEAD:{part}").strip()
        except (OSError, subprocess.SubprocessError):  # not a git checkout
            trees[part] = "unknown"
    return trees


def dirty_paths() -> list[str]:
    """Tracked files modified, and untracked source files, outside benchmarks/results/ and benchmarks/out/."""
    lines = _git("status", "--porcelain", "--untracked-files=all").splitlines()
    dirty = []
    for line in lines:
        status, path = line[:2], line[3:]
        if path.startswith(("benchmarks/results/", "benchmarks/out/")):
            continue
        if status == "??" and not path.endswith(SOURCE_SUFFIXES):
            continue
        dirty.append(path)
    return dirty


def commit() -> tuple[str, list[str]]:
    """The HEAD commit and the dirty paths (``unknown`` outside a git checkout)."""
    try:
        return _git("rev-parse", "HEAD").strip(), dirty_paths()
    except (OSError, subprocess.SubprocessError):
        return "unknown", ["(not a git checkout)"]


def command() -> str:
    """The command line that ran this benchmark, relative to the repository root."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), os.path.dirname(HERE)) if sys.argv[0] else "python"
    return shlex.join(["python", script, *sys.argv[1:]])


# the installed packages besides torch whose versions can move a figure (environments, data, baselines);
# recorded with each result and compared with constraints.txt by figures_status.py
PACKAGES = ("numpy", "gymnasium", "MinAtar", "ale-py", "brevitas", "avalanche-lib", "torchvision",
            "stable-baselines3", "scipy")


def package_versions() -> dict:
    """``{name: version}`` of :data:`PACKAGES` (``None`` for one not installed)."""
    from importlib import metadata
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment() -> dict:
    """CPU, cores, torch threads, versions (torch, python, bitcl and :data:`PACKAGES`), git commit
    (``+uncommitted`` when dirty), command and date."""
    import bitcl
    head, dirty = commit()
    return {"cpu": _cpu(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "bitcl": bitcl.__version__,
            "packages": package_versions(),
            "git_commit": head + ("+uncommitted" if dirty else ""), "command": command(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def result_path(name: str) -> str:
    """benchmarks/results/<name>.json from a clean tree, else benchmarks/out/<name>.json (a draft)."""
    head, dirty = commit()
    if dirty:
        shown = ", ".join(dirty[:3]) + (f" and {len(dirty) - 3} more" if len(dirty) > 3 else "")
        print(f"benchmark: the tree is not clean ({shown}): writing a draft to benchmarks/out/, not a "
              "committed figure; commit first to write benchmarks/results/", file=sys.stderr)
        return os.path.join(DRAFTS, f"{name}.json")
    return os.path.join(RESULTS, f"{name}.json")


def write_result(name: str, payload: dict, indent: int = 2) -> str:
    """Write ``payload`` with ``environment`` and ``wall_seconds`` added, atomically; returns the path."""
    path = result_path(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    record = {**payload, "environment": environment(), "wall_seconds": time.time() - STARTED}
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=indent)
        f.write("\n")
    os.replace(tmp, path)
    print(f"wrote {os.path.relpath(path, os.path.dirname(HERE))}", file=sys.stderr)
    return path
