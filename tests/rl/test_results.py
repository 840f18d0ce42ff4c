"""The results.json metrics of `bitcl rl` (docs/contracts/rl-results.md) on hand-made episode returns."""
import pytest

from bitcl.rl.results import RLResult, forgetting, normalised_matrix, score


def _result(returns_eps, random_eps, games=None, reference_eps=None, steps=100):
    """An RLResult from per-episode returns (rows of games' episode lists)."""
    from types import SimpleNamespace
    from bitcl.rl.evaluate import mean_of
    games = games or [f"g{j}" for j in range(len(random_eps))]
    config = SimpleNamespace(method="blip", suite="minatar", seed=0, steps=steps, eval_episodes=len(random_eps[0]),
                             single_task=False, reference="ref.json" if reference_eps else None,
                             to_dict=lambda: {})
    r = RLResult(config, games, random_episodes=random_eps, episode_returns=returns_eps,
                 return_matrix=[[mean_of(e) for e in row] for row in returns_eps], reference_episodes=reference_eps)
    return r


def _eps(mean, n=20, spread=1.0):
    """n episode returns with the given mean and a symmetric spread."""
    return [mean + spread * (1 if k % 2 else -1) for k in range(n)]


def test_normalised_score_and_forgetting_by_hand():
    """normalised[i][j] = (R[i][j] - rand_j) / (R[j][j] - rand_j) (no reference run); score: last row's
    mean; forgetting (Continual World): mean over j < T-1 of normalised[j][j] - normalised[T-1][j]."""
    returns = [[10.0, 1.0, 0.0],
               [6.0, 5.0, 0.5],
               [4.0, 3.0, 2.0]]
    random = [2.0, 1.0, 0.0]
    norm = normalised_matrix(returns, random, [10.0, 5.0, 2.0], [True, True, True])
    assert norm[0] == [1.0, 0.0, 0.0]
    assert norm[1] == [0.5, 1.0, 0.25]
    assert norm[2] == [0.25, 0.5, 1.0]
    assert score(norm) == (pytest.approx((0.25 + 0.5 + 1.0) / 3), [0, 1, 2])
    # drop from the end of each game's own training: (1 - 0.25) and (1 - 0.5); not the max over rows
    assert forgetting(norm) == (pytest.approx((0.75 + 0.5) / 2), [0, 1])


def test_reference_run_replaces_the_own_training_denominator():
    """With a single-task reference, normalised[i][j] = (R[i][j] - rand_j) / (ref_j - rand_j)."""
    r = _result([[_eps(6.0)], ], [_eps(2.0)], reference_eps=[_eps(10.0)])
    out = r.to_json()
    assert out["normalised_matrix"] == [[pytest.approx(0.5)]]
    assert out["normalisation"]["reference"] == "single-task" and "Continual World" in out["normalisation"]["citation"]
    assert out["reference_returns"] == [pytest.approx(10.0)]


def test_game_not_above_random_is_flagged_and_left_out():
    """A game whose trained episodes do not beat random ones (Welch one-sided) has no normalised value,
    is listed in unlearned_games, and the score says what it averages over: never a bare 1.0."""
    learned, noise = _eps(8.0), _eps(1.2, spread=3.0)
    r = _result([[learned, _eps(1.0)], [learned, noise]], [_eps(1.0), _eps(1.0, spread=3.0)], ["a", "b"])
    out = r.to_json()
    assert out["unlearned_games"] == ["b"] and out["learned_games"] == ["a"]
    assert out["normalised_matrix"][1] == [pytest.approx(1.0), None]
    assert out["score"] == pytest.approx(1.0) and out["score_over"] == ["a"]
    line = r.summary_line()
    assert "over 1/2 games" in line and "NOT learned above random" in line and "b" in line.split(":")[-1]


def test_no_game_learned_gives_no_score():
    """When nothing beats random, the score is None and the summary says so."""
    r = _result([[_eps(1.0)]], [_eps(1.0)])
    out = r.to_json()
    assert out["score"] is None and out["score_over"] == [] and out["unlearned_games"] == ["g0"]
    assert "score: none" in r.summary_line()


def test_small_denominator_cannot_blow_up():
    """Ten episodes 1.4 points above a noisy random policy are not a significant gain: the game is not
    normalised, so a later entry cannot become 2.86 (the failure seen with 10-episode evaluation)."""
    random = [0.0, 5.0] * 5
    trained = [0.0, 5.0, 3.0, 5.0] + [0.0, 5.0] * 3            # mean 2.8 against random's 2.5: noise
    later = [8.0] * 10
    r = _result([[trained], [later]], [random], ["space_invaders"])
    r.return_matrix = r.return_matrix[:1]
    r.episode_returns = r.episode_returns[:1]
    assert r.to_json()["normalised_matrix"] == [[None]]


def test_intervals_per_entry_are_student_t():
    """Every matrix entry records mean, std and a 95 % t interval over its episodes."""
    from bitcl.stats import summarize
    eps = _eps(3.0, n=10)
    out = _result([[eps]], [_eps(0.0, n=10)]).to_json()
    cell = out["return_intervals"][0][0]
    assert cell == summarize(eps).as_dict() and cell["interval"] == "t" and cell["low"] < 3.0 < cell["high"]
    assert out["episode_returns"][0][0] == eps


def test_single_game_has_no_forgetting():
    """With one game there is nothing to forget: forgetting is None, not 0."""
    assert forgetting(normalised_matrix([[3.0]], [1.0], [3.0], [True])) == (None, [])


def test_old_progress_without_episodes_restores():
    """A checkpoint of bitcl 0.2 holds only means: each entry becomes a one-episode list."""
    r = _result([], [[0.0]])
    r.random_episodes = []
    r.restore({"return_matrix": [[2.0]], "random_returns": [1.0]})
    assert r.episode_returns == [[[2.0]]] and r.random_episodes == [[1.0]]
    assert r.to_json()["return_matrix"] == [[2.0]]


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
    assert "| run1 | blip | a,b | 0.875 | 0.250 | – | 0.200 | 9 | 2000 |" in text  # bitcl 0.2 results
    r.update(score_over=["a", "b"], forgetting_over=["a"], unlearned_games=[])
    assert "| run1 | blip | a,b | 0.875 (2/2) | 0.250 (1/1) | – | 0.200 | 9 | 2000 |" in table([("run1", r)])
    written = plots([("run1", r)], tmp_path)
    assert [p.name for p in written] == ["run1_rl.png"] and written[0].stat().st_size > 1000
    from bitcl.rl.report import rl_report
    text = rl_report([("run1", r)], tmp_path / "rep", relative_links=True)
    assert "| run1 | blip |" in text and "![run1_rl](run1_rl.png)" in text
