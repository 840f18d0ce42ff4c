"""A sweep's summary: per benchmark, each configuration's mean ± 95 % interval over seeds, the
ranking by mean ACC and which differences from the best are significant (``bitcl.stats``: Student
t intervals, Welch's test at 0.05), written as summary.json, summary.md and plots.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from bitcl.checkpoint import atomic_write_text
from bitcl import stats

FIGURES = ("acc", "bwt", "forgetting")
INTERVAL_TEXT = (f"mean ± half-width of the {int(stats.LEVEL * 100)} % Student t interval over seeds "
                 f"(std with ddof 1); p: Welch's t-test against the best, significant when p < {stats.ALPHA}")


def group_figures(groups: dict[str, list[dict]]) -> list[dict]:
    """Rank configurations by mean ACC; each with its summaries and Welch's test against the best.

    ``groups``: label -> the figures (``acc``, ``bwt``, ``forgetting``, ``seed``) of its runs."""
    rows = []
    for label, runs in groups.items():
        row = {"configuration": label, "n": len(runs), "seeds": [r.get("seed") for r in runs]}
        for key in FIGURES:
            row[key] = stats.summarize([r[key] for r in runs], key).as_dict()
        row["acc_values"] = [r["acc"] for r in runs]
        rows.append(row)
    rows.sort(key=lambda r: -r["acc"]["mean"])
    best = rows[0] if rows else None
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
        if row is best:
            row["p_vs_best"], row["significantly_below_best"] = None, None
            continue
        p = stats.welch_p(best["acc_values"], row["acc_values"])
        row["p_vs_best"] = p
        row["significantly_below_best"] = None if p is None else p < stats.ALPHA
    return rows


def _cell(summary: dict) -> str:
    s = stats.Summary(**summary)
    return s.format(4).replace(f" (n={s.n})", "")


def _verdict(row: dict) -> str:
    if row["rank"] == 1:
        return "best"
    if row["significantly_below_best"] is None:
        return "not tested (n < 2)"
    return "yes" if row["significantly_below_best"] else "not significant"


def markdown_table(rows: Sequence[dict]) -> str:
    """One row per configuration: rank, ACC/BWT/forgetting as mean ± half-width, n, p against the best."""
    lines = ["| rank | configuration | ACC | BWT | forgetting | n | p vs best (Welch) | below best? |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = "–" if r["p_vs_best"] is None else f"{r['p_vs_best']:.3g}"
        lines.append(f"| {r['rank']} | {r['configuration']} | {_cell(r['acc'])} | {_cell(r['bwt'])} | "
                     f"{_cell(r['forgetting'])} | {r['n']} | {p} | {_verdict(r)} |")
    return "\n".join(lines)


def write_summary(spec, out: Path, records: list[dict], selection: Optional[dict],
                  select_records: list[dict]) -> dict:
    """summary.json, summary.md and plots in ``out``; returns the summary."""
    benchmarks: dict[str, dict[str, list[dict]]] = {}
    curves: dict[str, dict[str, list[list[float]]]] = {}
    for record in records:
        if record.get("status") != "done":
            continue
        label = record["group"].split("/", 1)[1]
        figures = {**record["results"], "seed": record["settings"].get("seed")}
        benchmarks.setdefault(record["benchmark"], {}).setdefault(label, []).append(figures)
        curves.setdefault(record["benchmark"], {}).setdefault(label, []).append(record["results"]["acc_after_task"])
    failed = [{"name": r["name"], "attempts": r["attempts"], "error": r.get("error")}
              for r in [*select_records, *records] if r.get("status") != "done"]
    summary = {
        "spec": str(spec.path), "out": str(out),
        "interval": INTERVAL_TEXT, "interval_kind": stats.INTERVAL_KIND, "level": stats.LEVEL, "alpha": stats.ALPHA,
        "selection": selection,
        "benchmarks": {b: {"ranking": group_figures(groups)} for b, groups in benchmarks.items()},
        "runs": [{k: r.get(k) for k in ("name", "dir", "settings", "status", "attempts", "error", "results",
                                        "reused")} for r in records],
        "selection_runs": [{k: r.get(k) for k in ("name", "dir", "settings", "status", "attempts", "error",
                                                  "results")} for r in select_records],
        "failed": failed,
    }
    text = ["# bitcl sweep", "", f"Spec: `{spec.path}`. ACC, BWT, forgetting: {INTERVAL_TEXT}.", ""]
    if selection is not None:
        optuna = selection.get("sampler") == "optuna"
        how = f", {selection['n_trials']} trials proposed by Optuna's TPE sampler" if optuna else ""
        edge = " (the smallest or largest value tried)" if optuna else " (on the edge of the grid)"
        text += [f"Chosen on a validation hold-out ({selection['fraction']:g} of the training split, seeds "
                 f"{selection['seeds']}, by mean {selection['metric']}{how}):", ""]
        text += [f"- {g}: " + (", ".join(f"{n} = {v!r}" for n, v in zip(c["option"], c["chosen"] or ()))
                               if isinstance(c["option"], (list, tuple)) else f"{c['option']} = {c['chosen']!r}")
                 + (edge if c.get("on_edge") else "")
                 + (f" — {c['note']}" if c.get("note") else "") for g, c in selection["groups"].items()]
        text.append("")
    for bench, entry in summary["benchmarks"].items():
        text += [f"## {bench}", "", markdown_table(entry["ranking"]), ""]
    if failed:
        text += ["## Failed runs", ""] + [f"- {f['name']} ({f['attempts']} attempts): {f['error']}" for f in failed]
        text.append("")
    try:
        plots = write_plots(summary["benchmarks"], curves, out / "plots")
        summary["plots"] = [str(p) for p in plots]
        text += [f"![{p.stem}](plots/{p.name})" for p in plots]
    except ImportError:
        summary["plots"] = []
        text.append("(plots skipped: matplotlib is not installed; `pip install bitcl[plots]`)")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "summary.md", "\n".join(text) + "\n")
    return summary


def write_plots(benchmarks: dict, curves: dict, folder: Path) -> list[Path]:
    """Per benchmark: ACC per configuration with 95 % interval bars, and mean accuracy over the tasks
    learned so far after each task (error bars: the same interval)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for bench, entry in benchmarks.items():
        rows = entry["ranking"]
        safe = bench.replace("/", "_")
        fig, ax = plt.subplots(figsize=(6, 0.6 + 0.4 * len(rows)))
        means = [r["acc"]["mean"] for r in rows]
        errors = [0.0 if r["acc"]["high"] is None else (r["acc"]["high"] - r["acc"]["low"]) / 2 for r in rows]
        ax.barh(range(len(rows)), means, xerr=errors, capsize=3, color="tab:blue")
        ax.set_yticks(range(len(rows)), [f"{r['configuration']} (n={r['n']})" for r in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("ACC (mean, 95 % t interval over seeds)")
        ax.set_title(bench, fontsize=9)
        written.append(folder / f"{safe}-acc.png")
        fig.savefig(written[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(6, 3.5))
        for label, runs in curves[bench].items():
            tasks = min(len(c) for c in runs)
            mean, err = [], []
            for t in range(tasks):
                s = stats.summarize([c[t] for c in runs])
                mean.append(s.mean)
                err.append(s.half_width or 0.0)
            ax.errorbar(range(1, tasks + 1), mean, yerr=err, marker=".", capsize=3, label=f"{label} (n={len(runs)})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("tasks learned")
        ax.set_ylabel("mean accuracy on tasks so far")
        ax.set_title(f"{bench}: accuracy over tasks (95 % t interval)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(folder / f"{safe}-acc-over-tasks.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written
