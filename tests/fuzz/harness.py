"""What the atheris harnesses of tests/fuzz/ share: decoding fuzzer bytes into choices, and the runner.

A harness defines ``run_one(data: bytes) -> str`` (an outcome name; anything unexpected raises)
and calls :func:`main`: with ``--count N`` it runs N seeded random inputs and prints the tally
(no atheris needed); otherwise it hands ``run_one`` to atheris (libFuzzer flags such as
``-max_total_time=60``), which `make fuzz` does for every tests/fuzz/fuzz_*.py.
"""
from __future__ import annotations

import random
import struct
import sys
from collections import Counter
from typing import Callable

from tests.fuzz.reader import Reader


class JsonReader(Reader):
    """A :class:`tests.fuzz.reader.Reader` that also decodes JSON values."""

    def value(self, depth: int = 0):
        """A JSON value of any type (numbers at the edges of their ranges included)."""
        kind = self.int(0, 8 if depth < 2 else 5)
        if kind == 0:
            return None
        if kind == 1:
            return bool(self.int(0, 1))
        if kind == 2:
            return self.int(-3, 30) if self.int(0, 1) else int.from_bytes(self.take(8), "little", signed=True)
        if kind == 3:
            return struct.unpack("<d", self.take(8))[0]  # NaN and infinities included
        if kind == 4:
            return [0.0, 1.0, -1.0, 1e308, float("inf"), float("nan"), 0.5][self.int(0, 6)]
        if kind == 5:
            return self.take(self.int(0, 4)).decode("latin-1")
        if kind == 6:
            return [self.value(depth + 1) for _ in range(self.int(0, 3))]
        if kind == 7:
            return {str(self.int(0, 3)): self.value(depth + 1) for _ in range(self.int(0, 2))}
        return [[self.value(depth + 2) for _ in range(self.int(1, 2))] for _ in range(self.int(1, 2))]


def main(argv: list[str], run_one: Callable[[bytes], str], max_size: int = 300) -> int:
    """``--count N``: tally N seeded random inputs; else fuzz with atheris (when installed)."""
    if "--count" in argv:
        count = int(argv[argv.index("--count") + 1])
        rng = random.Random(0)
        tally = Counter(run_one(bytes(rng.randrange(256) for _ in range(rng.randrange(1, max_size))))
                        for _ in range(count))
        print(dict(tally))
        return 0
    from tests.fuzz.reader import atheris
    if atheris is None:
        print("atheris is not installed (make fuzz-deps); use --count N for random inputs", file=sys.stderr)
        return 2
    import numpy as np
    np.seterr(all="ignore")
    atheris.Setup(argv, lambda data: run_one(bytes(data)))
    atheris.Fuzz()
    return 0
