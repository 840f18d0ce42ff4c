"""Validation of packed files (``bitcl export --format packed``) before anything is rebuilt from them.

Shared by :func:`bitcl.export.load_packed` (torch) and :class:`bitcl.export.NumpyRuntime`
(numpy): both pass the stored tensors' dtypes and shapes, and the values of the small
non-plane tensors, and get one line naming the file and what is wrong.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import numpy as np

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
    * the model no larger than what the file stores.
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
        trained = entry.integer("bits_trained", 2, 24)
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
    return meta


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
