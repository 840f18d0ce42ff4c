"""Fuzz the kernel entry points directly: any input gives a bitcl exception or a correct result.

    python tests/fuzz/fuzz_kernels.py -max_total_time=60     # coverage-guided, with atheris
    python tests/fuzz/fuzz_kernels.py --count 2000           # random inputs, tally per class

Each input is decoded (:class:`Reader`) into one call of ``project_``,
``pack_bitplanes``, ``unpack_bitplanes`` or ``first_nonfinite`` with arbitrary
shapes (mismatched too), dtypes, strides (non-contiguous views, views sharing
memory), values (NaN, infinities, codes outside the window, frozen counts
above N), bit widths and scales of any type. Expected: a
:class:`bitcl.errors.BitclError` (a precise message) or success; on success the
result is checked (frozen bits unchanged, codes in range, C == torch
reference bit for bit, unpack(pack(c)) == c). Anything else (another exception,
a wrong result, a crash) is a finding. :func:`run_one` is also what the pytest
suite calls (tests/kernels/test_fuzz_harness.py), without atheris.
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script by `make fuzz`
    sys.path.insert(0, str(ROOT))

from tests.fuzz.reader import Reader, atheris, instrumented  # noqa: E402

with instrumented(__name__):
    from bitcl import kernels
    from bitcl.errors import BitclError
    from bitcl.kernels import reference
    from bitcl.quant import codes as bitcodes

DTYPES = [torch.float32, torch.int32, torch.uint8, torch.float64, torch.int64, torch.int8, torch.float16,
          torch.bool, torch.complex64]
MAX_ELEMENTS = 4096


def _tensor(r: Reader, shape: tuple[int, ...], dtype: torch.dtype, hint: str, bits: object = None) -> torch.Tensor:
    """A tensor of ``shape``/``dtype`` whose values are mostly plausible for ``hint``, sometimes not."""
    n = 1
    for s in shape:
        n *= s
    g = torch.Generator().manual_seed(r.int(0, 2**31))
    wild = r.int(0, 4) == 0
    if dtype.is_complex:
        return torch.randn(shape, generator=g, dtype=dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    if dtype.is_floating_point:
        t = torch.randn(shape, generator=g, dtype=torch.float64) * 2.0 ** r.int(-30, 30)
        if wild and n:
            t.view(-1)[r.int(0, n - 1)] = r.float()
        return t.to(dtype)
    info = torch.iinfo(dtype)
    n_bits = bits if isinstance(bits, int) and not isinstance(bits, bool) and 1 <= bits <= 24 else r.int(1, 24)
    if hint == "frozen":
        lo, hi = 0, (r.int(0, 30) if wild else n_bits)
    elif hint == "codes":
        m = 2 ** (n_bits - 1)
        lo, hi = (-m - 5, m + 5) if wild else (-m + 1, m - 1)
    else:
        lo, hi = -2**31, 2**31 - 1
    lo, hi = max(lo, info.min), min(hi, info.max)
    return torch.randint(lo, hi + 1, shape, generator=g, dtype=torch.int64).to(dtype)


def _dtype(r: Reader, right: torch.dtype) -> torch.dtype:
    """Usually the dtype the kernel wants, sometimes any other."""
    return right if r.int(0, 9) < 8 else r.choice(DTYPES)


def _shape(r: Reader) -> tuple[int, ...]:
    dims = r.int(0, 3)
    shape, total = [], 1
    for _ in range(dims):
        s = r.int(0, 40)
        if total * max(s, 1) > MAX_ELEMENTS:
            s = 1
        shape.append(s)
        total *= max(s, 1)
    return tuple(shape)


def _maybe_strided(r: Reader, t: torch.Tensor) -> torch.Tensor:
    """Sometimes a non-contiguous view of a larger tensor with the same values."""
    if t.dim() >= 1 and r.int(0, 3) == 0:
        big = torch.cat([t, t], dim=-1)
        return big[..., ::2] if r.int(0, 1) else big.transpose(0, -1).contiguous().transpose(0, -1)
    return t


def _scalar(r: Reader, kind: str):
    roll = r.int(0, 9)
    if roll == 0:
        return r.choice(["8", None, 3.5, True, [4], b"x", float("nan")])
    if kind == "bits":
        return r.int(-3, 40) if roll == 1 else r.int(2, 24)
    if kind == "scale":
        return r.float() if roll <= 2 else 2.0 ** -r.int(1, 30)
    return r.int(-5, 2 * MAX_ELEMENTS)


def _same_shape_or_not(r: Reader, shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape if r.int(0, 4) else _shape(r)


def _unchanged(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same values (NaN equal to NaN)."""
    if a.dtype.is_floating_point or a.dtype.is_complex:
        return torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)
    return torch.equal(a, b)


def _check_projection(before: tuple, after: tuple, bits: int) -> None:
    """Success must mean: frozen unchanged, frozen bits unchanged, codes in range, C == reference."""
    latent0, codes0, frozen0 = before
    latent, codes, frozen, ref_latent, ref_codes = after
    assert torch.equal(frozen, frozen0), "frozen counts changed"
    top = lambda c: bitcodes.offset_codes(c.to(torch.int64), bits) >> (bits - frozen0.to(torch.int64))
    assert torch.equal(top(codes), top(codes0)), "a frozen bit changed"
    assert codes.numel() == 0 or int(codes.abs().max()) <= bitcodes.max_code(bits), "code out of range"
    assert bool(torch.isfinite(latent).all()), "non-finite latent after projection"
    assert torch.equal(codes, ref_codes) and torch.equal(latent, ref_latent), "C and reference differ"


