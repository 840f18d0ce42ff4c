"""The not-learned check: chance per scenario, the binomial bound, the reason, and where it shows."""
import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bitcl.train.learned import MARGIN, check_learned, upper_bound, warning_lines


def test_small_test_sets_are_not_over_flagged():
    """6 of 10 on a 2-class task is not called unlearned (the bound is wide); 300 of 600 is."""
    assert check_learned([[0.6]], [0.5], [10]) == []
    flagged = check_learned([[0.5]], [0.5], [600])
    assert [f["task"] for f in flagged] == [0] and flagged[0]["upper_bound"] < 0.5 + MARGIN


def test_a_learned_task_is_not_flagged_and_only_the_diagonal_counts():
    """Forgetting later (a low off-diagonal entry) is not 'not learned'; a low diagonal entry is."""
    matrix = [[0.99, 0.5], [0.2, 0.45]]
    flagged = check_learned(matrix, [0.5, 0.5], [1000, 1000])
    assert [f["task"] for f in flagged] == [1]


def test_the_reason_separates_freezing_from_the_optimiser():
    """With Bit layers the reason gives the share frozen before the task and the range left per tensor."""
    matrix = [[0.2, 0.2], [0.99, 0.21]]
    flagged = check_learned(matrix, [0.2, 0.2], [500, 500], capacity=[0.6, 0.7],
                            range_left=[{"0.weight": 0.0, "2.weight": 1.0}, {}])
    assert [f["task"] for f in flagged] == [0, 1]
    assert "not a freezing problem" in flagged[0]["reason"]
    assert "60.0% of the bits" in flagged[1]["reason"] and "0.weight 0" in flagged[1]["reason"]
    no_bits = check_learned([[0.2]], [0.2], [500])
    assert "no Bit layers" in no_bits[0]["reason"]
    assert warning_lines(flagged)[1].startswith("WARNING: task 1 not learned")


@given(correct=st.integers(0, 200), total=st.integers(1, 200))
def test_upper_bound_is_a_valid_bound(correct, total):
    """The Clopper-Pearson bound lies in [k/n, 1] and grows with k."""
    correct = min(correct, total)
    bound = upper_bound(correct, total)
    assert correct / total - 1e-12 <= bound <= 1.0
    if correct < total:
        assert upper_bound(correct + 1, total) >= bound


@given(correct=st.integers(0, 2000), total=st.integers(1, 2000))
def test_upper_bound_is_the_beta_quantile_of_scipy_stats(correct, total):
    """The bound is scipy.stats.beta.ppf(0.95, k + 1, n - k) bit for bit (computed with scipy.special,
    which imports faster): results.json's bounds did not change."""
    from scipy import stats
    correct = min(correct, total - 1)
    assert upper_bound(correct, total) == float(stats.beta.ppf(0.95, correct + 1, total - correct))


def test_bad_counts_are_refused():
    with pytest.raises(ValueError):
        upper_bound(3, 2)


@pytest.mark.slow
def test_a_run_that_learns_nothing_says_so_everywhere(small_npz, tmp_path):
    """A CLI run at a learning rate too small to learn: the summary warns, results.json lists the tasks in
    not_learned with the chance level and rule, and bitcl report marks them; a run that learns has none."""
    from tests.conftest import cli
    common = ["--method", "blip", "--data", small_npz, "--classes", "0,1,2,3", "--tasks", "2", "--seed", "0"]
    done = cli("run", *common, "--hidden", "8", "--epochs", "1", "--lr", "1e-9", "--out", tmp_path / "stuck")
    assert done.returncode == 0, done.stderr
    # task 0 (0.52 on 81 test digits) is within the binomial bound's reach of learning; task 1 (0.46 on 89) is not
    assert "WARNING: task 1 not learned" in done.stdout and "of the bits were frozen before this task" in done.stdout
    results = json.loads((tmp_path / "stuck" / "results.json").read_text())
    assert results["learned_check"]["chance"] == [0.5, 0.5] and results["learned_check"]["margin"] == MARGIN
    assert [f["task"] for f in results["not_learned"]] == [1]
    assert "range_left" in results and len(results["range_left"]) == 2
    done = cli("run", *common, "--hidden", "32", "--epochs", "3", "--lr", "1e-2", "--out", tmp_path / "fine")
    assert done.returncode == 0 and "not learned" not in done.stdout
    assert json.loads((tmp_path / "fine" / "results.json").read_text())["not_learned"] == []
    report = cli("report", tmp_path / "stuck", tmp_path / "fine", "--out", tmp_path / "r.md")
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "r.md").read_text()
    assert "| not learned |" in text and "⚠ T1" in text
    assert [line for line in text.splitlines() if line.startswith("| fine")][0].endswith("| – |")


def test_chance_levels_follow_the_scenario(small_npz):
    """Task-IL: 1 / the task's head; class-IL: 1 / the classes seen after the task; domain: 1 / the shared head."""
    from bitcl.config import RunConfig
    from bitcl.engine import Engine
    expected = {"task": [0.5, 0.5], "class": [0.5, 0.25], "domain": [0.5, 0.5]}
    for scenario, chance in expected.items():
        engine = Engine(RunConfig(method="finetune", data=small_npz, classes=[0, 1, 2, 3], tasks=2, hidden=[4],
                                  scenario=scenario, epochs=0, quiet=True))
        assert engine.result.chance == chance, scenario
        assert engine.result.test_samples == [len(t.y_test) for t in engine.scenario.tasks]
