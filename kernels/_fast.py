"""Build and load the C fast path (``bitops.c``) through ctypes.

The library is compiled on first use with the system C compiler (``$CC`` or
``cc``) into a per-user cache keyed by the source, the flags and the CPU, so a
fresh machine rebuilds it and a second import costs nothing. Any failure
(no compiler, no write access, a broken build) raises :class:`FastPathUnavailable`
and the caller falls back to the reference implementation.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

_SOURCE = Path(__file__).with_name("bitops.c")
_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-shared", "-fPIC", "-std=c11"]


class FastPathUnavailable(RuntimeError):
    """The C fast path could not be built or loaded on this machine."""


def _cpu_id() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") or line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _cache_dir() -> Path:
    root = os.environ.get("BITCL_KERNEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "bitcl", "kernels")
    return Path(root)


def _compile(target: Path, compiler: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build into a temporary name, then rename: concurrent first imports
    # (several test workers, several torchrun ranks) never see half a library.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [compiler, *_FLAGS, str(_SOURCE), "-o", tmp, "-lm"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise FastPathUnavailable(f"{compiler} failed: {done.stderr.strip().splitlines()[-1:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load() -> ctypes.CDLL:
    """Compile (once) and load the fast-path library."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise FastPathUnavailable("no C compiler found (set CC or install gcc)")
    key = hashlib.sha256(
        _SOURCE.read_bytes() + " ".join(_FLAGS).encode() + _cpu_id().encode()).hexdigest()[:16]
    target = _cache_dir() / f"bitops-{key}.so"
    try:
        if not target.exists():
            _compile(target, compiler)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as error:
        raise FastPathUnavailable(str(error)) from error
    i64, i32, f32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    lib.bitcl_first_nonfinite.argtypes = [ptr, i64]
    lib.bitcl_first_nonfinite.restype = i64
    lib.bitcl_project.argtypes = [ptr, ptr, ptr, i64, i32, f32, f32, i32]
    lib.bitcl_project.restype = None
    lib.bitcl_pack.argtypes = [ptr, i64, i32, ptr, i32]
    lib.bitcl_pack.restype = None
    lib.bitcl_unpack.argtypes = [ptr, i64, i32, ptr, i32]
    lib.bitcl_unpack.restype = None
    return lib
