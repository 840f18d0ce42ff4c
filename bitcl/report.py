"""``bitcl report``: compare runs in a markdown table, with PNG plots when matplotlib is installed.

Plots: one accuracy-matrix heatmap and one per-task-accuracy-over-time plot per
run, and one capacity-over-tasks plot for all quantised runs. They are written
beside the report file (``--out``), or to ``<first run>/report/`` without it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

from bitcl.checkpoint import atomic_write_text
from bitcl.errors import BitclError, DataError
from bitcl.train.rundir import refuse_run_file
from bitcl.train.validate import read_results
from bitcl.versions import check_results_version

COLUMNS = ("run", "method", "scenario", "tasks", "ACC", "BWT", "forgetting", "final capacity", "state bytes",
           "train s")


def load_results(run_dir: str | Path) -> dict:
    """A run's results.json, validated (``bitcl.train.validate.read_results``), written by a bitcl
    of this one's contract series (``bitcl.versions``), holding every field the report shows."""
    path = _results_path(run_dir)
    results = read_results(path)
    where = str(path / "results.json" if path.is_dir() else path)
    check_results_version(results, where)
    is_rl = "return_matrix" in results
    for section, key in (("timing", "steps_per_second" if is_rl else "train_seconds"), ("memory", "state_bytes")):
        value = results.get(section, {}).get(key) if isinstance(results.get(section), dict) else None
        if not isinstance(value, list) or not value:  # a missing figure is an error, never shown as 0
            raise DataError(f"{where}: no {section}.{key} (the report's "
                            f"{'steps/s' if key == 'steps_per_second' else 'train s' if key == 'train_seconds' else 'state bytes'} "
                            "column); not a complete results.json")
    return results


def _check_one_kind(run_dirs: Sequence[str], raw: Sequence[dict]) -> None:
    """A report is one table: RL runs (returns over games) and supervised runs (accuracies over tasks) are refused together."""
    rl = [str(d) for d, r in zip(run_dirs, raw) if "return_matrix" in r]
    supervised = [str(d) for d, r in zip(run_dirs, raw) if "return_matrix" not in r]
    if rl and supervised:
        raise BitclError(f"cannot mix RL runs (bitcl rl: {', '.join(rl)}) and supervised runs (bitcl run or "
                         f"bitcl.fit: {', '.join(supervised)}) in one table; report them separately")


def _results_path(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    if path.is_dir() and not (path / "results.json").exists():
        raise BitclError(f"{run_dir}: no results.json (not a finished bitcl run)")
    return path


def data_sources(runs) -> str:
    """What each run loaded (results.json ``config.data_source``), one line per run."""
    lines = []
    for name, r in runs:
        src = r.get("config", {}).get("data_source")
        if isinstance(src, dict):
            lines.append(f"- {name}: {src.get('source')} ({src.get('name')}), train {src.get('train_shape')}, "
                         f"test {src.get('test_shape')}, classes {src.get('classes')}, "
                         f"evaluated on {src.get('evaluated_on')}")
    return ("\nData:\n\n" + "\n".join(lines) + "\n") if lines else ""


def run_names(run_dirs: Sequence[str]) -> list[str]:
    """One distinct, file-name-safe label per run: its folder name, with as many parent folders
    as it takes to tell runs apart (``a/run`` and ``b/run`` become ``a-run`` and ``b-run``)."""
    paths = [Path(d).resolve() for d in run_dirs]
    for depth in range(1, max(len(p.parts) for p in paths) + 1):
        names = ["-".join(p.parts[-depth:]).lstrip("/-") or "run" for p in paths]
        if len(set(names)) == len(names):
            break
    else:  # the same folder given twice
        names = [f"{n}-{i}" for i, n in enumerate(names)]
    return [re.sub(r"[^A-Za-z0-9._+-]+", "_", n) for n in names]


def table(runs: Sequence[tuple[str, dict]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name, r in runs:
        cap = f"{r['capacity'][-1]:.3f}" if r.get("capacity") else "–"
        state = r["memory"]["state_bytes"]  # present: load_results requires what the table shows
        train = sum(r["timing"]["train_seconds"])
        lines.append(f"| {name} | {r['method']} | {r.get('scenario', '')} | {r.get('tasks', '')} | {r['acc']:.4f} | "
                     f"{r['bwt']:+.4f} | {r['forgetting']:.4f} | {cap} | {state[-1]:,} | {train:.1f} |")
    return "\n".join(lines)


def integer_ticks(ax, axes: str) -> None:
    """Ticks at whole numbers only on the named axes ("x", "y", "xy"): task and game counts have no 1.5."""
    from matplotlib.ticker import MaxNLocator
    for name in axes:
        getattr(ax, f"{name}axis").set_major_locator(MaxNLocator(integer=True))


def _plots(runs: Sequence[tuple[str, dict]], folder: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, r in runs:
        matrix = r["accuracy_matrix"]
        t = len(matrix)
        fig, ax = plt.subplots(figsize=(1.0 + 0.6 * t, 0.8 + 0.5 * t))
        im = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        for i in range(t):
            for j in range(len(matrix[i])):
                if t <= 12:
                    ax.text(j, i, f"{matrix[i][j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if matrix[i][j] < 0.6 else "black")
        ax.set_xlabel("evaluated on task")
        ax.set_ylabel("after training task")
        integer_ticks(ax, "xy")
        ax.set_title(f"{r['method']} ({name})", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        written.append(folder / f"{name}-accuracy-matrix.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(6, 3.5))
        for j in range(t):
            ax.plot(range(j, t), [matrix[i][j] for i in range(j, t)], marker=".", label=f"task {j}")
        ax.set_xlabel("after training task")
        ax.set_ylabel("test accuracy")
        integer_ticks(ax, "x")
        ax.set_title(f"per-task accuracy over time: {r['method']} ({name})", fontsize=9)
        if t <= 10:
            ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(folder / f"{name}-accuracy-over-time.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    with_capacity = [(n, r) for n, r in runs if r.get("capacity")]
    if with_capacity:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for name, r in with_capacity:
            ax.plot(range(1, len(r["capacity"]) + 1), r["capacity"], marker=".", label=f"{r['method']} ({name})")
        ax.set_xlabel("tasks learned")
        integer_ticks(ax, "x")
        ax.set_ylabel("fraction of bits frozen")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(folder / "capacity.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def write_report(run_dirs: Sequence[str], out: Optional[str] = None) -> str:
    """Build the report; returns the markdown (also written to ``out`` when given)."""
    if out is not None:
        refuse_run_file(out, "--out")
    raw = [load_results(d) for d in run_dirs]
    _check_one_kind(run_dirs, raw)
    if raw and all("return_matrix" in r for r in raw):  # every run is a `bitcl rl` run
        from bitcl.rl.report import rl_report
        folder = Path(out).parent if out else Path(run_dirs[0]) / "report"
        text = rl_report(list(zip(run_names(run_dirs), raw)), folder, out is not None)
        if out:
            atomic_write_text(Path(out), text)
        return text
    runs = list(zip(run_names(run_dirs), raw))
    text = "# bitcl report\n\n" + table(runs) + "\n" + data_sources(runs)
    folder = Path(out).parent if out else Path(run_dirs[0]) / "report"
    try:
        pictures = _plots(runs, folder)
        text += "\n" + "\n".join(f"![{p.stem}]({p.name if out else p})" for p in pictures) + "\n"
    except ImportError:
        text += "\n(plots skipped: matplotlib is not installed; `pip install bitcl[plots]`)\n"
    if out:
        atomic_write_text(Path(out), text)
    return text
