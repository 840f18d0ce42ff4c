"""Fuzz the readers of bitcl's own files: checkpoints (tensors and metadata), results.json, packed files.

    python tests/fuzz/fuzz_checkpoint.py -max_total_time=60     # coverage-guided, with atheris (`make fuzz`)
    python tests/fuzz/fuzz_checkpoint.py --count 500            # random inputs, tally per outcome

An input's first byte picks the file kind and the way the rest changes a valid file: raw
bytes in its place, byte edits of the valid file, or one metadata/JSON node replaced by a
value the input encodes (types, ranges and shapes are where a file that parses can still
lie). Expected: :class:`bitcl.errors.CheckpointError` / :class:`bitcl.errors.DataError`
with one line, or a file that validates and then works: a checkpoint rebuilds its model,
a results.json tabulates, a packed file runs in torch and numpy. Anything else raises (a
finding). :func:`run_one` is what the pytest suite calls, without atheris.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fuzz import harness  # noqa: E402
from tests.fuzz.reader import instrumented  # noqa: E402

with instrumented(__name__):
    import numpy as np
    import torch

    from bitcl.checkpoint import read_checkpoint
    from bitcl.errors import CheckpointError, DataError
    from bitcl.export import NumpyRuntime, export_packed, load_checkpoint_model, load_packed
    from bitcl.report import load_results, table
    from bitcl.train.validate import read_results

from tests.robustness import fixtures as fx  # noqa: E402

KINDS = ("checkpoint", "results", "packed")
MODES = ("raw", "bytes", "node")


def replace_node(obj, reader: harness.JsonReader, min_depth: int = 0):
    """``obj`` with one node (chosen by the input, ``min_depth`` or deeper) replaced by a value the
    input encodes."""
    spots = [p for p in fx.json_paths(obj) if len(p) >= min_depth]
    where = spots[reader.int(0, len(spots) - 1)]
    value = reader.value()
    return fx.set_path(obj, where, value) if where else value


def _edit(blob: bytes, edits: bytes) -> bytes:
    out = bytearray(blob)
    for i in range(0, len(edits) - 2, 3):
        out[int.from_bytes(edits[i:i + 2], "little") * len(out) // 65536] = edits[i + 2]
    if len(edits) % 3 == 1:
        del out[max(1, edits[-1] * len(out) // 256):]
    return bytes(out)


def _checkpoint(reader: harness.JsonReader, mode: str, folder: Path) -> str:
    path = folder / "task-0.safetensors"
    if mode == "node":
        tensors, meta = fx.checkpoint_parts()
        fx.write_parts(path, tensors, replace_node(meta, reader, min_depth=1))  # entries stay JSON strings
    else:
        fx.write_checkpoint(path)
        path.write_bytes(reader.rest() if mode == "raw" else _edit(path.read_bytes(), reader.rest()))
    try:
        read_checkpoint(path)
    except CheckpointError as error:
        return _refused(error)
    try:
        load_checkpoint_model(path)  # a checkpoint that validates must rebuild its model, or say why not
    except CheckpointError as error:
        return _refused(error)
    return "accepted"


def _results(reader: harness.JsonReader, mode: str, folder: Path) -> str:
    path = folder / "results.json"
    if mode == "node":
        path.write_text(json.dumps(replace_node(fx.results(), reader)))
    else:
        blob = json.dumps(fx.results()).encode()
        path.write_bytes(reader.rest() if mode == "raw" else _edit(blob, reader.rest()))
    try:
        valid = read_results(path)
    except DataError as error:
        return _refused(error)
    if "accuracy_matrix" in valid:  # the report reaches its table only through its own reader, which also
        try:                          # requires the figures the table shows (timing, memory)
            table([("run", load_results(path))])
        except DataError as error:
            return _refused(error)
    return "accepted"


_PACKED_SEED: dict[str, bytes] = {}


def _packed_seed() -> bytes:
    """A valid packed file (built once per process)."""
    if "blob" not in _PACKED_SEED:
        with tempfile.TemporaryDirectory() as tmp:
            fx.write_checkpoint(Path(tmp) / "task-1.safetensors", task=1)
            export_packed(Path(tmp) / "task-1.safetensors", Path(tmp) / "p.safetensors", task=1, bits=4)
            _PACKED_SEED["blob"] = (Path(tmp) / "p.safetensors").read_bytes()
    return _PACKED_SEED["blob"]


def _packed(reader: harness.JsonReader, mode: str, folder: Path) -> str:
    path = folder / "p.safetensors"
    path.write_bytes(_packed_seed())
    if mode == "node":
        from safetensors import safe_open
        with safe_open(str(path), "pt") as f:
            tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["bitcl_packed"])
        from safetensors.torch import save_file
        save_file(tensors, str(path), metadata={"bitcl_packed": json.dumps(replace_node(meta, reader))})
    else:
        path.write_bytes(reader.rest() if mode == "raw" else _edit(path.read_bytes(), reader.rest()))
    outcomes = []
    for load in (load_packed, NumpyRuntime):
        try:
            model = load(path)
        except CheckpointError as error:
            outcomes.append(_refused(error))
            continue
        pixels = np.arange(64).reshape(1, 64) % 256
        out = model.forward_raw(torch.tensor(pixels, dtype=torch.float32)) if load is load_packed else model(pixels)
        assert tuple(out.shape)[0] == 1
        outcomes.append("accepted")
    return outcomes[0]


def _refused(error: Exception) -> str:
    message = str(error)
    assert message and "\n" not in message, repr(message)
    return "refused"


def run_one(data: bytes) -> str:
    """One input; returns ``"accepted"`` or ``"refused"``; anything unexpected raises."""
    reader = harness.JsonReader(data)
    choice = reader.int(0, len(KINDS) * len(MODES) - 1)
    kind, mode = KINDS[choice % len(KINDS)], MODES[choice // len(KINDS)]
    with tempfile.TemporaryDirectory() as tmp:
        return {"checkpoint": _checkpoint, "results": _results, "packed": _packed}[kind](reader, mode, Path(tmp))


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    return harness.main(argv, run_one, max_size=200)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
