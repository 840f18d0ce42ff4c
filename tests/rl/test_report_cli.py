"""`bitcl report` on `bitcl rl` runs, end to end as a user runs it."""
import json

import pytest

from tests.conftest import cli
from tests.rl.test_cli_rl import QUICK
from tests.robustness.fixtures import write_run

pytest.importorskip("minatar", reason="the MinAtar suite needs bitcl[rl]")
pytest.importorskip("matplotlib", reason="plots need bitcl[plots]")


@pytest.fixture(scope="module")
def rl_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rl") / "ft"
    done = cli("rl", *QUICK, "--games", "breakout,freeway", "--method", "finetune", "--out", out)
    assert done.returncode == 0, done.stderr
    return out


def test_report_of_an_rl_run_lists_score_and_writes_plots(rl_run, tmp_path):
    """The table row carries the run's own score and forgetting; the plots it links exist."""
    r = json.loads((rl_run / "results.json").read_text())
    out = tmp_path / "rep" / "report.md"
    done = cli("report", rl_run, "--out", out)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| ft |"))
    assert "finetune" in row and "breakout,freeway" in row
    shown = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731  (a tiny run may learn nothing)
    assert f"| {shown(r['score'])} ({len(r['score_over'])}/2) |" in row
    assert f"| {shown(r['forgetting'])} ({len(r['forgetting_over'])}/1) |" in row
    assert f"| {','.join(r['unlearned_games']) or '–'} |" in row
    links = [line.split("(")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert links and all((out.parent / link).is_file() for link in links)


def test_report_refuses_to_mix_rl_and_supervised_runs(rl_run, tmp_path):
    """An RL run and a supervised run have no common table: one line on stderr, exit 2."""
    sup = write_run(tmp_path / "sup")
    assert cli("report", sup).returncode == 0          # valid on its own
    done = cli("report", rl_run, sup)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "RL run" in done.stderr and "ft" in done.stderr


def test_mixing_names_both_kinds_and_analyze_bits_says_why_not(rl_run, tmp_path):
    """report on an RL and a supervised run names both kinds and says to report them separately; analyze bits
    and export on an RL checkpoint say that it holds a PPO agent, not a model of bitcl run (no 'bitcl run?')."""
    sup = write_run(tmp_path / "sup")
    done = cli("report", rl_run, sup)
    assert done.returncode == 2 and done.stderr.strip() == (
        f"bitcl report: error: cannot mix RL runs (bitcl rl: {rl_run}) and supervised runs (bitcl run or "
        f"bitcl.fit: {sup}) in one table; report them separately")
    for args in (["analyze", "bits", rl_run],
                 ["export", rl_run / "checkpoints" / "task-1.safetensors", "--format", "packed", "--out",
                  tmp_path / "x.safetensors"]):
        done = cli(*args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert "a checkpoint of an RL run (bitcl rl): it holds a PPO agent" in lines[0] and "bitcl run?" not in lines[0]
