"""The packed deployment format: exactly B bits per quantised weight, in safetensors.

File layout (``bitcl export CHECKPOINT --format packed``):

* ``<name>.planes``: uint8 (B, ceil(n / 8)), the top B bit planes of the offset
  codes u = c + 2^(N-1), most significant first (``bitcl.kernels.pack_bitplanes``);
* every other tensor the model needs (float heads, unquantised layers) as float32;
* ``input.permutation``: int64, present when the task permutes pixels;
* metadata ``"bitcl_packed"``: JSON with the architecture, per quantised tensor its
  shape, ``bits_stored`` B, ``bits_trained`` N and ``scale`` s, and the
  preprocessing: ``pixel_scale`` (divide raw 0..255 pixels by it), the layout,
  and whether a permutation applies (before scaling, on flattened pixels);
  ``layers`` (when the backbone is a plain chain of linear/conv layers, ReLUs and 2x2
  max-pools, as bitcl's MLP and conv net are): the layer sequence, one entry per layer
  ``{"name", "kind": "linear"|"conv", "shape", "after": ["relu", "maxpool2"...]}`` (conv also
  ``stride``, ``padding``), which the numpy runtime follows; the task's head comes after it.
  Files without it (written before it existed) still run: the runtime derives it from the arch.

A weight is ``s' * c'`` with c' and s' from ``bitcl.quant.reduce.codes_from_top_bits``
(exactly ``s * c`` when B = N). Activations are float32: bitcl does not
quantise activations.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import save_file
from torch import nn

from bitcl.checkpoint import atomic_write
from bitcl.data.scenarios import task_permutations
from bitcl.data.sources import PIXEL_SCALE
from bitcl.errors import BitclError, CheckpointError, DataError
from bitcl.kernels import pack_bitplanes, unpack_bitplanes
from bitcl.quant import bit_states
from bitcl.quant.codes import codes_from_top_bits, top_bits
from bitcl.train.rundir import refuse_run_file
from bitcl.train.validate import decode_json, read_safetensors

from .checkpoint_model import load_checkpoint_model, model_from_spec
from .heads import head_to_run, stored_heads
from .validate import FORMAT_VERSION, validate_packed


def check_task(spec: dict, task: Optional[int]) -> Optional[int]:
    if task is None:
        return None
    tasks = spec.get("tasks") or len(spec["head_sizes"])
    if not 0 <= task < tasks:
        raise BitclError(f"--task {task} does not exist (the checkpoint has tasks 0..{tasks - 1})")
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


def layer_sequence(model: nn.Module) -> Optional[list[dict]]:
    """The backbone as the packed file's ``layers`` list, or None where it is not a plain chain
    (one ``layers`` Sequential of linear/conv layers, ReLU, 2x2 max-pool, flatten and dropout)."""
    backbone = getattr(model, "backbone", None)
    chain = getattr(backbone, "layers", None)
    if not isinstance(chain, nn.Sequential) or [n for n, _ in backbone.named_children()] != ["layers"]:
        return None
    out: list[dict] = []
    flat = False  # after a Flatten only linear layers may follow (a linear flattens its input anyway)
    for index, module in chain.named_children():
        name = f"backbone.layers.{index}"
        flat = flat or isinstance(module, nn.Flatten)
        if isinstance(module, nn.Linear):
            out.append({"name": name, "kind": "linear", "shape": list(module.weight.shape), "after": []})
        elif isinstance(module, nn.Conv2d):
            if flat or module.groups != 1 or module.dilation != (1, 1) or module.padding_mode != "zeros" \
                    or isinstance(module.padding, str) or len(set(module.stride)) != 1 or len(set(module.padding)) != 1:
                return None
            out.append({"name": name, "kind": "conv", "shape": list(module.weight.shape), "stride": module.stride[0],
                        "padding": module.padding[0], "after": []})
        elif isinstance(module, nn.ReLU) and out:
            out[-1]["after"].append("relu")
        elif isinstance(module, nn.MaxPool2d) and out and _pool2(module):
            out[-1]["after"].append("maxpool2")
        elif not isinstance(module, (nn.Flatten, nn.Dropout)):  # a linear flattens; dropout is off in eval
            return None
    return out or None


def _pool2(pool: nn.MaxPool2d) -> bool:
    pairs = [pool.kernel_size, pool.stride, pool.padding, pool.dilation]
    pairs = [p if isinstance(p, tuple) else (p, p) for p in pairs]
    return pairs == [(2, 2), (2, 2), (0, 0), (1, 1)] and not pool.ceil_mode


def export_packed(checkpoint: str | Path, out: str | Path, task: Optional[int] = None,
                  bits: Optional[int] = None) -> dict:
    """Write the packed file; returns a summary (sizes in bytes and bytes per weight).

    Refuses to write inside a run's checkpoints/ or over a run's files (``refuse_run_file``)."""
    refuse_run_file(out, "--out")
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
    layers = layer_sequence(model)
    if layers is not None:
        meta["layers"] = layers
    out = Path(out)
    atomic_write(out, lambda tmp: save_file(tensors, tmp, metadata={"bitcl_packed": json.dumps(meta)}))
    weights = sum(s.codes.numel() for s in states.values())
    plane_bytes = sum(tensors[f"{n}.planes"].numel() for n in states)
    return {"file": str(out), "file_bytes": out.stat().st_size, "quantized_weights": weights,
            "plane_bytes": plane_bytes, "bits_per_weight": keep,
            "plane_bytes_per_weight": plane_bytes / weights if weights else 0.0}


def read_packed(path: str | Path) -> tuple[dict, dict]:
    """Tensors and metadata of a packed file (no unpickling), validated (``validate_packed``)."""
    path = Path(path)
    raw, tensors = read_safetensors(path, "bitcl_packed", "pt", "packed file")
    meta = decode_json(raw, "bitcl_packed", str(path))
    validate_packed({k: (str(v.dtype).replace("torch.", ""), tuple(v.shape)) for k, v in tensors.items()}, meta,
                    str(path), values={k: v for k, v in tensors.items() if v.dtype != torch.uint8})
    return tensors, meta


class PackedModel(nn.Module):
    """A model loaded from a packed file.

    ``model(pixels, task)`` takes pixels as 0..1 floats, the convention of training and of
    ``load_checkpoint_model`` (images as stored, not permuted: the file applies a permuted task's
    permutation itself); ``model.forward_raw(raw, task)`` takes raw 0..255 pixels, as ONNX and
    :class:`~bitcl.export.NumpyRuntime` do. Values above 1 given to ``model(...)`` are refused
    (DataError), so 0..255 pixels are never silently read as 0..1.
    """

    def __init__(self, model, meta: dict, permutation: Optional[torch.Tensor], heads: Optional[list[int]] = None):
        super().__init__()
        self.model, self.meta = model, meta
        self.register_buffer("permutation", permutation if permutation is not None else torch.empty(0, dtype=torch.int64))
        self.pixel_scale = meta["preprocessing"]["pixel_scale"]
        self.heads = heads if heads is not None else list(range(len(meta["model"]["head_sizes"])))

    def preprocess(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw 0..255 pixels -> the network's input (permuted when the task is, divided by pixel_scale)."""
        return self._input(raw.reshape(raw.shape[0], -1).to(torch.float32) / self.pixel_scale)

    def _input(self, flat: torch.Tensor) -> torch.Tensor:
        if self.permutation.numel():
            flat = flat[:, self.permutation]
        return flat.view([flat.shape[0], *self.meta["model"]["input_shape"]])

    def forward(self, pixels: torch.Tensor, task: Optional[int] = None) -> torch.Tensor:
        """Logits for pixels as 0..1 floats (``forward_raw`` for 0..255)."""
        flat = pixels.reshape(pixels.shape[0], -1).to(torch.float32)
        if flat.numel() and float(flat.max()) > 1.0:
            raise DataError(f"PackedModel takes pixels as 0..1 floats, as training does (got values up to "
                            f"{float(flat.max()):g}); for raw 0..255 pixels call .forward_raw(pixels)")
        return self.model(self._input(flat), head_to_run(self.meta, self.heads, task))

    def forward_raw(self, raw: torch.Tensor, task: Optional[int] = None) -> torch.Tensor:
        """Logits for raw 0..255 pixels (as ONNX and the numpy runtime take them)."""
        return self.model(self.preprocess(raw), head_to_run(self.meta, self.heads, task))


