"""``--resume``: continue a run after its last complete task, for ``bitcl run``, ``bitcl rl`` and ``bitcl.fit``
(called by ``bitcl.train.runner.ContinualRun``).

A task's checkpoint (docs/contracts/checkpoint.md) is written atomically only once the task is
consolidated, so the newest one that reads back valid is the last complete task; its
``bitcl_progress`` metadata holds the settings of the run that wrote it and the results
so far. Resuming refuses, before anything is loaded, a checkpoint without progress and
one written with other settings; the model and strategy state then load exactly, so a
run killed (even by ``kill -9``) and resumed ends with the tensors of an uninterrupted one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import torch
from torch import nn

from bitcl import checkpoint as ckpt
from bitcl.errors import CheckpointError, ConfigError
from bitcl.quant import bit_states
from bitcl.quant.codes import max_code
from bitcl.strategies import Strategy, upgrade_recorded_options
from bitcl.train.rundir import RunDirectory


@dataclass(frozen=True)
class Resumed:
    """What :func:`resume_latest` loaded: the last complete ``task`` (0-based), its checkpoint
    ``path``, and its ``progress`` (the run's record: ``config`` and the results so far)."""

    task: int
    path: Path
    progress: dict


# how a run is invoked, never what it computes: these may always change when a run is resumed
ALWAYS_FREE = frozenset({"out", "overwrite", "resume", "quiet", "debug"})


def changed_settings(saved: dict, current: dict, free: Iterable[str] = ()) -> list[str]:
    """The settings (keys of either dict, less :data:`ALWAYS_FREE` and those in ``free``) whose
    values differ, sorted."""
    free = set(free) | ALWAYS_FREE
    return sorted(k for k in set(saved) | set(current) if k not in free and saved.get(k) != current.get(k))


def current_progress(progress: dict, task: int) -> dict:
    """A checkpoint's progress in the one current shape, ``{"task", "config", "result"[, "model"]}``.

    ``bitcl rl`` checkpoints written before the runner was shared (bitcl 0.x up to this change)
    kept the result's entries (``return_matrix``, ``random_returns``...) beside ``config`` at the
    top level and no ``task``; they are read into the current shape, the task from the file name."""
    if "result" in progress or "return_matrix" not in progress:
        return progress
    result = {key: value for key, value in progress.items() if key != "config"}
    return {"task": task, "config": progress["config"], "result": result}


def adopt_scales(model: nn.Module, meta: dict) -> None:
    """Give every quantised tensor of ``model`` the scale its checkpoint recorded (``meta["bitcl"]``).

    A user's model quantised with a weight-dependent range (``bitcl.quantize_``, ``range="max"``)
    gets scales from its initial weights, so a freshly built, differently seeded copy differs in
    the last digits. The checkpoint's codes are only meaningful with the checkpoint's scale, which
    the checkpoint holds: take it (and the layer's range, which follows from it). Bit widths are
    part of the architecture and are not touched (``load_model_state`` checks them)."""
    recorded = meta.get("bitcl") or {}
    for name, state in bit_states(model):
        info = recorded.get(name)
        if not isinstance(info, dict) or info.get("bits") != state.bits:
            continue  # load_model_state names what is missing or of another width
        layer, param, scale = state.layer, state.param_name, float(info["scale"])
        layer.scales[param] = scale
        layer.inv_scales[param] = float(torch.tensor(1.0 / scale, dtype=torch.float32))  # as layers.py derives it
        if param == "weight":
            layer.range_factor = scale * max_code(state.bits) * math.sqrt(layer.weight[0].numel())


def resume_latest(rundir: RunDirectory, config: dict, model: nn.Module, strategy: Strategy, *,
                  free: Iterable[str] = (), flag: str = "--resume", restore_scales: bool = False) -> Optional[Resumed]:
    """Load the newest checkpoint of ``rundir`` into ``model`` and ``strategy``; None when it has none.

    ``config`` is this run's settings (``config.to_dict()``); those in ``free`` may differ from the
    recorded ones (output folder, verbosity...). Raises CheckpointError for a checkpoint without run
    progress, or whose tensors or bit widths do not fit ``model`` (and, unless ``restore_scales``,
    whose scales differ from the model's; with it, the checkpoint's scales are taken: see
    :func:`adopt_scales`); ConfigError, naming the settings, for one written with other settings
    (``flag`` starts that message)."""
    latest = rundir.latest()
    if latest is None:
        return None
    task, path, tensors, meta = latest
    progress = meta.get("bitcl_progress")
    if not isinstance(progress, dict) or not isinstance(progress.get("config"), dict):
        raise CheckpointError(f"{path}: has no run progress; cannot resume from it")
    progress = current_progress(progress, task)
    # a run recorded before an option was renamed (BLIP's fisher_samples -> samples) still resumes
    changed = changed_settings(upgrade_recorded_options(progress["config"]), config, free)
    if changed:
        raise ConfigError(f"{flag}: the run in {rundir.path} was made with other settings ({', '.join(changed)})")
    if restore_scales:
        adopt_scales(model, meta)
    ckpt.load_model_state(model, tensors, str(path), meta)
    saved = ckpt.strategy_tensors(tensors)
    strategy.check_saved_state(saved, task + 1, str(path))  # the strategy part of the one validator
    strategy.load_state_tensors(saved)
    return Resumed(task, path, progress)


__all__ = ["ALWAYS_FREE", "Resumed", "adopt_scales", "changed_settings", "current_progress", "resume_latest"]
