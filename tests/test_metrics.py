"""ACC, BWT and forgetting follow the definitions in docs/contracts/results.md."""
import pytest

from bitcl import metrics

A = [[0.9, 0.1, 0.2],
     [0.7, 0.8, 0.3],
     [0.6, 0.75, 0.95]]


def test_definitions_on_a_known_matrix():
    """acc = mean of last row; bwt = mean(A[T-1][j] - A[j][j]); forgetting uses the max before the end."""
    assert metrics.acc(A) == pytest.approx((0.6 + 0.75 + 0.95) / 3)
    assert metrics.bwt(A) == pytest.approx(((0.6 - 0.9) + (0.75 - 0.8)) / 2)
    assert metrics.forgetting(A) == pytest.approx(((0.9 - 0.6) + (0.8 - 0.75)) / 2)


def test_single_task_has_no_transfer():
    """With one task, BWT and forgetting are zero."""
    assert metrics.bwt([[0.5]]) == 0 and metrics.forgetting([[0.5]]) == 0
