"""Checkpoints: safetensors, written atomically, loaded without unpickling.

Contract (DESIGN.md part 2): ``DIR/checkpoints/task-<t>.safetensors`` holds the
whole model state and, for every quantised tensor ``<name>``, ``<name>.codes``
(int32) and ``<name>.frozen`` (uint8); its metadata ``"bitcl"`` maps each
quantised name to ``{"bits": N, "scale": s}``. bitcl adds ``strategy/<key>``
tensors (the method's state between tasks) and a ``"bitcl_progress"`` metadata
entry (results so far) so that ``--resume`` can continue exactly.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from bitcl.errors import CheckpointError
from bitcl.quant import bit_states

STRATEGY_PREFIX = "strategy/"
_TASK_FILE = re.compile(r"^task-(\d+)\.safetensors$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)``, fsync, then rename over ``path``: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    atomic_write(path, write)


def model_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """The model state in contract form, and the ``bitcl`` metadata map."""
    states = dict(bit_states(model))
    skip = set()
    for name in states:
        prefix = name.rsplit(".", 1)[0] + "." if "." in name else ""
        leaf = name.rsplit(".", 1)[-1]
        skip |= {f"{prefix}{leaf}_codes", f"{prefix}{leaf}_frozen"}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in skip}
    meta = {}
    for name, state in states.items():
        tensors[f"{name}.codes"] = state.codes.detach().cpu().contiguous()
        tensors[f"{name}.frozen"] = state.frozen.detach().cpu().contiguous()
        meta[name] = {"bits": state.bits, "scale": state.scale}
    return tensors, meta


def save_checkpoint(path: Path, model: nn.Module, strategy_state: Optional[dict] = None,
                    progress: Optional[dict] = None) -> None:
    tensors, meta = model_tensors(model)
    for key, value in (strategy_state or {}).items():
        tensors[STRATEGY_PREFIX + key] = value.detach().cpu().contiguous()
    metadata = {"bitcl": json.dumps(meta)}
    if progress is not None:
        metadata["bitcl_progress"] = json.dumps(progress)
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and decoded metadata of a checkpoint; CheckpointError if it is not a valid one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({str(error).splitlines()[0]})") from None
    if "bitcl" not in raw:
        raise CheckpointError(f"{path}: not a bitcl checkpoint (no 'bitcl' metadata)")
    try:
        meta = {k: json.loads(v) for k, v in raw.items() if k.startswith("bitcl")}
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: corrupt bitcl metadata") from None
    return tensors, meta


def load_model_state(model: nn.Module, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load contract-form tensors into ``model``; CheckpointError when they do not fit it."""
    state = {}
    names = {n for n, _ in bit_states(model)}
    for key, value in tensors.items():
        if key.startswith(STRATEGY_PREFIX):
            continue
        for suffix, buffer in ((".codes", "_codes"), (".frozen", "_frozen")):
            if key.endswith(suffix) and key[: -len(suffix)] in names:
                key = key[: -len(suffix)] + buffer
                break
        state[key] = value
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                  else f"shape mismatch for {wrong[:3]}")
        raise CheckpointError(f"{source}: written for a different architecture ({detail})")
    model.load_state_dict(state)


def strategy_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n = len(STRATEGY_PREFIX)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(STRATEGY_PREFIX)}


def latest_checkpoint(folder: Path) -> Optional[tuple[int, Path]]:
    """The highest-numbered ``task-<t>.safetensors`` in ``folder``, or None."""
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), folder / name) for name in os.listdir(folder) if (m := _TASK_FILE.match(name))]
    return max(found) if found else None
