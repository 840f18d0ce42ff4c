"""benchmarks/bench_avalanche.py's statistics: the distribution-free interval for a median, the verdict
against a target, and that the committed avalanche.json's medians, intervals and verdicts are what the
script derives from the rounds it stores."""
import json
import math
import statistics
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # importing the script imports Avalanche (several seconds)

RESULT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "avalanche.json"


@pytest.fixture(scope="module")
def bench():
    from benchmarks import bench_avalanche
    return bench_avalanche


def coverage(n: int, lo_rank: int) -> float:
    """P(x_(j) <= median <= x_(n+1-j)) for a continuous distribution: 1 - 2 P(Binomial(n, 1/2) < j)."""
    return 1 - 2 * sum(math.comb(n, i) for i in range(lo_rank)) / 2 ** n


@pytest.mark.parametrize("n", [6, 9, 15, 25, 40])
def test_median_interval_is_the_tightest_order_statistics_with_95_percent_coverage(bench, n):
    values = [float(v) for v in range(n, 0, -1)]  # unsorted on purpose
    lo, hi = bench.median_interval(values)
    j = int(lo)  # value k is the k-th smallest
    assert hi == n + 1 - j
    assert coverage(n, j) >= 0.95  # covers
    assert coverage(n, j + 1) < 0.95  # and one rank further in would not


def test_median_interval_with_too_few_rounds_is_the_whole_range(bench):
    assert bench.median_interval([3.0, 1.0, 2.0]) == [1.0, 3.0]


def test_verdict_is_within_or_above_only_when_the_whole_interval_says_so(bench):
    assert bench.against_target([1.02, 1.14], 1.15) == "within"
    assert bench.against_target([1.02, 1.15], 1.15) == "within"
    assert bench.against_target([1.16, 1.40], 1.15) == "above"
    # a median below the target with an interval reaching above it is not a pass
    assert bench.against_target([1.05, 1.20], 1.15) == "undecided"
    assert bench.against_target([1.15, 1.20], 1.15) == "undecided"


def _checked_rounds(bench, paths: dict) -> None:
    """The stored medians, intervals and verdicts of one timing block equal the script's, from its rounds."""
    loops = {name: path["loop_cpu_seconds"] for name, path in paths.items() if isinstance(path, dict)}

    def ratios(name, base):
        return [a / b for a, b in zip(loops[name], loops[base])]

    for name in loops:
        assert paths[name]["ratio_to_cli"] == statistics.median(ratios(name, "cli_engine"))
        assert paths[name]["ratio_to_cli_interval"] == bench.median_interval(ratios(name, "cli_engine"))
    for name, target in bench.FIT_TARGETS.items():
        assert paths[name]["against_target"] == bench.against_target(paths[name]["ratio_to_cli_interval"], target)
    plugin = ratios("avalanche_blip_plugin", "avalanche_naive_no_plugin")
    assert paths["blip_plugin_over_naive"] == statistics.median(plugin)
    assert paths["blip_plugin_over_naive_interval"] == bench.median_interval(plugin)
    assert paths["blip_plugin_against_target"] == bench.against_target(paths["blip_plugin_over_naive_interval"])
    empty = ratios("avalanche_naive_empty_plugin", "avalanche_naive_no_plugin")
    assert paths["empty_plugin_over_naive_interval"] == bench.median_interval(empty)


def test_committed_result_is_what_the_script_derives_from_its_rounds(bench):
    result = json.loads(RESULT.read_text())
    assert result["protocol"]["plugin_target"] == bench.PLUGIN_TARGET
    _checked_rounds(bench, result["paths"])
    for paths in result["paths_by_epochs"].values():
        _checked_rounds(bench, paths)


def test_the_check_of_the_committed_result_fails_on_a_changed_verdict(bench):
    """Not vacuous: a verdict edited by hand (here 'above' made 'within') is caught."""
    result = json.loads(RESULT.read_text())
    paths = result["paths"]
    paths["blip_plugin_against_target"] = {"above": "within"}.get(paths["blip_plugin_against_target"], "above")
    with pytest.raises(AssertionError):
        _checked_rounds(bench, paths)
