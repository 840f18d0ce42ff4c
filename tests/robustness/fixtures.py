"""Small valid files of every kind bitcl reads, and the means to break them one way at a time.

Each builder writes a file that the matching reader accepts; the robustness tests and the
fuzz harnesses start from these and corrupt one thing.
"""
from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import torch

import bitcl
from bitcl import metrics

INPUT_SHAPE = (1, 8, 8)
BITS = 6


def model_spec(tasks: int = 2, bits: int = BITS, hidden=(12,)) -> dict:
    """The model description ``bitcl run`` stores in every checkpoint (task-incremental MLP)."""
    return {"arch": "mlp", "input_shape": list(INPUT_SHAPE), "hidden": list(hidden), "width": 0,
            "bn": "first-task", "dropout": 0.0, "setting": "task", "head_sizes": [2] * tasks, "backbone": "quant",
            "bits": bits, "benchmark": "split-mnist", "seed": 0, "tasks": tasks, "permuted": False,
            "active_outputs": [2] * tasks, "class_order": list(range(2 * tasks))}


def build(spec: dict):
    from bitcl.export.checkpoint_model import model_from_spec
    torch.manual_seed(0)
    return model_from_spec(spec)


def accuracy_matrix(done: int, tasks: int) -> list[list[float]]:
    return [[round(0.5 + 0.4 * ((i + j) % 3) / 3, 4) for j in range(tasks)] for i in range(done)]


def progress(task: int = 0, tasks: int = 2, spec: dict | None = None) -> dict:
    """A supervised ``bitcl_progress`` entry after ``task`` (0-based) of ``tasks``."""
    done = task + 1
    return {"task": task, "config": {"method": "blip", "seed": 0}, "model": spec or model_spec(tasks),
            "result": {"accuracy_matrix": accuracy_matrix(done, tasks), "capacity": [0.1] * done,
                       "capacity_per_layer": [{"backbone.layers.1.weight": 0.1}] * done,
                       "timing": {k: [1.0] * done for k in ("train_seconds", "epoch_seconds",
                                                            "consolidate_seconds", "eval_seconds")},
                       "state_bytes": [10] * done, "extra": {}}}


def write_checkpoint(path: Path, task: int = 0, tasks: int = 2, freeze: bool = True):
    """A real checkpoint of a small quantised MLP (some bits frozen); returns the model."""
    from bitcl.checkpoint import save_checkpoint
    from bitcl.quant import bit_states
    spec = model_spec(tasks)
    model = build(spec)
    if freeze:
        generator = torch.Generator().manual_seed(1)
        for _, s in bit_states(model):
            s.freeze(torch.randint(0, BITS + 1, s.codes.shape, generator=generator))
    save_checkpoint(Path(path), model, blip_state(model, task), progress(task, tasks, spec))
    return model


def blip_state(model, task: int = 0) -> dict:
    """BLIP's state after ``task`` (0-based): a running Fisher per quantised weight and ``tasks_seen``."""
    from bitcl.quant import bit_states
    state = {f"fisher/{n}": torch.full(s.codes.shape, 0.5) for n, s in bit_states(model)}
    return state | {"tasks_seen": torch.tensor(task + 1)}


def results(tasks: int = 2) -> dict:
    """A consistent supervised results.json object."""
    a = accuracy_matrix(tasks, tasks)
    return {"bitcl_version": bitcl.__version__, "method": "blip", "benchmark": "split-mnist", "scenario": "task", "seed": 0,
            "config": {"method": "blip"}, "tasks": tasks, "accuracy_matrix": a, "acc": metrics.acc(a),
            "bwt": metrics.bwt(a), "forgetting": metrics.forgetting(a), "capacity": [0.1] * tasks,
            "timing": {"train_seconds": [1.0] * tasks}, "memory": {"params": 100, "state_bytes": [10] * tasks}}


def write_run(folder: Path, tasks: int = 2, checkpoints: bool = True) -> Path:
    """A finished run directory: results.json, log.txt and (optionally) its checkpoints."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results(tasks)))
    (folder / "log.txt").write_text("done\n")
    if checkpoints:
        for t in range(tasks):
            write_checkpoint(folder / "checkpoints" / f"task-{t}.safetensors", t, tasks)
    return folder


def digits(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` small uint8 images of 4 classes (real-looking enough for the loaders)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 8, 8), dtype=np.uint8), np.arange(n) % 4


def write_npz(path: Path, **arrays) -> Path:
    x, y = digits()
    np.savez(path, **({"x": x, "y": y} | arrays))
    return path


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + \
        array.astype(np.uint8).tobytes()


def write_idx_dir(folder: Path, images: bytes | None = None, labels: bytes | None = None) -> Path:
    """``t10k-*-ubyte.gz`` images and labels (either replaced by raw bytes to corrupt it)."""
    folder.mkdir(parents=True, exist_ok=True)
    x, y = digits()
    for kind, body in (("images-idx3", images or idx_bytes(x)), ("labels-idx1", labels or idx_bytes(y))):
        with gzip.open(folder / f"t10k-{kind}-ubyte.gz", "wb") as f:
            f.write(body)
    return folder


def cifar_batch(n: int = 10, classes: int = 10, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, classes, n)]}


def write_cifar_dir(folder: Path, train: dict | bytes | None = None, test: dict | bytes | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, batch in (("data_batch_1", train), ("test_batch", test)):
        batch = cifar_batch() if batch is None else batch
        (folder / name).write_bytes(batch if isinstance(batch, bytes) else pickle.dumps(batch))
    return folder


def checkpoint_parts(task: int = 0, tasks: int = 2) -> tuple[dict, dict]:
    """The tensors and (decoded) metadata of a valid checkpoint, to corrupt one thing and write back."""
    from bitcl.checkpoint import model_tensors
    spec = model_spec(tasks)
    model = build(spec)
    tensors, meta = model_tensors(model)
    tensors |= {f"strategy/{k}": v for k, v in blip_state(model, task).items()}
    return tensors, {"bitcl": meta, "bitcl_progress": progress(task, tasks, spec)}


def write_parts(path: Path, tensors: dict, meta: dict, raw: dict | None = None) -> Path:
    """Write tensors and metadata (JSON-encoded; ``raw`` entries verbatim) as a safetensors file."""
    from safetensors.torch import save_file
    metadata = {k: json.dumps(v) for k, v in meta.items()} | (raw or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


QUANTIZED = "backbone.layers.1.weight"  # a quantised tensor of the fixture model


def json_paths(node, prefix=()):
    """Every key path of a JSON value (the root is ``()``), for replacing one node at a time."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from json_paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from json_paths(v, prefix + (i,))


def set_path(obj, path, value):
    """Set the node at ``path`` (a non-empty key path) of ``obj`` to ``value``; returns ``obj``."""
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return obj


def json_values(max_leaves: int = 10):
    """A hypothesis strategy for any JSON value (huge integers, NaN and infinities included)."""
    from hypothesis import strategies as st
    scalars = st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=4)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=max_leaves)
