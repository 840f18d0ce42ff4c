"""Rebuild the model a checkpoint describes, with the weights a device would run.

The deployed weights are the quantised values ``scale * codes``; the float
latent the optimiser kept (within half a code step of them) is dropped. The
checkpoint is validated first (``bitcl.checkpoint.read_checkpoint``), its model
description is checked against the tensors it holds before the model is built,
and the recorded bits and scales must be the model's.
"""
from __future__ import annotations

from pathlib import Path

import torch

from bitcl.checkpoint import load_model_state, read_checkpoint
from bitcl.errors import CheckpointError
from bitcl.models import ContinualModel, build_model
from bitcl.quant import bit_states
from bitcl.train.validate import check_spec_size, validate_model_spec

SPEC_KEYS = ("arch", "input_shape", "hidden", "setting", "head_sizes", "backbone", "bits")


def checkpoint_spec(meta: dict, path) -> dict:
    """The validated model description of a checkpoint written by ``bitcl run``."""
    progress = meta.get("bitcl_progress")
    spec = progress.get("model") if isinstance(progress, dict) else None
    if spec is None:
        if isinstance(progress, dict) and "return_matrix" in progress:  # bitcl rl's progress (bitcl.rl.results)
            raise CheckpointError(f"{path}: a checkpoint of an RL run (bitcl rl): it holds a PPO agent, not a "
                                  "classifier with a model description; bitcl export and bitcl analyze bits "
                                  "rebuild and score the models of bitcl run only")
        raise CheckpointError(f"{path}: checkpoint has no model description: only bitcl run records one "
                              "(a bitcl.fit run's model is the user's own code; load it with "
                              "bitcl.checkpoint.load_model_state into that model)")
    return validate_model_spec(spec, str(path))


def model_from_spec(spec: dict, where: str = "checkpoint") -> ContinualModel:
    """Build the model of a validated spec (``width``, ``bn``, ``dropout`` default as in RunConfig)."""
    try:
        return build_model(spec["arch"], spec["input_shape"], spec["head_sizes"], spec["setting"], spec["backbone"],
                           spec["bits"], spec["hidden"], spec.get("width", 0), spec.get("bn", "first-task"),
                           spec.get("dropout", 0.0))
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{where}: invalid model description ({str(error).splitlines()[0]})") from None


def load_checkpoint_model(path: str | Path) -> tuple[ContinualModel, dict]:
    """The checkpoint's model in eval mode, weights set to ``scale * codes``, and its spec."""
    tensors, meta = read_checkpoint(Path(path))
    spec = checkpoint_spec(meta, path)
    check_spec_size(spec, sum(t.numel() for t in tensors.values()), str(path))
    model = model_from_spec(spec, str(path))
    load_model_state(model, tensors, str(path), meta)
    with torch.no_grad():
        for _, state in bit_states(model):
            state.latent.copy_(state.dequantized())
    return model.eval(), spec
