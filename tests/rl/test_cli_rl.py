"""`bitcl rl` end to end, as a user runs it: results.json contract, checkpoints, resume, bad input."""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.conftest import cli, run_cli

pytest.importorskip("minatar", reason="the MinAtar suite needs bitcl[rl]")

QUICK = ["--games", "breakout,freeway", "--steps", "512", "--envs", "4", "--rollout", "64", "--epochs", "2",
         "--eval-episodes", "2", "--eval-max-steps", "150", "--consolidation-states", "256", "--quiet"]


def _run(tmp_path, name, *extra):
    out = tmp_path / name
    done = cli("rl", *QUICK, "--out", out, *extra)
    assert done.returncode == 0, done.stderr
    return out, json.loads((out / "results.json").read_text())


def _quantised(path):
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["bitcl"])
    return tensors, meta


def _check_contract(r, method):
    games = ["breakout", "freeway"]
    assert r["method"] == method and r["games"] == games and r["seed"] == 0
    assert len(r["return_matrix"]) == 2 and all(len(row) == 2 for row in r["return_matrix"])
    assert len(r["random_returns"]) == 2
    norm, rand, ret = r["normalised_matrix"], r["random_returns"], r["return_matrix"]
    for i in range(2):
        for j in range(2):
            if r["games"][j] in r["learned_games"]:
                assert norm[i][j] == pytest.approx((ret[i][j] - rand[j]) / (ret[j][j] - rand[j]))
            else:
                assert norm[i][j] is None and r["games"][j] in r["unlearned_games"]
    # every entry: its episodes (--eval-episodes of them) and their 95 % t interval
    assert [[len(e) for e in row] for row in r["episode_returns"]] == [[2, 2], [2, 2]]
    assert r["return_intervals"][1][0]["n"] == 2 and r["return_intervals"][1][0]["interval"] == "t"
    assert r["normalisation"]["reference"] == "own-training"
    assert r["steps_trained"] == [512, 512] and r["steps_requested"] == 512
    assert set(r["timing"]) >= {"train_seconds", "steps_per_second", "consolidate_seconds", "eval_seconds"}
    assert len(r["timing"]["steps_per_second"]) == 2 and min(r["timing"]["steps_per_second"]) > 0
    assert len(r["memory"]["state_bytes"]) == 2
    config = r["config"]   # every resolved setting, method options with their defaults
    assert config["steps"] == 512 and config["lr"] == 5e-4 and config["gae_lambda"] == 0.95
    assert isinstance(config["method_options"], dict)
    assert r["bitcl_version"]


@pytest.mark.slow
def test_blip_run_keeps_frozen_bits_across_checkpoints(tmp_path):
    """BLIP: contract keys, constant state bytes, and no frozen bit of game 0 changes during game 1."""
    out, r = _run(tmp_path, "blip", "--method", "blip", "--fisher-prior", "1e-6")
    _check_contract(r, "blip")
    assert r["config"]["method_options"]["fisher_prior"] == 1e-6
    assert r["config"]["method_options"]["batch"] == 500        # a default, resolved
    assert r["memory"]["state_bytes"][0] == r["memory"]["state_bytes"][1] > 0
    assert 0 < r["capacity"][0] <= r["capacity"][1] <= 1
    first, meta = _quantised(out / "checkpoints" / "task-0.safetensors")
    second, _ = _quantised(out / "checkpoints" / "task-1.safetensors")
    assert meta, "the trunk is quantised"
    for name, info in meta.items():
        bits = info["bits"]
        k0, k1 = first[f"{name}.frozen"].long(), second[f"{name}.frozen"].long()
        u0 = first[f"{name}.codes"].long() + (1 << (bits - 1))
        u1 = second[f"{name}.codes"].long() + (1 << (bits - 1))
        assert bool((k1 >= k0).all())
        assert torch.equal(u0 >> (bits - k0), u1 >> (bits - k0)), name


@pytest.mark.slow
def test_finetune_run_and_resume_reproduce_the_same_results(tmp_path):
    """A run resumed after its first game ends with the same return matrix as an uninterrupted one."""
    out, full = _run(tmp_path, "ft", "--method", "finetune")
    _check_contract(full, "finetune")
    (out / "checkpoints" / "task-1.safetensors").unlink()         # as if killed during game 2
    (out / "results.json").unlink()
    done = cli("rl", *QUICK, "--method", "finetune", "--out", out, "--resume")
    assert done.returncode == 0, done.stderr
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["return_matrix"] == full["return_matrix"]
    assert resumed["random_returns"] == full["random_returns"]
    bad = cli("rl", *QUICK, "--method", "finetune", "--out", out, "--resume", "--lr", "1e-3")
    assert bad.returncode == 2 and "other settings (lr)" in bad.stderr


