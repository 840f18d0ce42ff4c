"""Rebuild the model a checkpoint describes, with the weights a device would run.

The deployed weights are the quantised values ``scale * codes``; the float
latent the optimiser kept (within half a code step of them) is dropped.
"""
from __future__ import annotations

from pathlib import Path

import torch

from bitcl.checkpoint import load_model_state, read_checkpoint
from bitcl.errors import CheckpointError
from bitcl.models import ContinualModel, build_model
from bitcl.quant import bit_states

SPEC_KEYS = ("arch", "input_shape", "hidden", "setting", "head_sizes", "backbone", "bits")


def checkpoint_spec(meta: dict, path) -> dict:
    spec = (meta.get("bitcl_progress") or {}).get("model")
    if not spec or any(k not in spec for k in SPEC_KEYS):
        raise CheckpointError(f"{path}: checkpoint has no model description (written by bitcl run?)")
    return spec


def model_from_spec(spec: dict) -> ContinualModel:
    try:
        return build_model(spec["arch"], spec["input_shape"], spec["head_sizes"], spec["setting"], spec["backbone"],
                           spec["bits"], spec["hidden"])
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"invalid model description in checkpoint ({error})") from None


def load_checkpoint_model(path: str | Path) -> tuple[ContinualModel, dict]:
    """The checkpoint's model in eval mode, weights set to ``scale * codes``, and its spec."""
    tensors, meta = read_checkpoint(Path(path))
    spec = checkpoint_spec(meta, path)
    model = model_from_spec(spec)
    load_model_state(model, tensors, str(path))
    with torch.no_grad():
        for _, state in bit_states(model):
            state.latent.copy_(state.dequantized())
    return model.eval(), spec
