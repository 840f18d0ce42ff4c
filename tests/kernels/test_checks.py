"""Every kernel entry point refuses bad input with a precise bitcl error, before writing anything."""
import subprocess
import sys

import pytest
import torch

from bitcl import kernels
from bitcl.errors import BitError, BitTypeError, NonFiniteError
from bitcl.kernels import reference
from bitcl.quant import max_code, scale_for

BITS = 8
SCALE = scale_for(1.0, BITS)
needs_c = pytest.mark.skipif(kernels.backend() != "c", reason="C kernels not in use (extension not built, or BITCL_KERNELS=reference)")


def state(n=12, bits=BITS):
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(-max_code(bits), max_code(bits) + 1, (n,), generator=g, dtype=torch.int32)
    frozen = torch.randint(0, bits + 1, (n,), generator=g, dtype=torch.int32).to(torch.uint8)
    latent = codes.float() * scale_for(1.0, bits) + 0.3 * torch.randn(n, generator=g)
    return latent, codes, frozen


def _bad_codes():
    latent, codes, frozen = state()
    codes[5] = max_code(BITS) + 1
    return (latent, codes, frozen, BITS, SCALE), BitError, "code 128 at flat index 5"


def _bad_frozen():
    latent, codes, frozen = state()
    frozen[3] = BITS + 1
    return (latent, codes, frozen, BITS, SCALE), BitError, "frozen count 9 at flat index 3 exceeds bits = 8"


def _nan_latent():
    latent, codes, frozen = state()
    latent[4] = float("nan")
    return (latent, codes, frozen, BITS, SCALE), NonFiniteError, "non-finite latent value nan at flat index 4"


def _case(change, error, match):
    def build():
        latent, codes, frozen = state()
        args = [latent, codes, frozen, BITS, SCALE]
        change(args)
        return tuple(args), error, match
    return build


PROJECT_CASES = {
    "latent larger than codes": _case(lambda a: a.__setitem__(0, torch.zeros(1000)), BitError, "shape"),
    "frozen shorter": _case(lambda a: a.__setitem__(2, a[2][:5]), BitError, "shape"),
    "same numel, other shape": _case(lambda a: a.__setitem__(1, a[1].view(3, 4)), BitError, "shape"),
    "latent float64": _case(lambda a: a.__setitem__(0, a[0].double()), BitTypeError, "float32"),
    "codes int64": _case(lambda a: a.__setitem__(1, a[1].long()), BitTypeError, "int32"),
    "frozen int32": _case(lambda a: a.__setitem__(2, a[2].int()), BitTypeError, "uint8"),
    "latent complex": _case(lambda a: a.__setitem__(0, a[0].to(torch.complex64)), BitTypeError, "float32"),
    "not a tensor": _case(lambda a: a.__setitem__(1, [0] * 12), BitTypeError, "torch.Tensor"),
    "meta device": _case(lambda a: a.__setitem__(0, torch.empty(12, device="meta")), BitTypeError, "meta"),
    "bits 1": _case(lambda a: a.__setitem__(3, 1), BitError, r"\[2, 24\]"),
    "bits 25": _case(lambda a: a.__setitem__(3, 25), BitError, r"\[2, 24\]"),
    "bits str": _case(lambda a: a.__setitem__(3, "8"), BitError, r"\[2, 24\]"),
    "scale nan": _case(lambda a: a.__setitem__(4, float("nan")), BitError, "finite"),
    "scale inf": _case(lambda a: a.__setitem__(4, float("inf")), BitError, "finite"),
    "scale zero": _case(lambda a: a.__setitem__(4, 0.0), BitError, "> 0"),
    "scale negative": _case(lambda a: a.__setitem__(4, -SCALE), BitError, "> 0"),
    "scale subnormal": _case(lambda a: a.__setitem__(4, 1e-45), BitError, "normal float32"),
    "scale str": _case(lambda a: a.__setitem__(4, "0.1"), BitTypeError, "real number"),
    "codes alias latent": _case(lambda a: a.__setitem__(1, a[0].view(torch.int32)), BitError, "share memory"),
    "code out of range": _bad_codes,
    "frozen above bits": _bad_frozen,
    "nan latent": _nan_latent,
}


