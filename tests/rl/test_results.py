"""The results.json metrics of `bitcl rl` (DESIGN.md part 2) on hand-made matrices."""
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


def test_single_game_has_zero_forgetting():
    """With one game there is nothing to forget."""
    assert forgetting(normalised_matrix([[3.0]], [1.0])) == 0.0
