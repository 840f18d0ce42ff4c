"""The packed deployment format: exactly B bits per quantised weight, in safetensors.

File layout (``bitcl export CHECKPOINT --format packed``):

* ``<name>.planes``: uint8 (B, ceil(n / 8)), the top B bit planes of the offset
  codes u = c + 2^(N-1), most significant first (``bitcl.kernels.pack_bitplanes``);
* every other tensor the model needs (float heads, unquantised layers) as float32;
* ``input.permutation``: int64, present when the task permutes pixels;
* metadata ``"bitcl_packed"``: JSON with the architecture, per quantised tensor its
  shape, ``bits_stored`` B, ``bits_trained`` N and ``scale`` s, and the
  preprocessing: ``pixel_scale`` (divide raw 0..255 pixels by it), the layout,
  and whether a permutation applies (before scaling, on flattened pixels).

A weight is ``s' * c'`` with c' and s' from ``bitcl.quant.reduce.codes_from_top_bits``
(exactly ``s * c`` when B = N). Activations are float32: bitcl does not
quantise activations.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from bitcl.checkpoint import atomic_write
from bitcl.data.scenarios import task_permutations
from bitcl.data.sources import PIXEL_SCALE
from bitcl.errors import BitclError, CheckpointError
from bitcl.kernels import pack_bitplanes, unpack_bitplanes
from bitcl.quant import bit_states
from bitcl.quant.reduce import codes_from_top_bits, top_bits

from .checkpoint_model import load_checkpoint_model, model_from_spec

FORMAT_VERSION = 1


def check_task(spec: dict, task: Optional[int]) -> Optional[int]:
    if task is None:
        return None
    if not 0 <= task < spec["tasks"]:
        raise BitclError(f"--task {task} does not exist (the checkpoint has tasks 0..{spec['tasks'] - 1})")
    return task


def check_keep(spec: dict, bits: Optional[int]) -> int:
    n = spec["bits"]
    if bits is None:
        return n
    if not 1 <= bits <= n:
        raise BitclError(f"--bits must lie in 1..{n} (the model's bit width), got {bits}")
    return bits


def input_permutation(spec: dict, task: Optional[int]) -> Optional[torch.Tensor]:
    if not spec.get("permuted"):
        return None
    if task is None:
        raise BitclError("a permuted benchmark needs --task T: each task has its own input permutation")
    pixels = 1
    for d in spec["input_shape"]:
        pixels *= d
    return task_permutations(spec["seed"], spec["tasks"], pixels)[task]


def export_packed(checkpoint: str | Path, out: str | Path, task: Optional[int] = None,
                  bits: Optional[int] = None) -> dict:
    """Write the packed file; returns a summary (sizes in bytes and bytes per weight)."""
    model, spec = load_checkpoint_model(checkpoint)
    task = check_task(spec, task)
    if spec["backbone"] != "quant" and bits is not None:
        raise BitclError("--bits needs a quantised backbone; this checkpoint's backbone is float")
    keep = check_keep(spec, bits)
    states = dict(bit_states(model))
    tensors, quantized = {}, {}
    for name, state in states.items():
        # the planes hold u' (the top bits of u); pack_bitplanes takes signed codes u' - 2^(B-1)
        signed_top = top_bits(state.codes, state.bits, keep) - (1 << (keep - 1))
        tensors[f"{name}.planes"] = pack_bitplanes(signed_top, keep)
        quantized[name] = {"shape": list(state.codes.shape), "bits_stored": keep, "bits_trained": state.bits,
                           "scale": state.scale}
    for key, value in model.state_dict().items():
        owner = key.rsplit("_", 1)[0] if key.endswith(("_codes", "_frozen")) else key
        if key in states or owner in states or key == "active_outputs":
            continue
        if task is not None and spec["setting"] == "task" and key.startswith("heads.") \
                and not key.startswith(f"heads.{task}."):
            continue
        tensors[key] = value.detach().to(torch.float32).contiguous()
    permutation = input_permutation(spec, task)
    if permutation is not None:
        tensors["input.permutation"] = permutation.to(torch.int64)
    meta = {"format_version": FORMAT_VERSION, "model": spec, "task": task, "quantized": quantized,
            "active_outputs": int(model.active_outputs),
            "preprocessing": {"pixel_scale": PIXEL_SCALE, "layout": "NCHW" if spec["arch"] == "conv" else "flat",
                              "permutation": permutation is not None,
                              "note": "feed raw pixels 0..255; permute the flattened pixels (if given), "
                                      "then divide by pixel_scale"},
            "activations": "float32 (not quantised)"}
    out = Path(out)
    atomic_write(out, lambda tmp: save_file(tensors, tmp, metadata={"bitcl_packed": json.dumps(meta)}))
    weights = sum(s.codes.numel() for s in states.values())
    plane_bytes = sum(tensors[f"{n}.planes"].numel() for n in states)
    return {"file": str(out), "file_bytes": out.stat().st_size, "quantized_weights": weights,
            "plane_bytes": plane_bytes, "bits_per_weight": keep,
            "plane_bytes_per_weight": plane_bytes / weights if weights else 0.0}


def read_packed(path: str | Path) -> tuple[dict, dict]:
    """Tensors and metadata of a packed file (no unpickling)."""
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("bitcl_packed")
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: not a readable packed file ({str(error).splitlines()[0]})") from None
    if raw is None:
        raise CheckpointError(f"{path}: not a bitcl packed file")
    return tensors, json.loads(raw)


class PackedModel(nn.Module):
    """A model loaded from a packed file; ``forward`` takes raw pixels (0..255) as float."""

    def __init__(self, model, meta: dict, permutation: Optional[torch.Tensor]):
        super().__init__()
        self.model, self.meta = model, meta
        self.register_buffer("permutation", permutation if permutation is not None else torch.empty(0, dtype=torch.int64))
        self.pixel_scale = meta["preprocessing"]["pixel_scale"]

    def preprocess(self, raw: torch.Tensor) -> torch.Tensor:
        shape = [raw.shape[0], *self.meta["model"]["input_shape"]]
        flat = raw.reshape(raw.shape[0], -1).to(torch.float32)
        if self.permutation.numel():
            flat = flat[:, self.permutation]
        return (flat / self.pixel_scale).view(shape)

    def forward(self, raw: torch.Tensor, task: Optional[int] = None) -> torch.Tensor:
        task = self.meta["task"] if task is None else task
        return self.model(self.preprocess(raw), task or 0)


def load_packed(path: str | Path) -> PackedModel:
    """Rebuild the model from a packed file alone; its outputs equal the checkpoint model's."""
    tensors, meta = read_packed(path)
    model = model_from_spec(meta["model"])
    with torch.no_grad():
        for name, state in bit_states(model):
            info = meta["quantized"][name]
            n = state.codes.numel()
            keep = info["bits_stored"]
            top = unpack_bitplanes(tensors[f"{name}.planes"], keep, n).view(state.codes.shape) + (1 << (keep - 1))
            ints, multiplier = codes_from_top_bits(top, info["bits_trained"], info["bits_stored"])
            value = ints.to(torch.float64).mul(info["scale"] * multiplier).to(torch.float32)
            state.latent.copy_(value)
            if info["bits_stored"] == info["bits_trained"]:
                state.codes.copy_(ints)
        params = dict(model.named_parameters())
        for key, value in tensors.items():
            if key in params:
                params[key].copy_(value)
    model.set_active_outputs(meta["active_outputs"])
    permutation = tensors.get("input.permutation")
    return PackedModel(model.eval(), meta, permutation).eval()
