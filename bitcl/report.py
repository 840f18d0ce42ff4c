"""``bitcl report``: compare runs in a markdown table, with PNG plots when matplotlib is installed.

Runs whose recorded settings differ only in seed are grouped: a second table gives each group's
ACC, BWT and forgetting as mean ± half-width of the 95 % Student t interval (``bitcl.stats``)
with the number of seeds, and a plot shows the groups' ACC with those intervals as error bars.

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
           "train s", "not learned")


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


def _not_learned(results: dict) -> str:
    """The marker column: tasks flagged as not learned (bitcl.train.learned), '–' for none, '?' when the
    run predates the check."""
    if "not_learned" not in results:
        return "?"
    tasks = [f"T{f['task']}" for f in results["not_learned"] if isinstance(f, dict) and "task" in f]
    return "⚠ " + ", ".join(tasks) if tasks else "–"


def table(runs: Sequence[tuple[str, dict]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name, r in runs:
        cap = f"{r['capacity'][-1]:.3f}" if r.get("capacity") else "–"
        state = r["memory"]["state_bytes"]  # present: load_results requires what the table shows
        train = sum(r["timing"]["train_seconds"])
        lines.append(f"| {name} | {r['method']} | {r.get('scenario', '')} | {r.get('tasks', '')} | {r['acc']:.4f} | "
                     f"{r['bwt']:+.4f} | {r['forgetting']:.4f} | {cap} | {state[-1]:,} | {train:.1f} | "
                     f"{_not_learned(r)} |")
    return "\n".join(lines)


# settings that do not change what a run computes, besides the seed that groups runs
_NOT_SETTINGS = frozenset({"seed", "out", "overwrite", "resume", "quiet", "data_source", "bitcl_version",
                           "evaluated_on"})


def _setting_key(config: dict) -> str:
    import json
    return json.dumps({k: v for k, v in config.items() if k not in _NOT_SETTINGS}, sort_keys=True, default=str)


def _flat(config: dict) -> dict:
    """The settings of a recorded config with the method's options beside them."""
    flat = {k: v for k, v in config.items() if k not in _NOT_SETTINGS and k != "method_options"}
    flat.update(config.get("method_options") or {})
    return flat


def seed_groups(runs: Sequence[tuple[str, dict]]) -> list[tuple[str, list[tuple[str, dict]]]]:
    """Runs grouped by their recorded settings less the seed (``config`` in results.json), in the
    order first seen; a run without a recorded config is a group of its own. Each group is labelled by
    its method and the settings in which the groups differ. Runs that share their seed as well are
    never averaged together (they would count one run twice): each stays a group of its own."""
    keyed: dict[str, list[tuple[str, dict]]] = {}
    for name, r in runs:
        key = _setting_key(r["config"]) if isinstance(r.get("config"), dict) else f"run:{name}"
        keyed.setdefault(key, []).append((name, r))
    for key, members in list(keyed.items()):
        seeds = [(r.get("config") or {}).get("seed", r.get("seed")) for _, r in members]
        if len(set(map(repr, seeds))) < len(seeds):  # the same run twice is not two samples: no group
            del keyed[key]
            keyed.update({f"{key}#{i}": [m] for i, m in enumerate(members)})
    configs = [_flat(members[0][1].get("config") or {}) for members in keyed.values()]
    differing = sorted({k for c in configs for k in c if k != "method"
                        and len({repr(d[k]) for d in configs if k in d}) > 1})
    groups = []
    for members, config in zip(keyed.values(), configs):
        extra = ", ".join(f"{k}={config[k]}" for k in differing if k in config)
        label = members[0][1]["method"] + (f" ({extra})" if extra else "")
        if not config:
            label = members[0][0]
        groups.append((label, members))
    return groups


def seed_table(groups) -> str:
    """Mean ± half-width of the 95 % t interval over the seeds of each group (n: the number of runs)."""
    from bitcl import stats
    head = (f"Over seeds: mean ± half-width of the {int(stats.LEVEL * 100)} % Student t interval "
            "(std ddof 1; no interval for n=1)")
    lines = [head, "", "| group | seeds | ACC | BWT | forgetting |", "|---|---|---|---|---|"]
    for label, members in groups:
        seeds = ", ".join(str(r.get("config", {}).get("seed", r.get("seed", "?"))) for _, r in members)
        cells = [stats.summarize([r[k] for _, r in members], k).format(4) for k in ("acc", "bwt", "forgetting")]
        lines.append(f"| {label} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _seed_plot(groups, folder: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bitcl import stats
    folder.mkdir(parents=True, exist_ok=True)
    summaries = [stats.summarize([r["acc"] for _, r in members], "acc") for _, members in groups]
    fig, ax = plt.subplots(figsize=(6, 0.6 + 0.4 * len(groups)))
    ax.barh(range(len(groups)), [s.mean for s in summaries], xerr=[s.half_width or 0.0 for s in summaries],
            capsize=3)
    ax.set_yticks(range(len(groups)), [f"{label} (n={s.n})" for (label, _), s in zip(groups, summaries)], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"ACC (mean, {int(stats.LEVEL * 100)} % t interval over seeds)")
    path = folder / "seeds-acc.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
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
    groups = seed_groups(runs)
    grouped = any(len(members) > 1 for _, members in groups)
    if grouped:
        text += "\n" + seed_table(groups) + "\n"
    folder = Path(out).parent if out else Path(run_dirs[0]) / "report"
    try:
        pictures = _plots(runs, folder) + ([_seed_plot(groups, folder)] if grouped else [])
        text += "\n" + "\n".join(f"![{p.stem}]({p.name if out else p})" for p in pictures) + "\n"
    except ImportError:
        text += "\n(plots skipped: matplotlib is not installed; `pip install bitcl[plots]`)\n"
    if out:
        atomic_write_text(Path(out), text)
    return text