@pytest.mark.parametrize("path", ["kernels", "reference", "latent"])
@pytest.mark.parametrize("name", sorted(PROJECT_CASES))
def test_project_refuses_bad_input_and_writes_nothing(name, path):
    """Each malformed call raises its precise error; latent, codes and frozen are untouched
    (``latent``: the per-step ``project_latent_``, which validates codes unless told they are)."""
    args, error, match = PROJECT_CASES[name]()
    before = [a.clone() if isinstance(a, torch.Tensor) and a.device.type != "meta" else a for a in args]
    project = {"kernels": kernels.project_, "reference": reference.project_,
               "latent": kernels.project_latent_}[path]
    with pytest.raises(error, match=match):
        project(*args)
    for a, b in zip(args, before):
        if isinstance(a, torch.Tensor) and a.device.type != "meta":
            assert torch.allclose(a, b, rtol=0, atol=0, equal_nan=True) if a.is_floating_point() else torch.equal(a, b)


def test_inconsistent_inv_scale_is_refused():
    """An inv_scale that is not 1 / scale would give codes that disagree with the latent."""
    latent, codes, frozen = state()
    with pytest.raises(BitError, match="inv_scale"):
        kernels.project_(latent, codes, frozen, BITS, SCALE, 2.0 / SCALE)


