"""Checkpoints: safetensors, written atomically, digested, loaded without unpickling.

The format (docs/contracts/checkpoint.md): ``DIR/checkpoints/task-<t>.safetensors`` holds the
whole model state and, for every quantised tensor ``<name>``, ``<name>.codes`` (int32) and
``<name>.frozen`` (uint8); its metadata ``"bitcl"`` maps each quantised name to
``{"bits": N, "scale": s}``. bitcl adds ``strategy/<key>`` tensors (the method's state between
tasks, declared per method: ``bitcl.strategies.state``), a ``"bitcl_progress"`` entry (results so
far, the run's config and the model description, ``bitcl.models.spec.ModelSpec``) so that
``--resume`` can continue exactly, and ``"bitcl_digests"``: the SHA-256 of every tensor and of
every other metadata entry, which every reader verifies before anything else.

Every reader (``--resume``, ``bitcl export``, ``bitcl analyze bits``) goes through
:func:`read_checkpoint` (digests, strict metadata, the model part), then
:func:`load_model_state` (the tensors against the model the description builds) and
``Strategy.check_saved_state`` (the strategy part). Files written before digests existed
have no ``"bitcl_digests"``: they are read with every value check but without the byte check.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from bitcl.errors import BitError, CheckpointError, EnvironmentFault, IntegrityError, os_reason
from bitcl.quant import bit_states
from bitcl.quant.codes import check_codes
from bitcl.train.validate import Fields, decode_json, read_safetensors, validate_progress

STRATEGY_PREFIX = "strategy/"
DIGESTS = "bitcl_digests"
METADATA_KEYS = ("bitcl", "bitcl_progress", DIGESTS)  # anything else in a checkpoint's metadata is refused
DIGEST_ALGORITHM = "sha256"
DIGESTED = "digested"  # read_checkpoint's meta: whether the file carried digests (not a metadata entry)
LATENT_SLACK = 0.5 + 1e-3  # a latent lies within half a code step of scale * code...
FLOAT32_EPS = 2.0 ** -22   # ...give or take float32 rounding of the latent and of latent / scale
_TASK_FILE = re.compile(r"^task-(\d+)\.safetensors$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write, what: str = "file") -> None:
    """Call ``write(tmp_path)``, fsync, then rename over ``path``: readers never see half a file.

    A failed write (disk full, permission denied, read-only file system) raises
    :class:`~bitcl.errors.EnvironmentFault` naming ``path`` and the OS reason, and leaves
    whatever ``path`` held before intact.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except (OSError, SafetensorError) as error:
        if isinstance(error, EnvironmentFault):
            raise
        kept = "the previous file there is unchanged" if path.exists() else "nothing was written"
        raise EnvironmentFault(path, os_reason(error), what, kept) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
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


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (as stored: contiguous, little-endian)."""
    t = tensor.detach().cpu().contiguous()
    h = hashlib.sha256(f"{str(t.dtype).removeprefix('torch.')}|{list(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def digests(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict:
    """The ``bitcl_digests`` entry: one digest per tensor and per (other) metadata entry."""
    return {"algorithm": DIGEST_ALGORITHM, "tensors": {k: tensor_digest(v) for k, v in sorted(tensors.items())},
            "metadata": {k: text_digest(v) for k, v in sorted(metadata.items())}}


def save_checkpoint(path: Path, model: nn.Module, strategy_state: Optional[dict] = None,
                    progress: Optional[dict] = None) -> None:
    """Write a checkpoint atomically, with the digest of every tensor and metadata entry. A failed
    write (a full disk, a read-only folder) raises :class:`~bitcl.errors.EnvironmentFault` naming
    the file and the OS reason, and leaves whatever ``path`` held before (and every other
    checkpoint) intact."""
    tensors, meta = model_tensors(model)
    for key, value in (strategy_state or {}).items():
        tensors[STRATEGY_PREFIX + key] = value.detach().cpu().contiguous()
    metadata = {"bitcl": json.dumps(meta)}
    if progress is not None:
        metadata["bitcl_progress"] = json.dumps(progress)
    metadata[DIGESTS] = json.dumps(digests(tensors, metadata))
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata), "checkpoint")


def verify_digests(raw: dict[str, str], tensors: dict[str, torch.Tensor], where: str) -> bool:
    """Check ``bitcl_digests`` against the file's bytes; False for a file written before digests.

    Every tensor and every other metadata entry must have a digest, and every digest its
    tensor/entry; a mismatch is an :class:`~bitcl.errors.IntegrityError` naming the tensor.
    """
    if DIGESTS not in raw:
        return False
    from bitcl.train.validate import Fields
    record = Fields(decode_json(raw, DIGESTS, where), where, IntegrityError, DIGESTS)
    record.string("algorithm", (DIGEST_ALGORITHM,))
    for part, present, digest in (("tensors", tensors, tensor_digest),
                                  ("metadata", {k: v for k, v in raw.items() if k != DIGESTS}, text_digest)):
        recorded = record.sub(part).obj
        what = "tensor" if part == "tensors" else "metadata entry"
        for key in sorted(set(recorded) | set(present)):
            if key not in present:
                raise IntegrityError(f"{where}: {what} {key!r} has a recorded digest but is not in the file")
            if key not in recorded:
                raise IntegrityError(f"{where}: {what} {key!r} has no recorded digest (added after bitcl wrote "
                                     "the file?)")
            if not isinstance(recorded[key], str) or digest(present[key]) != recorded[key]:
                raise IntegrityError(f"{where}: {what} {key!r} does not match its recorded digest: the file "
                                     "changed after bitcl wrote it")
    unknown = sorted(set(record.obj) - {"algorithm", "tensors", "metadata"})
    if unknown:
        record.fail(f"unknown key {unknown[0]!r}")
    return True


def check_metadata_keys(raw: dict[str, str], where: str) -> None:
    """A checkpoint's metadata holds ``bitcl`` and at most ``bitcl_progress`` and ``bitcl_digests``."""
    unknown = sorted(set(raw) - set(METADATA_KEYS))
    if unknown:
        raise CheckpointError(f"{where}: unknown metadata entry {unknown[0]!r} (a checkpoint has "
                              f"{', '.join(METADATA_KEYS)})")


