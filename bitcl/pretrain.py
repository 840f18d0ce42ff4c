"""Pre-training a backbone on source data, and starting any run from pre-trained weights.

``bitcl pretrain`` trains the backbone with one head over the source classes on the
*training split only* and saves the backbone (safetensors; metadata
``"bitcl_pretrained"`` describes it). ``--pretrained FILE`` loads a backbone into
any method's model: a ``bitcl pretrain`` file, any safetensors file or a
``weights_only`` torch state dict whose keys are the backbone's (with or without
the ``backbone.`` prefix). On a quantised backbone, codes are refreshed from the
loaded weights (nothing frozen).
"""
from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bitcl.checkpoint import atomic_write
from bitcl.config import RunConfig
from bitcl.errors import CheckpointError
from bitcl.quant import bit_states


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such pre-trained file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError):
        pass
    try:
        with warnings.catch_warnings():  # torch explains its weights_only policy on stderr
            warnings.simplefilter("ignore")
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (RuntimeError, ValueError, OSError, EOFError, zipfile.BadZipFile, Exception) as error:  # noqa: B014
        raise CheckpointError(f"{path}: neither safetensors nor a weights-only torch state dict "
                              f"({str(error).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return state


def load_pretrained(model, path: str | Path) -> None:
    """Load backbone weights into ``model`` (a ContinualModel); CheckpointError if they do not fit."""
    path = Path(path)
    state = _read_state(path)
    backbone = model.backbone.state_dict()
    cleaned = {}
    for key, value in state.items():
        key = key[len("backbone."):] if key.startswith("backbone.") else key
        if key in backbone:
            cleaned[key] = value
    needed = {k for k in backbone if not k.endswith(("_codes", "_frozen"))}
    missing = sorted(needed - set(cleaned))
    wrong = sorted(k for k in cleaned if tuple(cleaned[k].shape) != tuple(backbone[k].shape))
    if missing or wrong:
        detail = f"missing {missing[:3]}" if missing else f"shape mismatch for {wrong[:3]}"
        raise CheckpointError(f"{path}: does not fit the model's backbone ({detail})")
    with torch.no_grad():
        for key, value in cleaned.items():
            if not key.endswith(("_codes", "_frozen")):
                backbone[key].copy_(value.to(backbone[key].dtype))
        for _, s in bit_states(model.backbone):  # codes follow the loaded weights; nothing is frozen
            s.frozen.zero_()
            s.project_()


def pretrain(config: RunConfig, out: str | Path) -> dict:
    """Train the backbone on ``config``'s data and classes (training split), save it to ``out``."""
    from bitcl.engine import Engine
    config.method, config.scenario, config.tasks, config.quiet = "finetune", "data", 1, True
    engine = Engine(config)
    task = engine.scenario.tasks[0]
    engine.train_task(task)
    accuracy = engine.evaluate(task)
    tensors = {f"backbone.{k}": v.detach().cpu().contiguous() for k, v in engine.model.backbone.state_dict().items()}
    meta = {"arch": config.arch, "hidden": config.hidden, "backbone": config.backbone, "bits": config.bits,
            "input_shape": list(engine.scenario.input_shape), "classes": engine.scenario.class_order,
            "epochs": config.epochs, "data": config.data, "source_test_accuracy": accuracy}
    atomic_write(Path(out), lambda tmp: save_file(tensors, tmp, metadata={"bitcl_pretrained": json.dumps(meta)}))
    return meta
