"""Reports of ``bitcl rl`` runs: a markdown table and plots of return curves and matrices.

``bitcl report`` hands results that hold a ``return_matrix`` here (``is_rl_result``). Plots
(matplotlib, the ``plots`` extra): per run, the training-return curve of every game and the
normalised return matrix (docs/contracts/rl-results.md: ``(R[i][j] - random_j) / (ref_j - random_j)``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

COLUMNS = ("run", "method", "games", "score (over games)", "forgetting (over games)", "not learned",
           "final capacity", "state bytes", "steps/s")


def is_rl_result(results: dict) -> bool:
    return "return_matrix" in results and "games" in results


def _fmt(value, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def _over(r: dict, value_key: str, over_key: str) -> str:
    """``0.951 (3/3)``: a score or forgetting with how many games it averages; results written
    before bitcl 0.3 do not record that and show the bare value."""
    value = _fmt(r.get(value_key))
    if over_key not in r:
        return value
    total = len(r["games"]) if value_key == "score" else max(len(r["games"]) - 1, 0)
    return f"{value} ({len(r[over_key])}/{total})"


def table(runs: Sequence[tuple[str, dict]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name, r in runs:
        cap = _fmt(r["capacity"][-1]) if r.get("capacity") else "–"
        state = (r.get("memory", {}).get("state_bytes") or [0])[-1]
        sps = r.get("timing", {}).get("steps_per_second") or [0.0]
        unlearned = ",".join(r.get("unlearned_games") or []) or "–"
        lines.append(f"| {name} | {r['method']} | {','.join(r['games'])} | {_over(r, 'score', 'score_over')} | "
                     f"{_over(r, 'forgetting', 'forgetting_over')} | {unlearned} | {cap} | {state:,} | "
                     f"{sum(sps) / len(sps):.0f} |")
    return "\n".join(lines)


def plot_normalised(ax, r: dict, title: str) -> None:
    """Heatmap of one run's normalised matrix (null cells grey), values written in the cells."""
    import numpy as np
    norm = np.array([[np.nan if v is None else v for v in row] for row in r["normalised_matrix"]], dtype=float)
    im = ax.imshow(norm, vmin=-0.2, vmax=1.2, cmap="viridis")
    for i in range(norm.shape[0]):
        for j in range(norm.shape[1]):
            if np.isfinite(norm[i, j]):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] < 0.6 else "black")
    games = r["games"]
    ax.set_xticks(range(len(games)), games, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(norm.shape[0]), [f"after {g}" for g in games[:norm.shape[0]]], fontsize=7)
    ax.set_title(title, fontsize=8)
    return im


def plots(runs: Sequence[tuple[str, dict]], folder: Path) -> list[Path]:
    """Per run: ``<name>_rl.png`` with the training-return curves and the normalised matrix."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, r in runs:
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
        offset = 0
        for game, curve in zip(r["games"], r.get("train_curves", [])):
            xs = [offset + s for s, v in zip(curve["steps"], curve["returns"]) if v is not None]
            ys = [v for v in curve["returns"] if v is not None]
            left.plot(xs, ys, label=game)
            offset += curve["steps"][-1] if curve["steps"] else 0
        left.set_xlabel("environment steps (games in sequence)")
        left.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are counts: no 2.5 ticks on short runs
        left.set_ylabel("training episode return")
        left.legend(fontsize=7)
        plot_normalised(right, r, f"{name}: normalised return")
        fig.tight_layout()
        path = folder / f"{Path(name).name or 'run'}_rl.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def rl_report(runs: Sequence[tuple[str, dict]], folder: Path, relative_links: bool) -> str:
    """The markdown of an RL report: the table, then the plots (written to ``folder``) when
    matplotlib is installed. ``bitcl report`` calls it when every run given is an RL run."""
    text = "# bitcl report (continual RL)\n\n" + table(runs) + "\n"
    try:
        pictures = plots(runs, Path(folder))
        text += "\n" + "\n".join(f"![{p.stem}]({p.name if relative_links else p})" for p in pictures) + "\n"
    except ImportError:
        text += "\n(plots skipped: matplotlib is not installed; `pip install bitcl[plots]`)\n"
    return text
