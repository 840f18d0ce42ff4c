"""Rebuild the model a checkpoint describes, with the weights a device would run.

The deployed weights are the quantised values ``scale * codes``; the float
latent the optimiser kept (within half a code step of them) is dropped. The
checkpoint goes through the one checkpoint validator first: digests and values
(``bitcl.checkpoint.read_checkpoint``), its model description (``ModelSpec``) against
the tensors it holds before the model is built, the tensors against the built model
(``load_model_state``: shapes, dtypes, recorded bits and scales), and the strategy state
against what its method declares (``Strategy.check_saved_state``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from bitcl.checkpoint import DIGESTED, load_model_state, read_checkpoint, strategy_tensors
from bitcl.errors import BitclError, CheckpointError
from bitcl.models import ContinualModel
from bitcl.models.spec import ModelSpec
from bitcl.quant import bit_states


def checkpoint_spec(meta: dict, path) -> dict:
    """The validated model description of a checkpoint written by ``bitcl run`` (as JSON)."""
    return read_spec(meta, path).to_json()


def read_spec(meta: dict, path) -> ModelSpec:
    progress = meta.get("bitcl_progress")
    spec = progress.get("model") if isinstance(progress, dict) else None
    if spec is None:
        result = progress.get("result") if isinstance(progress, dict) else None
        if isinstance(progress, dict) and ("return_matrix" in progress  # bitcl rl's progress, older and current
                                           or isinstance(result, dict) and "return_matrix" in result):
            raise CheckpointError(f"{path}: a checkpoint of an RL run (bitcl rl): it holds a PPO agent, not a "
                                  "classifier with a model description; bitcl export and bitcl analyze bits "
                                  "rebuild and score the models of bitcl run only")
        raise CheckpointError(f"{path}: checkpoint has no model description: only bitcl run records one "
                              "(a bitcl.fit run's model is the user's own code; load it with "
                              "bitcl.checkpoint.load_model_state into that model)")
    return ModelSpec.from_json(spec, str(path), legacy=not meta.get(DIGESTED, False))


def model_from_spec(spec: dict | ModelSpec, where: str = "checkpoint") -> ContinualModel:
    """Build the model of a spec (a :class:`ModelSpec` or its JSON, read leniently as a legacy file)."""
    try:
        if not isinstance(spec, ModelSpec):
            spec = ModelSpec.from_json(spec, where, legacy=True)
        return spec.build()
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{where}: invalid model description ({str(error).splitlines()[0]})") from None


def check_strategy_state(model, spec: ModelSpec, tensors: dict, progress: dict, where: str) -> None:
    """The ``strategy/*`` tensors against what the run's method, built fresh on ``model``, declares."""
    from bitcl.strategies import RunInfo, get_strategy, make_options
    config = progress.get("config") or {}
    try:
        cls = get_strategy(config.get("method", "blip"))
        options = make_options(cls, config.get("method_options") or {})
        fresh = cls(options, model, RunInfo(spec.tasks or len(spec.head_sizes), spec.setting))
    except BitclError as error:
        raise CheckpointError(f"{where}: bitcl_progress.config: {error}") from None
    fresh.check_saved_state(strategy_tensors(tensors), progress.get("task", 0) + 1, where)


def load_checkpoint_model(path: str | Path) -> tuple[ContinualModel, dict]:
    """The checkpoint's model in eval mode, weights set to ``scale * codes``, and its spec (JSON)."""
    tensors, meta = read_checkpoint(Path(path))
    spec = read_spec(meta, path)
    spec.check_size(sum(t.numel() for t in tensors.values()), str(path))
    model = model_from_spec(spec, str(path))
    load_model_state(model, tensors, str(path), meta)
    check_strategy_state(model, spec, tensors, meta["bitcl_progress"], str(path))
    for p in model.parameters():  # a method (DLCFT) may have turned gradients off while checking
        p.requires_grad_(True)
    with torch.no_grad():
        for _, state in bit_states(model):
            state.latent.copy_(state.dequantized())
    return model.eval(), spec.to_json()
