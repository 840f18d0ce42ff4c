"""Starting any run from pre-trained backbone weights (``--pretrained FILE``).

Loads a ``bitcl pretrain`` file, any safetensors file or a ``weights_only`` torch state
dict whose keys are the backbone's (with or without the ``backbone.`` prefix). On a
quantised backbone, codes are refreshed from the loaded weights (nothing frozen).
"""
from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from bitcl.errors import CheckpointError
from bitcl.quant import bit_states


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such pre-trained file")
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError):
        pass
    else:
        if "bitcl_digests" in raw:  # written by `bitcl pretrain`: every byte as it wrote it
            from bitcl.checkpoint import verify_digests
            verify_digests(raw, tensors, str(path))
        return tensors
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


def _check_values(cleaned: dict, backbone: dict, model, path: Path) -> None:
    """Every tensor of the backbone's own dtype (no float16 latents cast up), weights finite, and
    stored codes / frozen counts (ignored: codes follow the loaded weights) inside the N-bit window."""
    from bitcl.errors import BitError
    from bitcl.quant.codes import check_codes
    for key, value in cleaned.items():
        if value.dtype != backbone[key].dtype:
            raise CheckpointError(f"{path}: tensor {key!r} is {value.dtype}, the backbone needs {backbone[key].dtype}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: tensor {key!r} holds NaN or infinite values")
    for name, s in bit_states(model.backbone):
        codes, frozen = cleaned.get(f"{name}_codes"), cleaned.get(f"{name}_frozen")
        if codes is not None or frozen is not None:
            try:
                check_codes(codes if codes is not None else s.codes, frozen if frozen is not None else s.frozen,
                            s.bits, f"{path}: {name!r}")
            except BitError as error:
                raise CheckpointError(str(error)) from None


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
    _check_values(cleaned, backbone, model, path)
    with torch.no_grad():
        for key, value in cleaned.items():
            if not key.endswith(("_codes", "_frozen")):
                backbone[key].copy_(value.to(backbone[key].dtype))
        for _, s in bit_states(model.backbone):  # codes follow the loaded weights; nothing is frozen
            s.frozen.zero_()
            s.project_()


