"""Starting any run from pre-trained backbone weights (``--pretrained FILE`` or ``NAME``).

Loads a ``bitcl pretrain`` file, any safetensors file or a ``weights_only`` torch state
dict whose keys are the backbone's (with or without the ``backbone.`` prefix). On a
quantised backbone, codes are refreshed from the loaded weights (nothing frozen).

``--pretrained NAME`` (no such file, a weights entry of ``bitcl data list``, e.g.
``resnet18-imagenet``) fetches the registered file into the data root on first use, checks
its digest (``bitcl.data.registry``) and reads it with ``torch.load(weights_only=True)``;
torchvision's ResNet-18 state dict is mapped onto ``--arch resnet18-imagenet``
(:func:`torchvision_resnet18_state`; its ImageNet classifier ``fc`` is dropped: bitcl's heads
are the run's own).
"""
from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Optional

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


def torchvision_resnet18_state(state: dict[str, torch.Tensor], backbone: dict[str, torch.Tensor]
                               ) -> dict[str, torch.Tensor]:
    """torchvision's ResNet-18 keys (``conv1``, ``bn1``, ``layer{1-4}.{0,1}.{conv,bn}{1,2}``,
    ``downsample.{0,1}``) renamed to bitcl's ``resnet18-imagenet`` (``stem.0``, ``stem.1``,
    ``stages.{k}``, ``shortcut.{0,1}``); each batch norm's tensors go to every norm of its policy
    norm (``norms.{t}``). ``fc.*`` is dropped. Keys that are neither are kept as they are, so
    that a wrong file is reported by the shape and name checks."""
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "fc":
            continue
        if parts[0] in ("conv1", "bn1"):
            module, rest = ("stem.0" if parts[0] == "conv1" else "stem.1"), parts[1:]
        elif parts[0].startswith("layer") and len(parts) >= 4 and parts[1].isdigit():
            stage = 2 * (int(parts[0][5:]) - 1) + int(parts[1])
            name = parts[2]
            if name == "downsample":
                name, rest = f"shortcut.{parts[3]}", parts[4:]
            else:
                rest = parts[3:]
            module = f"stages.{stage}.{name}"
        else:
            renamed[key] = value
            continue
        tail = ".".join(rest)
        if f"{module}.{tail}" in backbone:  # a convolution
            renamed[f"{module}.{tail}"] = value
            continue
        for t in range(len(backbone)):  # a batch norm: one copy per policy norm
            target = f"{module}.norms.{t}.{tail}"
            if target not in backbone:
                break
            renamed[target] = value
        else:
            renamed[key] = value
    for key in backbone:  # old torchvision files carry no batch counts: their statistics are ImageNet's
        if key.endswith("num_batches_tracked") and key not in renamed and \
                key.replace("num_batches_tracked", "running_mean") in renamed:
            renamed[key] = torch.ones((), dtype=torch.int64)
        if key.endswith(".frozen") and f"{key[:-len('frozen')]}norms.0.weight" in renamed:
            renamed[key] = torch.zeros((), dtype=torch.bool)  # bitcl's policy flag: nothing frozen yet
    return renamed


def _registered_weights(name: str) -> Optional[dict[str, torch.Tensor]]:
    """The state dict of registered weights ``name`` (fetched, digest-checked, weights-only), or None."""
    from bitcl.data.registry import WEIGHTS
    if name.strip().lower() not in WEIGHTS:
        return None
    from bitcl.data.readers import load_weights
    return load_weights(name.strip().lower(), quiet=True)


def load_pretrained(model, path: str | Path) -> None:
    """Load backbone weights into ``model`` (a ContinualModel); CheckpointError if they do not fit.
    ``path`` may name registered weights (module docstring)."""
    state = _registered_weights(str(path)) if not Path(path).exists() else None
    path = Path(path)
    if state is None:
        state = _read_state(path)
    backbone = model.backbone.state_dict()
    if "conv1.weight" in state and "layer1.0.conv1.weight" in state:  # torchvision's ResNet layout
        state = torchvision_resnet18_state(state, backbone)
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


