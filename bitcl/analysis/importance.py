"""``bitcl analyze importance``: do SI, MAS and AF behave like sqrt(Fisher)?

Benzing ("Unifying Importance Based Regularisation Methods for Continual
Learning", AISTATS 2022, arXiv 2006.06357) argues that SI (through its
minibatch-noise bias), MAS and AF all approximate sqrt(Fisher). This trains one
task of a benchmark while tracking the path-integral measures (SI, SIU, SIB,
SOS) along the same trajectory, then computes the Fisher-based and output
measures at the final parameters, over all backbone weights. For each measure m:

* ``exponent`` a and ``r2`` of the least-squares fit log m = a log F + b over
  weights where both are positive (a ≈ 0.5: behaves like sqrt(F); a ≈ 1: like F);
* ``pearson_fisher`` and ``pearson_sqrt_fisher``: linear-scale correlations with
  F and sqrt(F) (rank or log-scale correlations cannot tell F from sqrt(F)).
"""
from __future__ import annotations

import dataclasses

import json
from pathlib import Path
from typing import Optional

import torch

from bitcl.checkpoint import atomic_write_text
from bitcl.config import RunConfig
from bitcl.engine import Engine
from bitcl.errors import ConfigError
from bitcl.importance import PathIntegral, batch_fisher_sums, output_sensitivity_sums, task_mean
from bitcl.strategies.regularizer import ImportanceRegularizer

PATH_KINDS = ("si", "siu", "sib", "sos")
MEASURES = PATH_KINDS + ("mas", "masx", "af", "rewc", "fisher_empirical")


class _Tracker(ImportanceRegularizer):
    """Trains like finetune while tracking every path-integral measure on one trajectory."""

    name = "analysis"

    needs = frozenset({"independent_gradient"})

    def __init__(self, options, model, info):
        super().__init__(options, model, info)
        self.trackers = {k: PathIntegral(self.params, k, xi=0.1, alpha=1.0) for k in PATH_KINDS}

    def penalty(self):
        return None

    def before_task(self, ctx):
        for tracker in self.trackers.values():
            tracker.start_task()

    def after_backward(self, ctx):
        independent = ctx.independent_gradient(self.params)
        for tracker in self.trackers.values():
            tracker.before_step(independent)

    def after_step(self, ctx):
        for tracker in self.trackers.values():
            tracker.after_step()

    def end_task(self, ctx):
        pass


def fit(measure: torch.Tensor, fisher: torch.Tensor) -> dict:
    """Log-log exponent, R², and linear Pearson correlations with F and sqrt(F)."""
    m, f = measure.double().flatten(), fisher.double().flatten()
    both = (m > 0) & (f > 0)
    out = {"weights": int(m.numel()), "weights_fitted": int(both.sum())}
    if both.sum() >= 3:
        x, y = f[both].log(), m[both].log()
        xc, yc = x - x.mean(), y - y.mean()
        a = float((xc * yc).sum() / (xc * xc).sum())
        resid = yc - a * xc
        out["exponent"] = a
        out["r2"] = float(1 - (resid * resid).sum() / (yc * yc).sum())
    else:
        out["exponent"] = out["r2"] = None

    def pearson(u, v):
        u, v = u - u.mean(), v - v.mean()
        den = (u.norm() * v.norm())
        return float((u * v).sum() / den) if den > 0 else None

    out["pearson_fisher"] = pearson(m, f)
    out["pearson_sqrt_fisher"] = pearson(m, f.sqrt())
    return out


def analyze_importance(config: RunConfig, task_index: int, samples: int, out: Optional[str]) -> dict:
    # the tracker trains like finetune: no other method's options may ride along (a config resolved
    # for the default method carries BLIP's, which finetune would refuse)
    config = dataclasses.replace(config, method="finetune", method_options={}, quiet=True)
    engine = Engine(config, strategy_cls=_Tracker)
    if not 0 <= task_index < len(engine.scenario):
        raise ConfigError(f"--task must lie in 0..{len(engine.scenario) - 1}, got {task_index}")
    task = engine.scenario.tasks[task_index]
    strategy = engine.strategy
    if engine.scenario.setting == "class":
        engine.model.set_active_outputs(engine.scenario.active_outputs[task_index])
    ctx = engine.context(task)
    strategy.before_task(ctx)
    engine.train_task(task)
    names = list(strategy.params)
    measures = {k: t.importance() for k, t in strategy.trackers.items()}

    def mean_of(batch_sums):
        return task_mean(ctx, samples, 256, "importance", batch_sums, names)

    logits = ctx.logits
    fisher = mean_of(lambda x, y, u: batch_fisher_sums(engine.model, strategy.layers, logits, x, y, "exact"))
    measures["fisher_empirical"] = mean_of(
        lambda x, y, u: batch_fisher_sums(engine.model, strategy.layers, logits, x, y, "empirical"))
    for kind in ("mas", "masx", "af"):
        measures[kind] = mean_of(lambda x, y, u, kind=kind: output_sensitivity_sums(engine.model, strategy.layers,
                                                                                  logits, x, kind))
    measures["rewc"] = {k: v.sqrt() for k, v in fisher.items()}
    flat_fisher = torch.cat([fisher[n].flatten() for n in names])
    flat = {k: torch.cat([v[n].flatten() for n in names]) for k, v in measures.items()}
    result = {"measures": {k: fit(flat[k], flat_fisher) for k in MEASURES},
              "config": {**config.to_dict(), "task": task_index, "samples": samples,
                         "accuracy": engine.evaluate(task)}}
    if out:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "importance.json", json.dumps(result, indent=2))
        result["plots"] = _scatter(flat, flat_fisher, folder)
    return result


def _scatter(flat: dict, fisher: torch.Tensor, folder: Path) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(fisher), generator=g)[:20000]
    cols = 3
    rows = (len(MEASURES) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.3 * rows))
    for ax, name in zip(axes.flat, MEASURES):
        m, f = flat[name][pick], fisher[pick]
        keep = (m > 0) & (f > 0)
        ax.loglog(f[keep].numpy(), m[keep].numpy(), ",", alpha=0.4)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("Fisher", fontsize=8)
    for ax in list(axes.flat)[len(MEASURES):]:
        ax.axis("off")
    fig.tight_layout()
    path = folder / "importance-vs-fisher.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def format_table(result: dict) -> str:
    lines = ["measure           exponent     R2  pearson(F)  pearson(sqrtF)"]
    for name, r in result["measures"].items():
        def f(v, w=8):
            return f"{v:{w}.3f}" if v is not None else " " * (w - 1) + "–"
        lines.append(f"{name:<16} {f(r['exponent'])} {f(r['r2'], 6)} {f(r['pearson_fisher'], 11)} "
                     f"{f(r['pearson_sqrt_fisher'], 15)}")
    return "\n".join(lines)
