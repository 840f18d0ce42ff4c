"""Plain float PPO in bitcl against stable-baselines3's PPO, same network, steps and hyper-parameters.

Issue 16 asks that bitcl's PPO (written for the bit-level hooks, ``bitcl/rl/ppo.py``) learn
each MinAtar game as well as a reference PPO, within noise. Side by side in one script
(``--jobs`` worker processes, runs interleaved), for each game and seed: bitcl ``finetune`` with a float trunk on that one game, and SB3 PPO
whose features extractor is the same float trunk (MinAtar CNN, orthogonal init) with linear
policy and value heads (``net_arch=[]``), the same 8 environments (bitcl's MinAtar wrapper),
128-step rollouts, 4 epochs of 4 minibatches (256), Adam lr 5e-4 annealed linearly to 0,
eps 1e-5, clip 0.2, entropy 0.01, value 0.5, grad norm 0.5, γ 0.99, λ 0.95, per-minibatch
advantage normalisation. Both are evaluated by the same function (``bitcl.rl.evaluate``:
the same seeded episodes, actions sampled from the policy). Ratios bitcl / SB3 are printed;
"within noise": the difference of the means is compared with the seeds' standard error.

    python benchmarks/bench_rl_vs_sb3.py [--steps 100000] [--seeds 0,1] [--jobs 2]   -> rl_vs_sb3.json
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _env import write_result  # noqa: E402

GAMES = ("breakout", "space_invaders", "freeway")


def bitcl_run(game: str, steps: int, seed: int) -> tuple[float, float]:
    from bitcl.rl.config import RLConfig
    from bitcl.rl.loop import RLRun
    config = RLConfig(method="finetune", games=(game,), steps=steps, seed=seed, backbone="float", quiet=True)
    run = RLRun(config)
    result = run.run()
    return result.return_matrix[0][0], result.timing["steps_per_second"][0]


class _SB3Agent(nn.Module):
    """What ``bitcl.rl.evaluate.mean_return`` needs of an agent, around an SB3 policy."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy

    def policy_logits(self, obs: torch.Tensor, game: int) -> torch.Tensor:
        return self.policy.get_distribution(obs.float()).distribution.logits


def sb3_run(game: str, steps: int, seed: int) -> tuple[float, float]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from bitcl.models.factory import LayerFactory
    from bitcl.rl.agent import minatar_trunk
    from bitcl.rl.envs import make_env_fn, resolve_games

    g = resolve_games("minatar", [game])[0]

    class Trunk(BaseFeaturesExtractor):  # bitcl's float MinAtar trunk, unchanged
        def __init__(self, space):
            super().__init__(space, 128)
            self.net = minatar_trunk(LayerFactory("float"), space.shape[0])

        def forward(self, obs):
            return self.net(obs)

    env = DummyVecEnv([make_env_fn(g, train=True) for _ in range(8)])
    env.seed(seed)
    model = PPO("MlpPolicy", env, n_steps=128, batch_size=256, n_epochs=4, learning_rate=lambda f: 5e-4 * f,
                gamma=0.99, gae_lambda=0.95, clip_range=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5,
                policy_kwargs={"features_extractor_class": Trunk, "net_arch": [], "normalize_images": False},
                seed=seed, device="cpu", verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - start
    from bitcl.rl.config import RLConfig
    from bitcl.rl.evaluate import mean_return
    c = RLConfig()
    ret = mean_return(g, c.eval_episodes, c.eval_seed, c.eval_max_steps, _SB3Agent(model.policy), 0, c.eval_policy)
    env.close()
    return ret, model.num_timesteps / seconds


def _unit(job: tuple[str, str, int, int]) -> tuple[str, str, int, float, float]:
    impl, game, seed, steps = job
    torch.set_num_threads(1)
    ret, sps = (bitcl_run if impl == "bitcl" else sb3_run)(game, steps, seed)
    print(f"{game} seed {seed} {impl}: return {ret:.2f} ({sps:.0f} steps/s)", flush=True)
    return impl, game, seed, ret, sps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--games", default=",".join(GAMES))
    p.add_argument("--jobs", type=int, default=2, help="worker processes (each bitcl and SB3 run is one job)")
    args = p.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    games = args.games.split(",")
    from multiprocessing import get_context

    from bitcl.rl.config import RLConfig
    from bitcl.rl.envs import resolve_games
    from bitcl.rl.evaluate import mean_return
    c = RLConfig()
    # bitcl and SB3 interleaved, so machine load hits both alike
    jobs = [(impl, game, seed, args.steps) for game in games for seed in seeds for impl in ("bitcl", "sb3")]
    with get_context("spawn").Pool(args.jobs) as pool:
        done = pool.map(_unit, jobs, chunksize=1)
    out = {"benchmark": "rl_vs_sb3", "steps": args.steps, "seeds": seeds, "games": {}}
    for game in games:
        g = resolve_games("minatar", [game])[0]
        rows = {k: [r[3] if k in ("bitcl", "sb3") else r[4] for r in done if r[0] == k.split("_")[0] and r[1] == game]
                for k in ("bitcl", "sb3", "bitcl_sps", "sb3_sps")}
        random = mean_return(g, c.eval_episodes, c.eval_seed, c.eval_max_steps)
        mb, ms = statistics.fmean(rows["bitcl"]), statistics.fmean(rows["sb3"])
        se = (math.sqrt(sum(statistics.variance(rows[k]) / len(seeds) for k in ("bitcl", "sb3")))
              if len(seeds) > 1 else 0.0)
        out["games"][game] = {**rows, "random": random, "bitcl_mean": mb, "sb3_mean": ms,
                              "ratio_bitcl_over_sb3": mb / ms if ms else None,
                              "difference": mb - ms, "standard_error_of_difference": se,
                              "within_two_standard_errors": abs(mb - ms) <= 2 * se,
                              "speed_ratio_bitcl_over_sb3": statistics.fmean(rows["bitcl_sps"]) / statistics.fmean(rows["sb3_sps"])}
        ratio = out["games"][game]["ratio_bitcl_over_sb3"]
        print(f"{game}: bitcl {mb:.2f} vs sb3 {ms:.2f} (random {random:.2f}), ratio "
              f"{'-' if ratio is None else f'{ratio:.2f}'}, difference {mb - ms:+.2f} ± {se:.2f} (1 s.e.)", flush=True)
    write_result("rl_vs_sb3", out, indent=1)


if __name__ == "__main__":
    main()