def read_checkpoint(path: Path, task: Optional[int] = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and decoded metadata of a checkpoint, verified and validated; CheckpointError
    (one line naming the file and the tensor or key) if it is not a valid one.

    First the bytes: metadata entries other than ``bitcl``, ``bitcl_progress`` and
    ``bitcl_digests`` are refused, and every recorded digest must match
    (:func:`verify_digests`; files without digests skip this step). Then the values
    (:func:`validate_checkpoint`): every quantised ``<name>`` of the ``bitcl`` metadata has bits
    in 2..24 and a finite positive scale, an int32 ``.codes`` inside the N-bit window, a uint8
    ``.frozen`` of counts <= N, and a float32 latent of their shape within half a code step of
    ``scale * codes``; no codes without metadata; no complex tensors, no non-finite model
    weights; ``bitcl_progress`` (when present) read strictly (unknown or missing keys refused),
    for task ``task`` (default: the ``<t>`` of a file named ``task-<t>.safetensors``), with its
    model description (``ModelSpec``) and, for ``bitcl run`` checkpoints, its config.
    """
    path = Path(path)
    if task is None and (named := _TASK_FILE.match(path.name)):
        task = int(named.group(1))
    where = str(path)
    raw, tensors = read_safetensors(path, "bitcl", "pt", "checkpoint")
    check_metadata_keys(raw, where)
    digested = verify_digests(raw, tensors, where)
    meta = {key: decode_json(raw, key, where) for key in raw if key != DIGESTS}
    validate_checkpoint(tensors, meta, where)
    if "bitcl_progress" in meta:
        validate_progress(meta["bitcl_progress"], where, task, legacy=not digested)
    meta[DIGESTED] = digested
    return tensors, meta


def validate_checkpoint(tensors: dict[str, torch.Tensor], meta: dict, where: str) -> None:
    """The tensors and ``bitcl`` metadata of a checkpoint against the contract (see read_checkpoint)."""
    quantized = Fields(meta.get("bitcl"), where, CheckpointError, "bitcl")
    for name, info in quantized.obj.items():
        entry = Fields(info, where, CheckpointError, f"bitcl[{name!r}]")
        bits = entry.integer("bits", 2, 24)
        scale = entry.number("scale")
        if not scale > 0:
            entry.fail(f"scale must be > 0, got {scale}")
        for key in (name, f"{name}.codes", f"{name}.frozen"):
            if key not in tensors:
                raise CheckpointError(f"{where}: quantised tensor {name!r} has no {key!r} tensor")
        latent = tensors[name]
        if latent.dtype != torch.float32 or tuple(latent.shape) != tuple(tensors[f"{name}.codes"].shape):
            raise CheckpointError(f"{where}: {name!r} must be float32 of the shape of its codes, got "
                                  f"{latent.dtype} {tuple(latent.shape)}")
        try:
            check_codes(tensors[f"{name}.codes"], tensors[f"{name}.frozen"], bits, f"{name!r}")
        except BitError as error:
            raise CheckpointError(f"{where}: {error}") from None
        check_latent(latent, tensors[f"{name}.codes"], scale, f"{where}: {name!r}")
    for key, value in tensors.items():
        for suffix in (".codes", ".frozen"):
            if key.endswith(suffix) and not key.startswith(STRATEGY_PREFIX) and key[: -len(suffix)] not in quantized.obj:
                raise CheckpointError(f"{where}: tensor {key!r} has no entry in the 'bitcl' metadata")
        if value.is_complex():
            raise CheckpointError(f"{where}: tensor {key!r} is complex ({value.dtype}); bitcl stores real tensors")
        if value.is_floating_point() and not key.startswith(STRATEGY_PREFIX) and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{where}: tensor {key!r} holds NaN or infinite values")


def check_latent(latent: torch.Tensor, codes: torch.Tensor, scale: float, where: str) -> None:
    """A latent weight lies within half a code step of ``scale * code`` (the projection keeps it
    there after every step); NaN, infinite or far-off values are refused with the first index."""
    if latent.numel() == 0:
        return
    wide = latent.to(torch.float64)
    off = (wide - codes.to(torch.float64) * scale).abs()
    bad = ~(off <= LATENT_SLACK * scale + wide.abs() * FLOAT32_EPS)
    if bool(bad.any()):
        i = int(bad.reshape(-1).nonzero()[0, 0])
        raise CheckpointError(f"{where}: latent {float(latent.reshape(-1)[i])!r} at flat index {i} lies outside "
                              f"the quantisation step of its code {int(codes.reshape(-1)[i])} (scale {scale:g})")


def load_model_state(model: nn.Module, tensors: dict[str, torch.Tensor], source: str = "checkpoint",
                     meta: Optional[dict] = None) -> None:
    """Load contract-form tensors into ``model``; CheckpointError when they do not fit it.

    With ``meta`` (the checkpoint's decoded metadata), every quantised tensor's recorded bits
    and scale must be the model's: codes are meaningless under another width or scale.
    """
    state = {}
    bit = dict(bit_states(model))
    if meta is not None:
        recorded = meta.get("bitcl") or {}
        for name, s in bit.items():
            info = recorded.get(name)
            if info is None:
                raise CheckpointError(f"{source}: no bits/scale recorded for quantised tensor {name!r}")
            if info["bits"] != s.bits:
                raise CheckpointError(f"{source}: {name!r} has {info['bits']} bits in the checkpoint but "
                                      f"{s.bits} in the model")
            if not math.isclose(info["scale"], s.scale, rel_tol=1e-6):
                raise CheckpointError(f"{source}: {name!r} has scale {info['scale']} in the checkpoint but "
                                      f"{s.scale} in the model")
    for key, value in tensors.items():
        if key.startswith(STRATEGY_PREFIX):
            continue
        for suffix, buffer in ((".codes", "_codes"), (".frozen", "_frozen")):
            if key.endswith(suffix) and key[: -len(suffix)] in bit:
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
    kinds = [k for k in expected if state[k].dtype != expected[k].dtype]
    if kinds:
        k = kinds[0]
        raise CheckpointError(f"{source}: tensor {k!r} is {state[k].dtype}, the model needs {expected[k].dtype}")
    for name, s in bit.items():  # codes must lie in the model's own window (not only the recorded one)
        prefix = name
        try:
            check_codes(state[prefix + "_codes"], state[prefix + "_frozen"], s.bits, f"{source}: {name!r}")
        except BitError as error:
            raise CheckpointError(str(error)) from None
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
