"""The atheris harnesses of tests/fuzz/ run briefly in the suite, on generated inputs, without atheris."""
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.fuzz import fuzz_checkpoint, fuzz_loaders


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_loader_harness(data):
    """Any bytes given to fuzz_loaders.run_one load within the loader contract or are refused in one line."""
    assert fuzz_loaders.run_one(data) in ("loaded", "refused")


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=200))
# results.json files without timing.train_seconds / memory.state_bytes, which read_results accepts and
# the report's table needs (found by a fresh-clone CI run: the harness once bypassed the report's reader)
@example(b"K\\\xce\x93\x9eY\xa0\x1c\x01\x01\x05\xd2")
@example(b"K\\\xce\x93\x1eY\xa0\x1c\x01\x01\x05\xd2")
def test_checkpoint_harness(data):
    """Any bytes given to fuzz_checkpoint.run_one are accepted (and then usable) or refused in one line."""
    assert fuzz_checkpoint.run_one(data) in ("accepted", "refused")


@pytest.mark.parametrize("harness", [fuzz_loaders, fuzz_checkpoint])
def test_harness_count_mode_tallies_outcomes(harness, capsys):
    """`--count N` runs N seeded random inputs and prints the tally (what `make fuzz` does without atheris)."""
    assert harness.main(["x", "--count", "25"]) == 0
    tally = eval(capsys.readouterr().out)  # noqa: S307 - our own printed dict
    assert sum(tally.values()) == 25 and set(tally) <= {"loaded", "refused", "accepted"}
