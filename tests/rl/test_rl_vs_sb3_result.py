"""The committed comparison of bitcl's PPO with stable-baselines3's (benchmarks/bench_rl_vs_sb3.py ->
rl_vs_sb3.json) and the docs' reading of it: the figure markers tie the numbers, this ties the
"within 2 s.e." column, which is words, to the file's flags."""
import json
import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
RESULT = ROOT / "benchmarks" / "results" / "rl_vs_sb3.json"
ROWS = {"Breakout": "breakout", "SpaceInvaders": "space_invaders", "Freeway": "freeway"}


def docs_column(text: str) -> dict[str, str]:
    """``{game: "yes" | "no"}`` from the last column of the docs' comparison table."""
    found = {}
    for label, game in ROWS.items():
        row = re.search(rf"^\| {label} \|.*\| (yes|no) \|$", text, flags=re.M)
        if row:
            found[game] = row.group(1)
    return found


def test_the_comparison_is_two_seeds_of_every_game_evaluated_alike():
    result = json.loads(RESULT.read_text())
    assert result["seeds"] == [0, 1] and result["steps"] == 100_000
    for game, entry in result["games"].items():
        assert len(entry["bitcl"]) == len(entry["sb3"]) == 2, game
        assert abs(entry["bitcl_mean"] - sum(entry["bitcl"]) / 2) < 1e-9
        assert entry["within_two_standard_errors"] == (
            abs(entry["difference"]) <= 2 * entry["standard_error_of_difference"])


def test_the_docs_say_within_noise_exactly_where_the_file_does():
    result = json.loads(RESULT.read_text())
    said = docs_column((ROOT / "docs" / "results.md").read_text())
    assert said == {game: "yes" if entry["within_two_standard_errors"] else "no"
                    for game, entry in result["games"].items()}


def test_the_column_check_fails_when_the_docs_flip_a_verdict():
    text = (ROOT / "docs" / "results.md").read_text()
    flipped = re.sub(r"^(\| SpaceInvaders \|.*\| )no \|$", r"\1yes |", text, flags=re.M)
    result = json.loads(RESULT.read_text())
    expected = {game: "yes" if entry["within_two_standard_errors"] else "no"
                for game, entry in result["games"].items()}
    assert flipped != text and docs_column(flipped) != expected
