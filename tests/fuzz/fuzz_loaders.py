"""Fuzz the data loaders: any bytes as an .npz, an IDX file (raw or gzip) or a CIFAR batch give valid data
or a one-line DataError.

    python tests/fuzz/fuzz_loaders.py -max_total_time=60     # coverage-guided, with atheris (`make fuzz`)
    python tests/fuzz/fuzz_loaders.py --count 500            # random inputs, tally per outcome

An input's first byte picks the format and whether the rest replaces a valid file or edits
one (the fuzzer then explores near-valid files, where the interesting checks are). Expected:
:class:`bitcl.errors.DataError` with one line, or an ArrayData that keeps the loader's
contract (float32 images in [0, 1], finite, int64 labels in range, one label per image, both
sides of the split non-empty). Anything else (another exception, a broken contract) raises:
that is a finding. :func:`run_one` is what the pytest suite calls
(tests/robustness/test_fuzz_harnesses.py), without atheris.
"""
from __future__ import annotations

import gzip
import pickle
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make `bitcl` and `tests` importable from the checkout
    sys.path.insert(0, str(ROOT))

from tests.fuzz import harness  # noqa: E402
from tests.fuzz.reader import instrumented  # noqa: E402

with instrumented(__name__):
    import torch

    from bitcl.data.sources import MAX_LABEL, load_source
    from bitcl.errors import DataError

from tests.robustness import fixtures as fx  # noqa: E402

KINDS = ("npz", "idx", "idx.gz", "cifar")


def _valid(kind: str, folder: Path) -> bytes:
    if kind == "npz":
        return fx.write_npz(folder / "seed.npz").read_bytes()
    if kind.startswith("idx"):
        return fx.idx_bytes(fx.digits()[0])
    return pickle.dumps(fx.cifar_batch())


def _edit(blob: bytes, edits: bytes) -> bytes:
    """Apply (position, value) byte pairs, then cut at the position the last pair names."""
    out = bytearray(blob)
    for i in range(0, len(edits) - 2, 3):
        position = int.from_bytes(edits[i:i + 2], "little") % max(len(out), 1)
        if out:
            out[position] = edits[i + 2]
    if len(edits) % 3 == 1 and out:
        del out[int.from_bytes(edits[-1:], "little") * len(out) // 256:]
    return bytes(out)


def _write(kind: str, blob: bytes, folder: Path) -> Path:
    if kind == "npz":
        (folder / "d.npz").write_bytes(blob)
        return folder / "d.npz"
    if kind == "cifar":
        return fx.write_cifar_dir(folder / "cifar", test=blob)
    target = folder / "idx"
    fx.write_idx_dir(target)
    (target / "t10k-images-idx3-ubyte.gz").unlink()
    if kind == "idx":
        (target / "t10k-images-idx3-ubyte").write_bytes(blob)
    else:
        with gzip.open(target / "t10k-images-idx3-ubyte.gz", "wb") as f:
            f.write(blob)
    return target


def check_contract(data) -> None:
    """What every loader promises about what it returns."""
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert x.dtype == torch.float32 and x.dim() == 4 and len(x) == len(y) > 0, (x.shape, y.shape)
        assert bool(torch.isfinite(x).all()) and float(x.min()) >= 0 and float(x.max()) <= 1
        assert y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) <= MAX_LABEL
    assert data.x_train.shape[1:] == data.x_test.shape[1:]


def run_one(data: bytes) -> str:
    """One input; returns ``"loaded"`` or ``"refused"``; anything unexpected raises."""
    if not data:
        return "refused"
    kind = KINDS[data[0] % len(KINDS)]
    mutate = data[0] // len(KINDS) % 2 == 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        blob = _edit(_valid(kind, folder), data[1:]) if mutate else data[1:]
        target = _write(kind, blob, folder)
        try:
            loaded = load_source(target)
        except DataError as error:
            message = str(error)
            assert message and "\n" not in message, repr(message)
            return "refused"
    check_contract(loaded)
    return "loaded"


def main(argv: list[str]) -> int:
    return harness.main(argv, run_one)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
