"""The kernel fuzz harness (tests/fuzz/fuzz_kernels.py) on seeded random inputs, without atheris."""
import importlib.util
import random
from collections import Counter
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "fuzz" / "fuzz_kernels.py"


def load_harness():
    spec = importlib.util.spec_from_file_location("fuzz_kernels", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_random_inputs_give_bitcl_errors_or_correct_results():
    """300 random byte strings: every call ends in a bitcl error or a verified result, never a crash;
    every entry point is reached and both outcomes occur."""
    harness = load_harness()
    rng = random.Random(20261201)
    outcomes = Counter(harness.classify(rng.randbytes(rng.randint(0, 300))) for _ in range(300))
    ops = {key.split(":")[0] for key in outcomes}
    assert ops == set(harness.OPERATIONS)
    for op in harness.OPERATIONS:
        assert outcomes[f"{op}:ok"] > 0, (op, outcomes)
        assert sum(v for k, v in outcomes.items() if k.startswith(op) and not k.endswith(":ok")) > 0, (op, outcomes)


def test_edge_byte_strings():
    """Empty, all-zero, all-one and every-byte inputs end in a bitcl error or a verified result."""
    harness = load_harness()
    for data in [b"", b"\x00" * 64, b"\xff" * 300, bytes(range(256))]:
        harness.run_one(data)
