"""The game-sequence loop: for each game, PPO with the method's hooks, consolidate, evaluate all games.

Continual RL as in BLIP's experiments (Shi et al., CVPR 2021, arXiv 2105.04444, Sec. 5.3):
one agent learns games one after another; after each game every game of the sequence is
evaluated (``return_matrix``), the method consolidates (EWC's Fisher, BLIP's frozen bits:
the Fisher of the policy over the last rollouts' states) and a checkpoint is written in
the format of docs/contracts/checkpoint.md, so ``--resume`` continues at the next game after a kill.
"""
from __future__ import annotations

import math
import time
from collections import deque
from typing import Optional

import torch

from bitcl import checkpoint as ckpt
from bitcl.errors import ConfigError
from bitcl.models.factory import LayerFactory
from bitcl.quant import bit_states
from bitcl.strategies import base as strategies
from bitcl.strategies.context import RunInfo, check_supported
from bitcl.train.results import bit_capacity
from bitcl.train.resume import resume_latest
from bitcl.train.rundir import RunDirectory

from .agent import Agent
from .config import RLConfig
from .context import RLTaskContext
from .envs import VectorGame, resolve_games
from .evaluate import episode_returns, mean_of
from .ppo import UpdateSettings, collect, update
from .results import RLResult, read_reference


def rl_methods() -> list[str]:
    """Methods offered by ``bitcl rl`` (``rl = True``)."""
    return [n for n in strategies.strategy_names() if strategies.get_strategy(n).rl]


def _strategy_class(config: RLConfig):
    cls = strategies.get_strategy(config.method)
    if not cls.rl:
        raise ConfigError(f"method {config.method!r} is not offered by `bitcl rl`; choose from "
                          f"{', '.join(rl_methods())}")
    check_supported(cls, RLTaskContext.provides, "bitcl rl")
    scenario = "task" if config.head == "per-game" else "domain"
    if scenario not in cls.scenarios:
        raise ConfigError(f"method {cls.name!r} does not support --head {config.head} "
                          f"(it supports the {', '.join(cls.scenarios)} scenario(s))")
    if cls.requires_quantized and config.backbone != "quant":
        raise ConfigError(f"method {cls.name!r} needs --backbone quant")
    return cls


def _seed(config: RLConfig, game: int, stream: int) -> int:
    """A seed per (run, game, stream): a resumed run replays exactly the games it did not finish."""
    return (config.seed * 1_000_003 + game * 1009 + stream) % (2 ** 31)


