"""Shared by the harnesses in tests/fuzz/: decoding fuzzer bytes, and atheris when present."""
from __future__ import annotations

import contextlib
import struct

try:  # coverage-guided when run by atheris (`make fuzz`); the pytest suite runs without it
    import atheris
except ImportError:
    atheris = None


def instrumented(module_name: str):
    """Instrument the bitcl modules imported inside this block when a harness runs as a script
    under atheris (only bitcl's: instrumenting torch takes minutes); a no-op otherwise."""
    if atheris is not None and module_name == "__main__":
        return atheris.instrument_imports(include=["bitcl"])
    return contextlib.nullcontext()


class Reader:
    """Turns fuzzer bytes into choices; past the end it reads zeros (any input decodes)."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk.ljust(n, b"\0")

    def int(self, lo: int, hi: int) -> int:
        return lo + int.from_bytes(self.take(4), "little") % (hi - lo + 1)

    def choice(self, options):
        return options[self.int(0, len(options) - 1)]

    def rest(self) -> bytes:
        return self.data[self.pos:]

    def float(self) -> float:
        """Mostly ordinary magnitudes, sometimes NaN, infinities, zero, float32 extremes or raw bits."""
        kind = self.int(0, 7)
        special = [float("nan"), float("inf"), -float("inf"), 0.0, -1.0, 1e-45, 3.5e38]
        if kind < len(special) and self.int(0, 3) == 0:
            return special[kind]
        if kind == 0:
            return struct.unpack("<d", self.take(8))[0]
        return (self.int(0, 2**20) - 2**19) * 2.0 ** -self.int(0, 40)
