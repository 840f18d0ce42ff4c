"""`bitcl rl` on the shared runner: steps recorded are steps trained, the progress bar never shows nan,
a run is bit-identical when repeated, and a checkpoint written before the runner was shared resumes."""
import json

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

pytest.importorskip("minatar", reason="the MinAtar suite needs bitcl[rl]")

from bitcl.rl.config import RLConfig  # noqa: E402
from bitcl.rl.loop import run_rl  # noqa: E402

TINY = dict(games=("breakout", "freeway"), envs=2, rollout=32, epochs=1, minibatches=2, eval_episodes=1,
            eval_max_steps=50, consolidation_states=64, threads=1, quiet=True)


def _run(out, **settings) -> dict:
    """``bitcl rl`` in this process (its Python twin ``run_rl``); results.json as written."""
    run_rl(RLConfig(**{**TINY, **settings}, out=str(out)))
    return json.loads((out / "results.json").read_text())


def _without_timing(results: dict) -> dict:
    """results.json less its timing and the settings a resumed run may change (RLConfig.RESUMABLE)."""
    results = dict(results)
    results.pop("timing")
    results["config"] = {k: v for k, v in results["config"].items() if k not in RLConfig.RESUMABLE}
    return results


def test_steps_are_rounded_to_whole_rollouts_and_both_counts_recorded(tmp_path):
    """--steps 100 with 2 x 32-step rollouts trains 128 steps a game: config.steps says what was asked,
    steps_trained what was trained, the curve ends there and the log says so."""
    results = _run(tmp_path / "r", steps=100, method="finetune", backbone="float")
    assert results["config"]["steps"] == 100
    assert results["steps_trained"] == [128, 128]
    assert [curve["steps"][-1] for curve in results["train_curves"]] == [128, 128]
    log = (tmp_path / "r" / "log.txt").read_text()
    assert "--steps 100 is not a whole number of rollouts" in log and "trains 128 steps" in log
    exact = _run(tmp_path / "exact", steps=128, method="finetune", backbone="float")
    assert "not a whole number" not in (tmp_path / "exact" / "log.txt").read_text()
    assert exact["steps_trained"] == [128, 128] and exact["return_matrix"] == results["return_matrix"]


def test_help_says_steps_are_rounded():
    from bitcl.rl.cli import rl_parser
    assert "rounded up to whole rollouts" in " ".join(rl_parser().format_help().split())


def test_progress_bar_return_is_a_dash_until_an_episode_ends():
    from bitcl.rl.loop import progress_return
    assert progress_return(None) == "\u2013"
    assert progress_return(1.234) == "1.23"


@pytest.mark.slow  # two processes: what differs between processes (hash order, threads) must not matter
def test_same_command_and_seed_give_bit_identical_results(tmp_path):
    """Determinism at one thread: two runs of the same command agree on every entry but timing."""
    from tests.conftest import run_cli
    flags = ["--games", "breakout,freeway", "--envs", "2", "--rollout", "32", "--epochs", "1", "--minibatches", "2",
             "--eval-episodes", "1", "--eval-max-steps", "50", "--consolidation-states", "64", "--threads", "1",
             "--steps", "128", "--method", "blip", "--quiet",
             "--fisher-prior", "1e-7"]  # small enough that a 128-step run freezes bits (the default, 1e-3, barely does)
    runs = []
    for name in ("a", "b"):
        done = run_cli("rl", *flags, "--out", tmp_path / name, timeout=240)
        assert done.returncode == 0, done.stderr
        runs.append(_without_timing(json.loads((tmp_path / name / "results.json").read_text())))
    assert runs[0] == runs[1]
    assert (tmp_path / "a" / "return_matrix.csv").read_text() == (tmp_path / "b" / "return_matrix.csv").read_text()
    assert runs[0]["capacity"][0] > 0   # BLIP froze bits: equal results are not two empty runs


def _legacy(progress: dict) -> dict:
    """The progress a bitcl rl checkpoint held before the runner was shared: the result's entries
    beside config, no task, no steps_trained."""
    result = {k: v for k, v in progress["result"].items() if k != "steps_trained"}
    return {"config": progress["config"], **result}


def test_a_checkpoint_in_the_older_rl_format_resumes(tmp_path):
    """Game 0's checkpoint rewritten in the older shape: --resume reads it, trains game 1 only and ends with
    the results of the uninterrupted run (steps_trained recovered from the training curves)."""
    out = tmp_path / "r"
    full = _run(out, steps=64, method="ewc")
    path = out / "checkpoints" / "task-0.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    meta["bitcl_progress"] = json.dumps(_legacy(json.loads(meta["bitcl_progress"])))
    del meta["bitcl_digests"]  # files of that age carry no digests (read with the value checks only)
    save_file(load_file(str(path)), str(path), metadata=meta)
    (out / "checkpoints" / "task-1.safetensors").unlink()
    (out / "results.json").unlink()
    resumed = _run(out, steps=64, method="ewc", resume=True)
    assert _without_timing(resumed) == _without_timing(full)
    with safe_open(str(out / "checkpoints" / "task-1.safetensors"), "pt") as f:
        progress = json.loads(f.metadata()["bitcl_progress"])
    assert list(progress) == ["task", "config", "result"] and progress["result"]["steps_trained"] == [64, 64]