def _project(r: Reader) -> None:
    shape, bits = _shape(r), _scalar(r, "bits")
    latent = _maybe_strided(r, _tensor(r, shape, _dtype(r, torch.float32), "latent"))
    codes = _maybe_strided(r, _tensor(r, _same_shape_or_not(r, shape), _dtype(r, torch.int32), "codes", bits))
    frozen = _tensor(r, _same_shape_or_not(r, shape), _dtype(r, torch.uint8), "frozen", bits)
    if r.int(0, 15) == 0 and latent.dtype == torch.float32 and latent.numel():
        codes = latent.view(torch.int32)  # shares memory with the latent
    scale = _scalar(r, "scale")
    inv = None if r.int(0, 9) else _scalar(r, "scale")
    before = tuple(t.clone() for t in (latent, codes, frozen))
    ref = [before[0].clone(), before[1].clone()]
    try:
        kernels.project_(latent, codes, frozen, bits, scale, inv)
    except BitclError:
        assert all(_unchanged(a, b) for a, b in zip((latent, codes, frozen), before)), "state changed on error"
        return
    reference.project_(ref[0], ref[1], before[2], bits, scale, inv)
    _check_projection(before, (latent, codes, frozen, *ref), bits)


def _pack(r: Reader) -> None:
    bits = _scalar(r, "bits") if r.int(0, 1) else r.int(1, 24)
    codes = _maybe_strided(r, _tensor(r, _shape(r), _dtype(r, torch.int32), "codes", bits))
    try:
        packed = kernels.pack_bitplanes(codes, bits)
    except BitclError:
        return
    assert packed.shape == (bits, (codes.numel() + 7) // 8) and packed.dtype == torch.uint8
    assert torch.equal(packed, reference.pack_bitplanes(codes, bits)), "C and reference pack differ"
    assert torch.equal(kernels.unpack_bitplanes(packed, bits, codes.numel()), codes.reshape(-1)), "round trip"


def _unpack(r: Reader) -> None:
    bits = _scalar(r, "bits") if r.int(0, 1) else r.int(1, 24)
    n = _scalar(r, "n")
    rows = bits if isinstance(bits, int) and not isinstance(bits, bool) and 0 <= bits <= 64 else 3
    cols = ((n + 7) // 8 if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else 1) + r.choice([0, 0, 0, 1, -1])
    packed = _maybe_strided(r, _tensor(r, (rows, max(cols, 0)), _dtype(r, torch.uint8), "planes"))
    try:
        out = kernels.unpack_bitplanes(packed, bits, n)
    except BitclError:
        return
    assert out.shape == (n,) and out.dtype == torch.int32
    assert torch.equal(out, reference.unpack_bitplanes(packed, bits, n)), "C and reference unpack differ"


def _first_nonfinite(r: Reader) -> None:
    x = _maybe_strided(r, _tensor(r, _shape(r), _dtype(r, torch.float32), "latent"))
    try:
        index = kernels.first_nonfinite(x)
    except BitclError:
        return
    flat = x.reshape(-1)
    bad = (~torch.isfinite(flat)).nonzero()
    assert index == (int(bad[0, 0]) if len(bad) else -1), "wrong first non-finite index"


OPERATIONS = {"project_": _project, "pack_bitplanes": _pack, "unpack_bitplanes": _unpack,
              "first_nonfinite": _first_nonfinite}


def run_one(data: bytes) -> str:
    """Decode ``data`` into one kernel call and check the outcome; returns ``op:outcome``.

    Raises AssertionError (a wrong result) or any non-bitcl exception (a finding).
    """
    r = Reader(data)
    name = r.choice(list(OPERATIONS))
    try:
        OPERATIONS[name](r)
    except BitclError as error:  # raised by the reference call of a successful C call: a finding
        raise AssertionError(f"{name}: C accepted what the reference refused: {error}") from error
    return name


def classify(data: bytes) -> str:
    """``op:ok`` or ``op:<BitclError subclass>`` for ``data`` (for tallies); findings propagate."""
    r = Reader(data)
    name = r.choice(list(OPERATIONS))
    original = {k: getattr(kernels, k) for k in OPERATIONS}
    seen: list[str] = []

    def recording(fn):
        def call(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except BitclError as error:
                seen.append(type(error).__name__)
                raise
        return call

    try:
        for k, fn in original.items():
            setattr(kernels, k, recording(fn))
        run_one(data)
    finally:
        for k, fn in original.items():
            setattr(kernels, k, fn)
    return f"{name}:{seen[0] if seen else 'ok'}"


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    if len(argv) >= 2 and argv[0] == "--count":
        import os
        tally = Counter(classify(os.urandom(256)) for _ in range(int(argv[1])))
        for key, count in sorted(tally.items()):
            print(f"{key:40s} {count}")
        return
    if atheris is None:
        raise SystemExit("atheris is not installed: `make fuzz-deps`, or use --count N")
    atheris.Setup([sys.argv[0], *argv], run_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv[1:])
