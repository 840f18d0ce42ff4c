"""Choosing a strength with Optuna: ``[select] sampler = "optuna"``.

Instead of running every candidate of a grid, each configuration (benchmark, method and the other
varying settings) gets an Optuna study (Akiba et al., "Optuna: A Next-generation Hyperparameter
Optimization Framework", KDD 2019) whose TPE sampler (Bergstra et al., "Algorithms for
Hyper-Parameter Optimization", NeurIPS 2011) proposes ``n_trials`` values of the option, one after
another, from a range (``low``, ``high``, on a log scale by default) or among listed ``values``.
A trial is an ordinary validation run per seed under ``select/``; its score is the mean metric over
those seeds, and the choice is the best trial, exactly as the grid chooses (ties: the smaller value).

The sampler is seeded (``sampler_seed``), so the same spec proposes the same values again: a
restarted sweep finds its finished trials' runs and does not rerun them. Proposed floats are
rounded to 4 significant digits (the value recorded is the value run); each round asks one trial of
every configuration, so the backend runs the configurations' trials side by side.
"""
from __future__ import annotations

import dataclasses
import statistics

from bitcl.sweep.spec import METRICS, run_fields

SIGNIFICANT_DIGITS = 4  # proposed floats are rounded so that run folders have readable, stable names


def select_with_optuna(sweep, groups: dict[str, dict], option: dict[str, str], seeds: list[int],
                       names: list[str]) -> dict:
    """Run ``n_trials`` Optuna trials per configuration in ``groups``; the record of each, as the grid's."""
    import optuna
    sel = sweep.spec.select
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = "maximize" if METRICS[sel.metric] > 0 else "minimize"
    studies = {g: optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=sel.sampler_seed))
               for g in groups}
    proposed: dict[str, list] = {g: [] for g in groups}
    runs: dict[str, tuple] = {}  # run name -> (group, value, RunSpec), what Sweep.choose reads
    for _ in range(sel.n_trials):
        asked, batch = {}, {}
        for g, point in groups.items():
            trial = studies[g].ask()
            value = suggest(trial, sel, point["method"], option[g])
            asked[g] = (trial, value)
            proposed[g].append(value)
            for seed in seeds:
                run = sweep.candidate_run(point, option[g], value, seed, names)
                runs[run.name] = (g, value, run)
                batch[run.name] = run
        sweep.run_all(list(batch.values()))
        for g, (trial, value) in asked.items():
            records = [sweep.records[n] for n, (group, v, _) in runs.items() if group == g and v == value]
            if all(r["status"] == "done" for r in records):
                studies[g].tell(trial, statistics.fmean(r["results"][sel.metric] for r in records))
            else:
                studies[g].tell(trial, state=optuna.trial.TrialState.FAIL)
    chosen = {}
    for g in groups:
        tried = list(dict.fromkeys(proposed[g]))  # distinct values, in the order proposed
        choice = sweep.choose(g, tried, runs)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in tried)
        choice["on_edge"] = bool(choice["chosen"] is not None and numeric and len(tried) > 1
                                 and choice["chosen"] in (min(tried), max(tried)))
        choice["trials"] = [{"trial": i, "value": v} for i, v in enumerate(proposed[g])]
        chosen[g] = {"option": option[g], **choice}
    return chosen


def suggest(trial, sel, method: str, option: str):
    """The trial's value of ``option``: among ``values``, or in the range (an integer for integer settings)."""
    if sel.values is not None:
        return trial.suggest_categorical(option, sel.values_for(method))
    low, high = sel.range_for(method)
    if is_integer_option(option, method):
        return trial.suggest_int(option, int(low), int(high), log=sel.log)
    rounded = float(f"{trial.suggest_float(option, float(low), float(high), log=sel.log):.{SIGNIFICANT_DIGITS}g}")
    return min(max(rounded, float(low)), float(high))  # rounding must not step outside the stated range


def is_integer_option(name: str, method: str) -> bool:
    """Whether the run setting or method option ``name`` is declared as an integer."""
    field = run_fields().get(name)
    if field is None:
        from bitcl.strategies import get_strategy
        field = {f.name: f for f in dataclasses.fields(get_strategy(method).Options)}[name]
    declared = str(field.type)
    return "int" in declared and "float" not in declared