def test_latent_larger_than_codes_does_not_crash_the_process():
    """Regression (issue 15): this segfaulted the interpreter; now it is one BitError line."""
    script = ("import torch\nfrom bitcl import kernels\nfrom bitcl.errors import BitError\n"
              "try:\n    kernels.project_(torch.zeros(1_000_000), torch.zeros(10, dtype=torch.int32),"
              " torch.zeros(10, dtype=torch.uint8), 8, 0.01)\nexcept BitError as e:\n    print('refused:', e)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "refused: project_: codes has shape (10,), latent (1000000,)" in done.stdout


PACK_CASES = {
    "planes 0": (lambda: (torch.zeros(4, dtype=torch.int32), 0), BitError, r"\[1, 24\]"),
    "planes 25": (lambda: (torch.zeros(4, dtype=torch.int32), 25), BitError, r"\[1, 24\]"),
    "planes float": (lambda: (torch.zeros(4, dtype=torch.int32), 4.0), BitError, r"\[1, 24\]"),
    "codes int64": (lambda: (torch.zeros(4, dtype=torch.int64), 4), BitTypeError, "int32"),
    "codes float": (lambda: (torch.zeros(4), 4), BitTypeError, "int32"),
    "code above planes": (lambda: (torch.tensor([0, 8, 1], dtype=torch.int32), 4), BitError,
                          r"code 8 at flat index 1 does not fit 4 planes \[-8, 7\]"),
    "code below planes": (lambda: (torch.tensor([-9], dtype=torch.int32), 4), BitError, "code -9"),
    "int32 extreme": (lambda: (torch.tensor([-2**31], dtype=torch.int32), 24), BitError, "does not fit"),
}


@pytest.mark.parametrize("path", ["kernels", "reference"])
@pytest.mark.parametrize("name", sorted(PACK_CASES))
def test_pack_refuses_bad_input(name, path):
    """pack_bitplanes refuses codes that do not fit its planes, wrong dtypes and plane counts."""
    make, error, match = PACK_CASES[name]
    pack = kernels.pack_bitplanes if path == "kernels" else reference.pack_bitplanes
    with pytest.raises(error, match=match):
        pack(*make())


UNPACK_CASES = {
    "shape": (lambda: (torch.zeros(3, 2, dtype=torch.uint8), 4, 16), BitError, "shape"),
    "too few bytes": (lambda: (torch.zeros(4, 1, dtype=torch.uint8), 4, 9), BitError, "shape"),
    "negative n": (lambda: (torch.zeros(4, 0, dtype=torch.uint8), 4, -1), BitError, ">= 0"),
    "n float": (lambda: (torch.zeros(4, 1, dtype=torch.uint8), 4, 8.0), BitError, ">= 0"),
    "planes int32": (lambda: (torch.zeros(4, 1, dtype=torch.int32), 4, 8), BitTypeError, "uint8"),
    "planes 0": (lambda: (torch.zeros(0, 1, dtype=torch.uint8), 0, 8), BitError, r"\[1, 24\]"),
}


@pytest.mark.parametrize("path", ["kernels", "reference"])
@pytest.mark.parametrize("name", sorted(UNPACK_CASES))
def test_unpack_refuses_bad_input(name, path):
    """unpack_bitplanes refuses planes whose shape disagrees with (bits, n), and bad counts."""
    make, error, match = UNPACK_CASES[name]
    unpack = kernels.unpack_bitplanes if path == "kernels" else reference.unpack_bitplanes
    with pytest.raises(error, match=match):
        unpack(*make())


def test_first_nonfinite_refuses_non_float32():
    """first_nonfinite reads float32 bits: other dtypes are refused, not misread."""
    with pytest.raises(BitTypeError, match="float32"):
        kernels.first_nonfinite(torch.zeros(3, dtype=torch.float64))


@needs_c
def test_c_functions_defend_themselves():
    """Called directly, the C entry points return error statuses instead of touching memory."""
    from bitcl.kernels import _bitops
    latent, codes, frozen = state()
    ptrs = (latent.data_ptr(), codes.data_ptr(), frozen.data_ptr())
    assert _bitops.project(0, 0, 0, 5, 8, 0.1, 10.0, 1)[0] == -1          # null pointers
    assert _bitops.project(*ptrs, -1, 8, 0.1, 10.0, 1)[0] == -2            # n < 0
    assert _bitops.project(*ptrs, 12, 25, 0.1, 10.0, 1)[0] == -3           # bits
    assert _bitops.project(*ptrs, 12, 1, 0.1, 10.0, 1)[0] == -3
    assert _bitops.project(*ptrs, 12, 8, float("nan"), 10.0, 1)[0] == -4   # scale
    assert _bitops.project(*ptrs, 12, 8, 0.1, -1.0, 1)[0] == -5            # inv_scale
    assert _bitops.project(ptrs[0], ptrs[0] + 8, ptrs[2], 12, 8, 0.1, 10.0, 1)[0] == -6  # overlapping buffers
    assert _bitops.pack(codes.data_ptr(), 12, 8, 0, 5, 1)[0] == -2         # output length
    assert _bitops.pack(0, 12, 8, 0, 16, 1)[0] == -1
    assert _bitops.unpack(0, 16, 12, 8, 0, 1)[0] == -1
    assert _bitops.unpack(frozen.data_ptr(), 3, 12, 8, codes.data_ptr(), 1)[0] == -2
    assert _bitops.first_nonfinite(0, 5)[0] == -1
    assert _bitops.project_latent(0, 0, 0, 5, 8, 0.1, True, 1)[0] == -1     # the per-step projection too
    assert _bitops.project_latent(*ptrs, -1, 8, 0.1, True, 1)[0] == -2
    assert _bitops.project_latent(*ptrs, 12, 25, 0.1, True, 1)[0] == -3
    assert _bitops.project_latent(*ptrs, 12, 8, float("inf"), True, 1)[0] == -4
    assert _bitops.project_latent(ptrs[0], ptrs[0] + 8, ptrs[2], 12, 8, 0.1, True, 1)[0] == -6
    assert torch.equal(codes, state()[1])  # nothing was written