def load_packed(path: str | Path) -> PackedModel:
    """Rebuild the model from a packed file alone; its outputs equal the checkpoint model's.

    Every tensor the model needs must be in the file, with the model's shape, and nothing else:
    a file that would leave a layer at its random initialisation is refused, never half-used.
    """
    tensors, meta = read_packed(path)
    model = model_from_spec(meta["model"], str(path))
    states = dict(bit_states(model))
    for name, state in states.items():
        info = meta["quantized"].get(name)
        if info is None:
            raise CheckpointError(f"{path}: no packed planes for quantised tensor {name!r}")
        if tuple(info["shape"]) != tuple(state.codes.shape) or info["bits_trained"] != state.bits:
            raise CheckpointError(f"{path}: {name!r} is {info['bits_trained']}-bit {tuple(info['shape'])} in the file "
                                  f"but {state.bits}-bit {tuple(state.codes.shape)} in the model it describes")
    extra = sorted(set(meta["quantized"]) - set(states))
    if extra:
        raise CheckpointError(f"{path}: packed planes for {extra[0]!r}, which the model does not have")
    params = dict(model.named_parameters())
    needed = set(params) - set(states)  # quantised parameters come from their planes
    task = meta["task"]
    if meta["model"]["setting"] == "task" and task is not None:
        needed = {k for k in needed if not k.startswith("heads.") or k.startswith(f"heads.{task}.")}
    stored = {k for k in tensors if not k.endswith(".planes") and k != "input.permutation"}
    if needed - stored:
        raise CheckpointError(f"{path}: missing tensor {sorted(needed - stored)[0]!r} of the model")
    for key in sorted(stored):
        if key not in params:
            raise CheckpointError(f"{path}: tensor {key!r} is not a parameter of the model it describes")
        if tuple(tensors[key].shape) != tuple(params[key].shape):
            raise CheckpointError(f"{path}: tensor {key!r} has shape {tuple(tensors[key].shape)}, the model "
                                  f"needs {tuple(params[key].shape)}")
    with torch.no_grad():
        for name, state in states.items():
            info = meta["quantized"][name]
            n = state.codes.numel()
            keep = info["bits_stored"]
            top = unpack_bitplanes(tensors[f"{name}.planes"], keep, n).view(state.codes.shape) + (1 << (keep - 1))
            ints, multiplier = codes_from_top_bits(top, info["bits_trained"], info["bits_stored"])
            value = ints.to(torch.float64).mul(info["scale"] * multiplier).to(torch.float32)
            state.latent.copy_(value)
            if info["bits_stored"] == info["bits_trained"]:
                state.codes.copy_(ints)
        for key in stored:
            params[key].copy_(tensors[key])
    model.set_active_outputs(meta["active_outputs"])
    permutation = tensors.get("input.permutation")
    return PackedModel(model.eval(), meta, permutation, stored_heads(meta, stored)).eval()
