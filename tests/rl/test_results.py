"""The results.json metrics of `bitcl rl` (docs/contracts/rl-results.md) on hand-made matrices."""
import pytest

from bitcl.rl.results import forgetting, normalised_matrix, score


def test_normalised_score_and_forgetting_by_hand():
    """normalised[i][j] = (R[i][j] - rand_j) / (R[j][j] - rand_j); score: last row's mean;
    forgetting: mean over j < T-1 of max_i normalised[i][j] - normalised[T-1][j]."""
    returns = [[10.0, 1.0, 0.0],
               [6.0, 5.0, 0.5],
               [4.0, 3.0, 2.0]]
    random = [2.0, 1.0, 0.0]
    norm = normalised_matrix(returns, random)
    assert norm[0] == pytest.approx([1.0, 0.0, 0.0])
    assert norm[1] == pytest.approx([0.5, 1.0, 0.25])
    assert norm[2] == pytest.approx([0.25, 0.5, 1.0])
    assert score(norm) == pytest.approx((0.25 + 0.5 + 1.0) / 3)
    assert forgetting(norm) == pytest.approx(((1.0 - 0.25) + (1.0 - 0.5)) / 2)


def test_unlearned_game_has_no_normalised_value():
    """A game whose trained return equals the random one cannot be normalised: null, skipped by the means."""
    norm = normalised_matrix([[1.0, 0.0], [1.0, 3.0]], [1.0, 1.0])
    assert norm[0][0] is None and norm[1][0] is None
    assert norm[1][1] == pytest.approx(1.0)
    assert score(norm) == pytest.approx(1.0)
    assert forgetting(norm) is None


def test_game_below_random_is_not_normalised():
    """A trained return below the random one would flip the sign: null, and the game is reported unlearned."""
    from bitcl.rl.results import unlearned
    returns, random = [[3.0, 0.0], [3.0, 0.0]], [1.0, 0.3]
    norm = normalised_matrix(returns, random)
    assert norm[1] == [1.0, None] and score(norm) == 1.0
    assert unlearned(returns, random, ["a", "b"]) == ["b"]


def test_single_game_has_zero_forgetting():
    """With one game there is nothing to forget."""
    assert forgetting(normalised_matrix([[3.0]], [1.0])) == 0.0


def test_report_table_and_plot(tmp_path):
    """The RL report lists score and forgetting per run and writes one PNG per run."""
    pytest.importorskip("matplotlib")
    from bitcl.rl.report import is_rl_result, plots, table
    r = {"method": "blip", "games": ["a", "b"], "return_matrix": [[2.0, 0.0], [1.5, 3.0]],
         "random_returns": [0.0, 0.0], "normalised_matrix": [[1.0, 0.0], [0.75, 1.0]], "score": 0.875,
         "forgetting": 0.25, "capacity": [0.1, 0.2], "memory": {"state_bytes": [9, 9]},
         "timing": {"steps_per_second": [1000.0, 3000.0]},
         "train_curves": [{"steps": [10, 20], "returns": [None, 1.0]}, {"steps": [10, 20], "returns": [0.5, 2.0]}]}
    assert is_rl_result(r)
    text = table([("run1", r)])
    assert "| run1 | blip | a,b | 0.875 | 0.250 | 0.200 | 9 | 2000 |" in text
    written = plots([("run1", r)], tmp_path)
    assert [p.name for p in written] == ["run1_rl.png"] and written[0].stat().st_size > 1000
    from bitcl.rl.report import rl_report
    text = rl_report([("run1", r)], tmp_path / "rep", relative_links=True)
    assert "| run1 | blip |" in text and "![run1_rl](run1_rl.png)" in text
