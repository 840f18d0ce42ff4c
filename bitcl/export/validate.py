"""Validation of packed files (``bitcl export --format packed``) before anything is rebuilt from them.

Shared by :func:`bitcl.export.load_packed` (torch) and :class:`bitcl.export.NumpyRuntime`
(numpy): both pass the stored tensors' dtypes and shapes, and the values of the small
non-plane tensors, and get one line naming the file and what is wrong.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import numpy as np

from bitcl.constants import MAX_BITS, MIN_BITS
from bitcl.errors import CheckpointError
from bitcl.train.validate import Fields, check_spec_size, validate_model_spec

FORMAT_VERSION = 1


def validate_packed(tensors: Mapping[str, tuple[str, tuple]], meta: Any, where: str,
                    values: Optional[Mapping[str, Any]] = None) -> dict:
    """Check a packed file's metadata and tensors (``name -> (dtype name, shape)``).

    * ``format_version`` 1; a valid model description (``bitcl.train.validate``);
    * ``task``: null or an existing task; ``active_outputs`` within the head;
    * per quantised tensor: a shape of positive sizes, ``bits_trained`` in 2..24,
      ``bits_stored`` in 1..bits_trained, a finite positive scale, and a uint8
      ``<name>.planes`` tensor of shape ``(bits_stored, ceil(n / 8))``;
    * every other tensor float32 (finite, when ``values`` are given), except
      ``input.permutation``: int64, a permutation of the pixels, present exactly when
      the preprocessing says so;
    * the model no larger than what the file stores;
    * ``layers`` (files written since the list exists; see :func:`check_layer_list`): a layer
      sequence whose names exist with the stated shapes and chain from the input to the heads.
    """
    f = Fields(meta, where, CheckpointError, "bitcl_packed")
    f.integer("format_version", FORMAT_VERSION, FORMAT_VERSION)
    spec = validate_model_spec(f.obj.get("model"), where)
    tasks = spec.get("tasks") or len(spec["head_sizes"])
    if f.obj.get("task") is not None:
        f.integer("task", 0, tasks - 1)
    elif "task" not in f.obj:
        f.fail("missing key 'task'")
    f.integer("active_outputs", 0, max(spec["head_sizes"]))
    pre = f.sub("preprocessing")
    scale = pre.number("pixel_scale")
    if not scale > 0:
        pre.fail(f"pixel_scale must be > 0, got {scale}")
    permuted = pre.boolean("permutation")
    quantized = f.sub("quantized")
    available = 0
    for name, info in quantized.obj.items():
        entry = Fields(info, where, CheckpointError, f"bitcl_packed.quantized[{name!r}]")
        shape = entry.array("shape")
        if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1 << 24 for d in shape):
            entry.fail(f"shape must be a list of positive sizes, got {shape}")
        trained = entry.integer("bits_trained", MIN_BITS, MAX_BITS)
        stored = entry.integer("bits_stored", 1, trained)
        value = entry.number("scale")
        if not value > 0:
            entry.fail(f"scale must be > 0, got {value}")
        n = math.prod(shape)
        want = ("uint8", (stored, (n + 7) // 8))
        got = tensors.get(f"{name}.planes")
        if got is None:
            raise CheckpointError(f"{where}: quantised tensor {name!r} has no '{name}.planes' tensor")
        if (got[0], tuple(got[1])) != want:
            raise CheckpointError(f"{where}: '{name}.planes' must be {want[0]} {want[1]}, got {got[0]} {tuple(got[1])}")
        available += n
    for key, (dtype, shape) in tensors.items():
        if key.endswith(".planes"):
            if key[: -len(".planes")] not in quantized.obj:
                raise CheckpointError(f"{where}: tensor {key!r} has no entry in the metadata")
            continue
        available += math.prod(shape)
        if key == "input.permutation":
            continue
        if dtype != "float32":
            raise CheckpointError(f"{where}: tensor {key!r} must be float32, got {dtype}")
        if values is not None and not np.isfinite(_numpy(values[key])).all():
            raise CheckpointError(f"{where}: tensor {key!r} holds NaN or infinite values")
    _check_permutation(tensors, values, spec, permuted, where)
    check_spec_size(spec, available, where)
    if "layers" in f.obj:
        check_layer_list(f.obj["layers"], _shapes(tensors, quantized.obj), spec, where)
    return meta


# -- the layer sequence the numpy runtime follows ------------------------------------------------

LAYER_KINDS = {"linear": 2, "conv": 4}  # kind -> weight dimensions
LAYER_OPS = ("relu", "maxpool2")  # applied in order after a layer; maxpool2: 2x2 window, stride 2, floor


def _shapes(tensors: Mapping[str, tuple[str, tuple]], quantized: Mapping[str, Any]) -> dict[str, tuple]:
    """Every weight and bias the file holds -> its shape (quantised tensors by their metadata shape)."""
    out = {k: tuple(shape) for k, (_, shape) in tensors.items()
           if not k.endswith(".planes") and k != "input.permutation"}
    out.update({k: tuple(v["shape"]) for k, v in quantized.items()})
    return out


def check_layer_list(layers: Any, shapes: Mapping[str, tuple], spec: dict, where: str) -> list[dict]:
    """Check the ``layers`` list of a packed file against the tensors it holds (``name -> shape``).

    Each entry is ``{"name", "kind": linear|conv, "shape": the weight's shape, "after": [ops]}``
    (conv also ``"stride"``, ``"padding"``); a linear layer flattens its input. The list must name
    existing weights with the stated shapes (a bias, where present, of shape ``(out,)``), chain from
    ``model.input_shape`` through every op, cover every ``backbone.*`` tensor of the file once, and end
    with features the width every stored head takes. Returns the list; one-line CheckpointError otherwise.
    """
    if not isinstance(layers, list) or not layers:
        raise CheckpointError(f"{where}: bitcl_packed.layers must be a non-empty list of layers")
    shape = tuple(spec["input_shape"])  # (C, H, W) feature maps or (D,) features; flattened before a linear
    covered = set()
    for i, layer in enumerate(layers):
        e = Fields(layer, where, CheckpointError, f"bitcl_packed.layers[{i}]")
        name = e.string("name")
        kind = e.string("kind", tuple(LAYER_KINDS))
        want = tuple(e.array("shape"))
        ops = e.array("after")
        got = shapes.get(f"{name}.weight")
        if got is None or got != want or len(want) != LAYER_KINDS[kind]:
            e.fail(f"{name}.weight must exist with the stated {kind} shape {list(want)}, the file has "
                   f"{'none' if got is None else list(got)}")
        bias = shapes.get(f"{name}.bias")
        if bias is not None and bias != want[:1]:
            e.fail(f"{name}.bias has shape {list(bias)}, expected {[want[0]]}")
        if name in covered:
            e.fail(f"layer {name!r} appears twice")
        covered.add(name)
        if kind == "linear":
            if math.prod(shape) != want[1]:
                e.fail(f"{name} takes {want[1]} inputs, the layer before gives {math.prod(shape)}")
            shape = want[:1]
        else:
            stride, padding = e.integer("stride", 1, 64), e.integer("padding", 0, 64)
            if len(shape) != 3 or shape[0] != want[1]:
                e.fail(f"{name} takes {want[1]}-channel maps, the layer before gives {list(shape)}")
            size = [(d + 2 * padding - k) // stride + 1 for d, k in zip(shape[1:], want[2:])]
            if min(size) < 1:
                e.fail(f"{name}'s {want[2]}x{want[3]} kernel does not fit {shape[1]}x{shape[2]} maps")
            shape = (want[0], *size)
        for op in ops:
            if op not in LAYER_OPS:
                e.fail(f"unknown op {op!r} (known: {', '.join(LAYER_OPS)})")
            if op == "maxpool2":
                if len(shape) != 3 or min(shape[1:]) < 2:
                    e.fail(f"maxpool2 after {name} needs maps of at least 2x2, got {list(shape)}")
                shape = (shape[0], shape[1] // 2, shape[2] // 2)
    stray = sorted(k for k in shapes if k.startswith("backbone.") and k.rsplit(".", 1)[0] not in covered)
    if stray:
        raise CheckpointError(f"{where}: bitcl_packed.layers does not use tensor {stray[0]!r} of the file")
    width = math.prod(shape)
    for key, head in sorted(shapes.items()):
        if key.startswith("heads.") and key.endswith(".weight") and (len(head) != 2 or head[1] != width):
            raise CheckpointError(f"{where}: {key} has shape {list(head)}, the last layer gives {width} features")
        bias = shapes.get(key[: -len("weight")] + "bias")
        if key.startswith("heads.") and key.endswith(".weight") and bias is not None and bias != head[:1]:
            raise CheckpointError(f"{where}: {key[:-len('weight')]}bias has shape {list(bias)}, expected {[head[0]]}")
    return layers


def _numpy(value: Any) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _check_permutation(tensors, values, spec: dict, permuted: bool, where: str) -> None:
    present = "input.permutation" in tensors
    if present != permuted:
        raise CheckpointError(f"{where}: preprocessing says permutation={permuted} but the file "
                              f"{'has' if present else 'has no'} 'input.permutation'")
    if not present:
        return
    pixels = math.prod(spec["input_shape"])
    dtype, shape = tensors["input.permutation"]
    if dtype != "int64" or tuple(shape) != (pixels,):
        raise CheckpointError(f"{where}: 'input.permutation' must be int64 ({pixels},), got {dtype} {tuple(shape)}")
    if values is not None:
        perm = _numpy(values["input.permutation"])
        if not np.array_equal(np.sort(perm), np.arange(pixels)):
            raise CheckpointError(f"{where}: 'input.permutation' is not a permutation of the {pixels} pixels")
