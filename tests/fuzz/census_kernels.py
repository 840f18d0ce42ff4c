"""A census of malformed inputs to the kernels and Bit layers, by class: what each one does.

    python tests/fuzz/census_kernels.py                      # the installed bitcl
    python tests/fuzz/census_kernels.py --pythonpath OLDTREE  # another source tree (e.g. an old commit)

Every case runs in its own interpreter (a segmentation fault must not stop the census)
and is classified: ``bitcl error`` (a :class:`bitcl.errors.BitclError`, the expected
outcome: it passes), ``other exception`` (a generic or torch error), ``accepted``
(no error: a malformed input silently used) or ``crash`` (the interpreter died).
Prints a table per class and, with ``--json``, writes the tallies.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict

PRELUDE = """
import torch
from bitcl import kernels
from bitcl.quant import BitConv2d, BitLinear
def state(n=12, bits=8):
    g = torch.Generator().manual_seed(0)
    m = 2 ** (bits - 1) - 1
    codes = torch.randint(-m, m + 1, (n,), generator=g, dtype=torch.int32)
    frozen = torch.randint(0, bits + 1, (n,), generator=g, dtype=torch.int32).to(torch.uint8)
    return codes.float() * (1 / m) + 0.3 * torch.randn(n, generator=g), codes, frozen
l, c, f = state()
S = 1 / 127
"""

CASES = {
    "project_: shapes": [
        "kernels.project_(torch.zeros(1_000_000), c, f, 8, S)",
        "kernels.project_(l, c, f[:5], 8, S)",
        "kernels.project_(l, c.view(3, 4), f, 8, S)",
        "kernels.project_(l[:4], c, f, 8, S)",
    ],
    "project_: dtypes": [
        "kernels.project_(l.double(), c, f, 8, S)",
        "kernels.project_(l, c.long(), f, 8, S)",
        "kernels.project_(l, c, f.int(), 8, S)",
        "kernels.project_(l.to(torch.complex64), c, f, 8, S)",
        "kernels.project_(l, c.tolist(), f, 8, S)",
        "kernels.project_(l.half(), c, f, 8, S)",
    ],
    "project_: bits": [
        "kernels.project_(l, c, f, 1, S)",
        "kernels.project_(l, c, f, 25, S)",
        "kernels.project_(l, c, f, 64, S)",
        "kernels.project_(l, c, f, 0, S)",
        "kernels.project_(l, c, f, -3, S)",
        "kernels.project_(l, c, f, '8', S)",
    ],
    "project_: scales": [
        "kernels.project_(l, c, f, 8, float('nan'))",
        "kernels.project_(l, c, f, 8, float('inf'))",
        "kernels.project_(l, c, f, 8, 0.0)",
        "kernels.project_(l, c, f, 8, -S)",
        "kernels.project_(l, c, f, 8, 1e-45)",
        "kernels.project_(l, c, f, 8, S, 2 / S)",
        "kernels.project_(l, c, f, 8, S, float('nan'))",
    ],
    "project_: values": [
        "c[5] = 128; kernels.project_(l, c, f, 8, S)",
        "c[5] = -2**31; kernels.project_(l, c, f, 8, S)",
        "f[3] = 9; kernels.project_(l, c, f, 8, S)",
        "f[3] = 255; kernels.project_(l, c, f, 8, S)",
        "l[4] = float('nan'); kernels.project_(l, c, f, 8, S)",
        "l[4] = float('inf'); kernels.project_(l, c, f, 8, S)",
    ],
    "project_: memory": [
        "kernels.project_(l, l.view(torch.int32), f, 8, S)",
    ],
    "pack/unpack": [
        "kernels.pack_bitplanes(torch.zeros(4, dtype=torch.int32), 0)",
        "kernels.pack_bitplanes(torch.zeros(4, dtype=torch.int32), 25)",
        "kernels.pack_bitplanes(torch.zeros(4, dtype=torch.int64), 4)",
        "kernels.pack_bitplanes(torch.tensor([0, 8, 1], dtype=torch.int32), 4)",
        "kernels.pack_bitplanes(torch.tensor([-2**31], dtype=torch.int32), 24)",
        "kernels.unpack_bitplanes(torch.zeros(3, 2, dtype=torch.uint8), 4, 16)",
        "kernels.unpack_bitplanes(torch.zeros(4, 0, dtype=torch.uint8), 4, -1)",
        "kernels.unpack_bitplanes(torch.zeros(4, 1, dtype=torch.int32), 4, 8)",
        "kernels.unpack_bitplanes(torch.zeros(0, 1, dtype=torch.uint8), 0, 8)",
        "kernels.first_nonfinite(torch.zeros(3, dtype=torch.float64))",
    ],
    "layers: constructor": [
        "BitLinear(0, 3)", "BitLinear(4, 0)", "BitLinear(-4, 3)", "BitLinear('4', 3)", "BitLinear(4.0, 3)",
        "BitLinear(4, 3, range_factor=float('nan'))", "BitLinear(4, 3, range_factor=float('inf'))",
        "BitLinear(4, 3, range_factor=0.0)", "BitLinear(4, 3, range_factor='6')", "BitLinear(4, 3, bits='8')",
        "BitLinear(4, 3, bits=30)", "BitLinear(4, 3, dtype=torch.complex64)", "BitLinear(4, 3, dtype=torch.int32)",
        "BitConv2d(0, 2, 3)", "BitConv2d(1, 2, 0)", "BitConv2d(3, 2, 3, groups=2)", "BitConv2d(1, 2, 3, stride=0)",
        "BitConv2d(1, 2, '3')",
    ],
    "layers: inputs": [
        "BitLinear(4, 3)(torch.ones(2, 4, dtype=torch.complex64))",
        "BitLinear(4, 3)(torch.ones(2, 4, dtype=torch.int64))",
        "BitLinear(4, 3)(torch.ones(2, 4, dtype=torch.bool))",
        "BitLinear(4, 3)(torch.ones(2, 4, dtype=torch.float64))",
        "BitConv2d(1, 2, 3)(torch.ones(1, 1, 5, 5, dtype=torch.complex64))",
        "BitConv2d(1, 2, 3)(torch.ones(1, 1, 5, 5, dtype=torch.int32))",
        "m = BitLinear(4, 3, bits=8); m.weight_codes[0, 0] = 300; m.project_()",
        "m = BitLinear(4, 3, bits=8); m.weight_frozen[0, 0] = 9; m.project_()",
    ],
}

RUNNER = """
import sys
{prelude}
try:
    exec(sys.argv[1])
    print("RESULT accepted")