@pytest.mark.slow  # three RL runs and a new interpreter
def test_single_task_reference_normalises_a_continual_run(tmp_path):
    """`--single-task` trains a fresh agent per game; `--reference` normalises by its diagonal
    (Continual World) and records it; a reference of another budget is refused in one line."""
    ref_out, ref = _run(tmp_path, "ref", "--method", "finetune", "--single-task")
    assert ref["single_task"] is True
    first = load_file(str(ref_out / "checkpoints" / "task-0.safetensors"))
    second = load_file(str(ref_out / "checkpoints" / "task-1.safetensors"))
    # game 1's agent started afresh: its game-0 policy head is not game 0's trained one
    assert not torch.equal(first["policies.0.weight"], second["policies.0.weight"])
    _, r = _run(tmp_path, "cont", "--method", "finetune", "--reference", ref_out / "results.json")
    assert r["normalisation"]["reference"] == "single-task"
    assert r["reference_returns"] == [ref["return_matrix"][0][0], ref["return_matrix"][1][1]]
    for j, game in enumerate(r["games"]):
        if game in r["learned_games"]:
            denom = r["reference_returns"][j] - r["random_returns"][j]
            assert r["normalised_matrix"][1][j] == pytest.approx((r["return_matrix"][1][j] - r["random_returns"][j]) / denom)
    bad = run_cli("rl", *QUICK[:-1], "--steps", "1024", "--quiet", "--out", tmp_path / "bad", "--method", "finetune",
                  "--reference", ref_out / "results.json")
    assert bad.returncode == 2 and "the reference differs in steps 512 (this run 1024)" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_ft_fix_trains_only_the_new_heads_after_the_first_game(tmp_path):
    """ft-fix: the trunk after game 1 equals the trunk after game 0; game 1's head did learn."""
    out, r = _run(tmp_path, "ftfix", "--method", "ft-fix", "--backbone", "float")
    _check_contract(r, "ft-fix")
    first = load_file(str(out / "checkpoints" / "task-0.safetensors"))
    second = load_file(str(out / "checkpoints" / "task-1.safetensors"))
    trunk = [k for k in first if k.startswith("trunk.")]
    assert trunk and all(torch.equal(first[k], second[k]) for k in trunk)
    assert not torch.equal(first["policies.1.weight"], second["policies.1.weight"])


def test_ewc_online_run(tmp_path):
    """EWC (online): contract keys; its Fisher and anchor are saved in every checkpoint."""
    out, r = _run(tmp_path, "ewc", "--method", "ewc", "--mode", "online", "--c", "100")
    _check_contract(r, "ewc")
    assert r["config"]["method_options"]["mode"] == "online"
    saved = load_file(str(out / "checkpoints" / "task-1.safetensors"))
    omega = [k for k in saved if k.startswith("strategy/omega/")]
    assert omega and all(k.split("/", 2)[2].startswith("trunk.") for k in omega)
    assert r["memory"]["state_bytes"][0] == r["memory"]["state_bytes"][1]


@pytest.mark.parametrize("args,message", [
    (["--games", "breakout,pong"], "unknown minatar game 'pong'"),
    (["--steps", "0"], "--steps must be >= 1, got 0"),
    (["--method", "nope"], "unknown method"),
    (["--method", "si"], "not offered by `bitcl rl`"),
    (["--method", "blip", "--backbone", "float"], "needs --backbone quant"),
    (["--method", "ft-fix", "--head", "shared"], "does not support --head shared"),
    (["--suite", "nes"], "invalid choice"),
    (["--method", "blip", "--single-task"], "use --method finetune"),
    (["--method", "finetune", "--reference", "no/such.json"], "--reference no/such.json: no such file"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, capsys):
    """Bad input: one line on stderr naming the problem, exit status 2, nothing written (in-process CLI)."""
    from bitcl.cli import main
    assert main(["rl", "--quiet", "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_bad_input_from_the_shell():
    """The installed command exits 2 with one line for a game that does not exist."""
    done = run_cli("rl", "--games", "breakout,pong", "--quiet")
    assert done.returncode == 2 and done.stderr.strip() == (
        "bitcl rl: error: unknown minatar game 'pong'; choose from breakout, space_invaders, freeway, asterix, seaquest")


def test_help_shows_every_setting_with_its_default():
    """`bitcl rl --help` lists every RLConfig field and the method's options, each with its default."""
    from bitcl.rl.config import RLConfig
    done = cli("rl", "--method", "blip", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for f in RLConfig().fields():
        assert "--" + f.name.replace("_", "-") in text, f.name
    assert "(default: 150000)" in text and "--fisher-prior" in text and "(default: breakout,space_invaders,freeway)" in text


@pytest.mark.slow
def test_atari_smoke_runs_a_few_hundred_steps(tmp_path):
    """The Atari path (ALE, standard preprocessing, Nature CNN) trains and evaluates on CPU."""
    pytest.importorskip("ale_py", reason="the Atari suite needs bitcl[atari]")
    out = tmp_path / "atari"
    done = run_cli("rl", "--suite", "atari", "--games", "pong", "--method", "blip", "--steps", "256",
                   "--envs", "2", "--rollout", "64", "--epochs", "1", "--minibatches", "2", "--eval-episodes", "1",
                   "--eval-max-steps", "100", "--consolidation-states", "64", "--quiet", "--out", out,
                   "--fisher-prior", "1e-7", timeout=240)  # a prior under which 256 steps freeze bits
    assert done.returncode == 0, done.stderr
    r = json.loads((out / "results.json").read_text())
    assert r["games"] == ["pong"] and r["suite"] == "atari" and r["capacity"][0] > 0
