"""A reference runtime in numpy for packed files: the proof that a device needs only the bits.

It reads the packed file (safetensors, numpy), unpacks the bit planes with numpy
alone, rebuilds each weight as an integer code times one scale per tensor, and
runs the network. The first layer accumulates exactly in int64 on the raw 8-bit
pixels (the 1/255 pixel scale is folded into the layer's single scale multiply);
later layers run in float64 on float activations (bitcl does not quantise
activations). It follows the file's ``layers`` list (linear and conv layers, ReLU, 2x2
max-pool; see ``bitcl.export.packed``), then the task's head; files written before the
list existed run bitcl's MLP and conv net, their list derived from the architecture.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from bitcl.errors import CheckpointError, DataError
from bitcl.train.validate import decode_json, read_safetensors

from .heads import head_to_run, stored_heads
from .validate import check_layer_list, validate_packed


def unpack_planes(planes: np.ndarray, bits: int, n: int) -> np.ndarray:
    """(bits, ceil(n/8)) uint8 planes, MSB first -> n unsigned ints (numpy only)."""
    flat = np.unpackbits(planes, axis=1)[:, :n].astype(np.int64)  # packbits order: first element = top bit
    weights = (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))[:, None]
    return (flat * weights).sum(0)


class NumpyRuntime:
    """Run a packed bitcl model on raw pixels with numpy: ``NumpyRuntime(path)(raw_pixels, task=None)``.

    ``raw_pixels``: ``n`` images of integer pixels 0..255 (any numeric dtype, any shape with ``n``
    first, e.g. ``(n, 28, 28)`` or ``(n, 784)``), as a camera or the dataset file gives them, not
    permuted: the runtime applies the file's permutation and pixel scale itself (the first layer
    accumulates the raw integers exactly). ``task``: which head to run, by default the exported
    task (``bitcl export --task T``); a head the file does not hold is refused. Returns float64
    logits of shape ``(n, classes)``. Example (a run made with ``bitcl run ... --out runs/blip``)::

        import numpy as np
        from bitcl.export import NumpyRuntime, export_packed

        export_packed("runs/blip/checkpoints/task-4.safetensors", "blip.safetensors", task=4)
        rt = NumpyRuntime("blip.safetensors")
        with np.load("data/mnist15k.npz") as f:
            images = f["x"][~f["train"]][:100]          # uint8 (100, 28, 28), raw 0..255
            labels = f["y"][~f["train"]][:100]
        logits = rt(images)                             # task 4's head, the one exported
        predicted = logits.argmax(1)                    # 0..1 within the task (its 2 classes: 8, 9)

    ``bitcl.export.load_packed`` is the torch reader of the same file (``model(x)`` on 0..1 floats,
    ``model.forward_raw(raw)`` on 0..255).
    """

    def __init__(self, path: str | Path):
        self.meta, self.tensors = _read(Path(path))
        self.spec = self.meta["model"]
        self.layers = {}  # name -> (integer codes, scale)
        for name, info in self.meta["quantized"].items():
            n = int(np.prod(info["shape"]))
            top = unpack_planes(self.tensors[f"{name}.planes"], info["bits_stored"], n)
            b, big = info["bits_stored"], info["bits_trained"]
            if b == big:
                ints, mult = top - (1 << (big - 1)), 1.0
            else:
                ints, mult = 2 * top - (1 << b) + 1, float(2 ** (big - b - 1))
            self.layers[name] = (ints.reshape(info["shape"]), info["scale"] * mult)
        self._check_layers(str(path))

    def _check_layers(self, where: str) -> None:
        """The layer list to follow: the file's (already checked on reading) or, for files written
        before it existed, the MLP's or conv net's, checked the same way."""
        shapes = {k: tuple(v.shape) for k, v in self.tensors.items()
                  if not k.endswith(".planes") and k != "input.permutation"}
        shapes.update({k: tuple(v[0].shape) for k, v in self.layers.items()})
        if "layers" in self.meta:
            self.sequence = self.meta["layers"]
        else:
            self.sequence = check_layer_list(_derived_layers(self.spec, shapes, where), shapes, self.spec, where)
        task = self.meta["task"]
        head = f"heads.{task if task is not None else 0}" if self.spec["setting"] == "task" else "heads.0"
        if f"{head}.weight" not in shapes:
            raise CheckpointError(f"{where}: missing {head}.weight, the head the runtime runs")

    def _weight(self, name: str):
        """(integer codes or None, float weights)"""
        if name in self.layers:
            ints, scale = self.layers[name]
            return ints, ints * scale
        value = self.tensors[name].astype(np.float64)
        return None, value

    def _linear(self, x, prefix, exact_int=False):
        ints, w = self._weight(f"{prefix}.weight")
        if exact_int and ints is not None:
            acc = x.astype(np.int64) @ ints.T  # exact integer accumulation on raw pixels
            out = acc * (self.layers[f"{prefix}.weight"][1] / self.meta["preprocessing"]["pixel_scale"])
        else:
            out = x @ w.T if not exact_int else (x / self.meta["preprocessing"]["pixel_scale"]) @ w.T
        if f"{prefix}.bias" in self.layers or f"{prefix}.bias" in self.tensors:
            out = out + self._weight(f"{prefix}.bias")[1]
        return out

    def _conv(self, x, prefix, exact_int=False, stride=1, padding=1):
        ints, w = self._weight(f"{prefix}.weight")
        xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        windows = sliding_window_view(xp, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]  # (n, C, H, W, kh, kw)
        if exact_int and ints is not None:
            acc = np.einsum("nchwij,ocij->nohw", windows.astype(np.int64), ints, optimize=True)
            out = acc * (self.layers[f"{prefix}.weight"][1] / self.meta["preprocessing"]["pixel_scale"])
        else:
            scale = 1.0 / self.meta["preprocessing"]["pixel_scale"] if exact_int else 1.0
            out = np.einsum("nchwij,ocij->nohw", windows * scale, w, optimize=True)
        if f"{prefix}.bias" in self.layers or f"{prefix}.bias" in self.tensors:
            out = out + self._weight(f"{prefix}.bias")[1][None, :, None, None]
        return out

    def __call__(self, raw_pixels: np.ndarray, task: int | None = None) -> np.ndarray:
        """Logits for raw pixels (0..255, any numeric dtype, shape (n, ...))."""
        head_to_run(self.meta, stored_heads(self.meta, self.tensors), task)  # a missing head: before any work
        x = np.asarray(raw_pixels)
        pixels = int(np.prod(self.spec["input_shape"]))
        if x.ndim < 1 or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)) \
                or x.size != len(x) * pixels:
            raise DataError(f"raw pixels must be a real array of n x {pixels} values, got {x.dtype} {x.shape}")
        x = x.reshape(len(x), -1)
        if x.size and (not np.all(x == np.round(x)) or x.min() < 0 or x.max() > 255):
            raise DataError("raw pixels must be integers in 0..255")
        if "input.permutation" in self.tensors:
            x = x[:, self.tensors["input.permutation"]]
        spec = self.spec
        h = x.astype(np.int64).reshape(len(x), *spec["input_shape"])
        for i, layer in enumerate(self.sequence):  # the first layer accumulates raw pixels exactly
            if layer["kind"] == "linear":
                h = self._linear(h.reshape(len(h), -1), layer["name"], exact_int=(i == 0))
            else:
                h = self._conv(h, layer["name"], i == 0, layer["stride"], layer["padding"])
            for op in layer["after"]:
                if op == "relu":
                    h = np.maximum(h, 0)
                else:  # maxpool2
                    n, c, hh, ww = h.shape
                    h = h[:, :, :hh // 2 * 2, :ww // 2 * 2].reshape(n, c, hh // 2, 2, ww // 2, 2).max(axis=(3, 5))
        h = h.reshape(len(h), -1)
        head = f"heads.{head_to_run(self.meta, stored_heads(self.meta, self.tensors), task)}"
        logits = self._linear(h, head)
        if spec["setting"] == "class":
            logits[:, self.meta["active_outputs"]:] = -np.inf
        return logits


def _derived_layers(spec: dict, shapes: dict, where: str) -> list[dict]:
    """The layer list of bitcl's MLP or conv net, for packed files written before files carried one."""
    def entry(name, kind, **conv):
        return {"name": name, "kind": kind, "shape": list(shapes.get(f"{name}.weight", ())), **conv, "after": ["relu"]}
    if spec["arch"] == "mlp":
        return [entry(f"backbone.layers.{1 + 2 * i}", "linear") for i in range(len(spec["hidden"]))]
    if spec["arch"] == "conv":
        layers = [entry(f"backbone.layers.{i}", "conv", stride=1, padding=1) for i in (0, 3)]
        for layer in layers:
            layer["after"].append("maxpool2")
        return layers + [entry("backbone.layers.7", "linear")]
    raise CheckpointError(f"{where}: the numpy runtime runs the mlp and conv architectures, not {spec['arch']!r}")


def _read(path: Path) -> tuple[dict, dict]:
    """Metadata and tensors of a packed file with numpy, validated (``bitcl.export.validate``)."""
    raw, tensors = read_safetensors(path, "bitcl_packed", "np", "packed file")
    meta = decode_json(raw, "bitcl_packed", str(path))
    validate_packed({k: (str(v.dtype), tuple(v.shape)) for k, v in tensors.items()}, meta, str(path),
                    values={k: v for k, v in tensors.items() if v.dtype != np.uint8})
    return meta, tensors