class RLRun:
    """One ``bitcl rl`` run (the Python twin of the command)."""

    def __init__(self, config: RLConfig):
        config.validate()
        self.config = config
        cls = _strategy_class(config)
        if config.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available")
        self.games = resolve_games(config.suite, config.games)
        self.rundir = RunDirectory(config.out, overwrite=config.overwrite, resume=config.resume)
        self.rundir.check()
        options = strategies.make_options(cls, config.method_options)
        config.method_options = strategies.resolved_options(options)
        torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.device = torch.device(config.device)
        self.agent = Agent(self.games, LayerFactory(config.backbone, config.bits), config.head).to(self.device)
        self.info = RunInfo(num_tasks=len(self.games), setting="rl", device=self.device)
        self.strategy = cls(options, self.agent, self.info)
        self.result = RLResult(config, [g.name for g in self.games],
                               params=sum(p.numel() for p in self.agent.parameters()))
        if config.reference:
            reference = read_reference(config.reference, config)
            self.result.reference_episodes = [reference[g.name] for g in self.games]
        self.first_game = 0

    # -- output -----------------------------------------------------------------------
    def log(self, line: str) -> None:
        self.rundir.log(line, quiet=self.config.quiet)

    def _resume(self) -> None:
        resumed = resume_latest(self.rundir, self.config.to_dict(), self.agent, self.strategy,
                                free=RLConfig.RESUMABLE)
        if resumed is None:
            return
        self.result.restore(resumed.progress)  # bitcl rl records its results beside the config
        done = resumed.task
        self.first_game = done + 1
        self.log(f"resuming after game {done + 1}/{len(self.games)} ({self.games[done].name}) from {resumed.path}")

    # -- one game -------------------------------------------------------------------------
    def train_game(self, t: int, ctx: RLTaskContext) -> tuple[float, int]:
        """PPO on game ``t`` for ``config.steps`` steps; returns (seconds, steps)."""
        c = self.config
        g = self.games[t]
        env = VectorGame(g, c.envs, _seed(c, t, 0))
        generator = torch.Generator().manual_seed(_seed(c, t, 1))
        updates = math.ceil(c.steps / (c.envs * c.rollout))
        params = [p for p in self.agent.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=c.lr, eps=1e-5)
        settings = UpdateSettings(c.epochs, c.minibatches, c.clip, c.vf_coef, c.ent_coef, c.max_grad_norm,
                                  c.discount, c.gae_lambda)
        recent: deque[float] = deque(maxlen=20)
        running = torch.zeros(c.envs)
        curve = {"steps": [], "returns": []}
        every = max(1, updates // c.curve_points)
        has_bits = any(True for _ in bit_states(self.agent))

        def project_and_after_step():
            if has_bits:
                ctx.project()  # every step: quantised weights back into their frozen-bit windows
            self.strategy.after_step(ctx)

        hooks = (self.strategy.penalty, lambda: self.strategy.after_backward(ctx), project_and_after_step)
        bar = None
        if not c.quiet:
            from tqdm import tqdm
            bar = tqdm(total=updates * c.envs * c.rollout, desc=f"game {t + 1}/{len(self.games)} {g.name}",
                       unit="step", unit_scale=True, leave=False)
        start = time.perf_counter()
        try:
            self.agent.train()
            for u in range(updates):
                if c.anneal_lr:
                    for group in optimizer.param_groups:
                        group["lr"] = c.lr * (1.0 - u / updates)
                rollout = collect(self.agent, t, env, c.rollout, c.discount, generator, recent.append, running)
                ctx.remember(rollout.obs.flatten(0, 1), rollout.actions.flatten(), c.consolidation_states)
                update(self.agent, t, rollout, optimizer, settings, generator, hooks)
                mean = sum(recent) / len(recent) if recent else float("nan")
                if (u + 1) % every == 0 or u == updates - 1:
                    curve["steps"].append((u + 1) * c.envs * c.rollout)
                    curve["returns"].append(None if math.isnan(mean) else mean)
                if bar is not None:
                    bar.update(c.envs * c.rollout)
                    bar.set_postfix(ret=f"{mean:.2f}")
        finally:
            if bar is not None:
                bar.close()
            env.close()
        self.result.train_curves.append(curve)
        return time.perf_counter() - start, updates * c.envs * c.rollout

    def capacity(self) -> Optional[float]:
        """Fraction of the agent's quantised bits that are frozen; None without Bit layers."""
        found = bit_capacity(self.agent)
        return None if found is None else found[0]

    def evaluate(self, t: int) -> list[list[float]]:
        """Every game's evaluation episodes (returns) with the agent as it is after game ``t``."""
        c = self.config
        return [episode_returns(g, c.eval_episodes, c.eval_seed, c.eval_max_steps, self.agent, j, c.eval_policy)
                for j, g in enumerate(self.games)]

    def fresh_agent(self, t: int) -> None:
        """``--single-task``: a newly initialised agent (and method) for game ``t`` > 0, seeded per game;
        game 0 keeps the agent the run started with, as a continual run's first game does."""
        torch.manual_seed(_seed(self.config, t, 2))
        cls = type(self.strategy)
        self.agent = Agent(self.games, LayerFactory(self.config.backbone, self.config.bits),
                           self.config.head).to(self.device)
        self.strategy = cls(self.strategy.options, self.agent, self.info)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> RLResult:
        c = self.config
        self.rundir.open()
        try:
            if c.resume:
                self._resume()
            if not self.result.random_episodes:
                self.result.random_episodes = [episode_returns(g, c.eval_episodes, c.eval_seed, c.eval_max_steps)
                                               for g in self.games]
            timing = self.result.timing
            for t in range(self.first_game, len(self.games)):
                if c.single_task and t > 0:
                    self.fresh_agent(t)
                ctx = RLTaskContext(self.agent, t, self.info, c.seed)
                self.strategy.before_task(ctx)
                seconds, steps = self.train_game(t, ctx)
                timing["train_seconds"].append(seconds)
                timing["steps_per_second"].append(steps / max(seconds, 1e-9))
                self.result.steps_trained.append(steps)
                start = time.perf_counter()
                self.strategy.end_task(ctx)
                timing["consolidate_seconds"].append(time.perf_counter() - start)
                start = time.perf_counter()
                episodes = self.evaluate(t)
                timing["eval_seconds"].append(time.perf_counter() - start)
                row = [mean_of(e) for e in episodes]
                self.result.episode_returns.append(episodes)
                self.result.return_matrix.append(row)
                cap = self.capacity()
                if cap is not None:
                    self.result.capacity.append(cap)
                self.result.state_bytes.append(self.strategy.state_bytes())
                self.result.extra.update(self.strategy.run_results())
                for key, value in self.strategy.task_results().items():
                    self.result.extra.setdefault(key, []).append(value)
                self.rundir.save_checkpoint(t, self.agent, self.strategy.state_tensors(), self.result.progress())
                self.log(f"game {t + 1}/{len(self.games)} {self.games[t].name}: return {row[t]:.2f} "
                         f"(random {self.result.random_returns[t]:.2f}), mean over seen "
                         f"{sum(row[:t + 1]) / (t + 1):.2f}, {timing['steps_per_second'][-1]:.0f} steps/s, "
                         f"consolidate {timing['consolidate_seconds'][-1]:.2f}s"
                         + (f", capacity {cap:.3f}" if cap is not None else ""))
            self._write_results()
        finally:
            self.rundir.close()
        return self.result

    def _write_results(self) -> None:
        """results.json (the contract) and return_matrix.csv."""
        if self.rundir.path is None:
            return
        import json
        ckpt.atomic_write_text(self.rundir.path / "results.json", json.dumps(self.result.to_json(), indent=2))
        rows = [",".join(self.result.games)]
        rows += [",".join(f"{r:.6f}" for r in row) for row in self.result.return_matrix]
        ckpt.atomic_write_text(self.rundir.path / "return_matrix.csv", "\n".join(rows) + "\n")


def run_rl(config: RLConfig) -> RLResult:
    """Train one agent on ``config.games`` in turn (the Python twin of ``bitcl rl``)."""
    return RLRun(config).run()