except Exception as error:
    import bitcl.errors
    print("RESULT", "bitcl error" if isinstance(error, bitcl.errors.BitclError) else "other exception",
          type(error).__name__)
"""


def run_case(code: str, env: dict) -> tuple[str, str]:
    done = subprocess.run([sys.executable, "-c", RUNNER.format(prelude=PRELUDE), code], capture_output=True,
                          text=True, timeout=300, env=env)
    if done.returncode < 0:
        return "crash", f"signal {-done.returncode}"
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            parts = line.split(" ", 1)[1]
            outcome = "bitcl error" if parts.startswith("bitcl error") else \
                "other exception" if parts.startswith("other exception") else "accepted"
            return outcome, parts
    return "crash", (done.stderr.strip().splitlines() or ["no output"])[-1]


def environment_case(env: dict) -> tuple[str, str]:
    """XDG_CACHE_HOME="" from a fresh cwd: nothing may be written into the cwd."""
    with tempfile.TemporaryDirectory() as cwd:
        code = "from bitcl import kernels\nimport torch\nkernels.project_(torch.zeros(3), " \
               "torch.zeros(3, dtype=torch.int32), torch.zeros(3, dtype=torch.uint8), 8, 0.01)\n"
        env = {k: v for k, v in env.items() if k != "BITCL_KERNEL_CACHE"}  # the old cache override
        done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                              env={**env, "XDG_CACHE_HOME": ""})
        written = os.listdir(cwd)
        if done.returncode != 0:
            return "crash" if done.returncode < 0 else "other exception", done.stderr.strip()[-200:]
        return ("accepted", f"wrote {written} into the cwd") if written else ("bitcl error", "nothing written")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pythonpath", help="a source tree to put first on PYTHONPATH")
    parser.add_argument("--json", help="write the tallies here")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    tallies: dict[str, Counter] = defaultdict(Counter)
    for cls, cases in CASES.items():
        for code in cases:
            outcome, detail = run_case(code, env)
            tallies[cls][outcome] += 1
            if args.verbose:
                print(f"  {cls:22s} {outcome:16s} {code}  -> {detail}")
    outcome, detail = environment_case(env)
    tallies["environment: XDG_CACHE_HOME=''"][outcome] += 1
    if args.verbose:
        print(f"  environment            {outcome:16s} -> {detail}")
    outcomes = ["bitcl error", "other exception", "accepted", "crash"]
    print(f"{'class':32s} {'tried':>5s} " + " ".join(f"{o:>15s}" for o in outcomes))
    for cls, counts in tallies.items():
        print(f"{cls:32s} {sum(counts.values()):5d} " + " ".join(f"{counts[o]:15d}" for o in outcomes))
    total = Counter()
    for counts in tallies.values():
        total.update(counts)
    print(f"{'total':32s} {sum(total.values()):5d} " + " ".join(f"{total[o]:15d}" for o in outcomes))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({cls: dict(c) for cls, c in tallies.items()}, f, indent=2)


if __name__ == "__main__":
    main()
