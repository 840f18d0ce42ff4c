"""The game-sequence loop: for each game, PPO with the method's hooks, consolidate, evaluate all games.

Continual RL as in BLIP's experiments (Shi et al., CVPR 2021, arXiv 2105.04444, Sec. 5.3):
one agent learns games one after another; after each game every game of the sequence is
evaluated (``return_matrix``), the method consolidates (EWC's Fisher, BLIP's frozen bits:
the Fisher of the policy over the last rollouts' states) and a checkpoint is written in the
format of docs/contracts/checkpoint.md, so ``--resume`` continues at the next game after a kill. That sequence is
:class:`~bitcl.train.runner.ContinualRun`'s, as for ``bitcl run`` and ``bitcl.fit``; every
PPO minibatch update is a :class:`~bitcl.train.step.StepRunner` step with gradient clipping.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Optional

import torch

from bitcl.errors import ConfigError
from bitcl.models.factory import LayerFactory
from bitcl.quant import bit_states, project_latents_
from bitcl.strategies import base as strategies
from bitcl.strategies.context import RunInfo, check_supported
from bitcl.train.results import bit_capacity
from bitcl.train.rundir import RunDirectory
from bitcl.train.runner import ContinualRun
from bitcl.train.seeds import rl_generator, rl_stream_seed
from bitcl.train.step import StepRunner

from .agent import Agent
from .config import RLConfig, method_defaults
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


class RLRun:
    """One ``bitcl rl`` run (the Python twin of the command): the task loop
    (``bitcl.train.runner.TaskLoop``) of PPO over a sequence of games, run by
    :class:`~bitcl.train.runner.ContinualRun`, which owns resume, the before-game / train /
    end-of-game sequence, evaluation, checkpoints and results.json, as for every driver."""

    def __init__(self, config: RLConfig):
        config.validate()
        self.config = config
        cls = _strategy_class(config)
        if config.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available")
        self.games = resolve_games(config.suite, config.games)
        self.rundir = RunDirectory(config.out, overwrite=config.overwrite, resume=config.resume)
        self.rundir.check()
        options = strategies.make_options(cls, {**method_defaults(config.method), **(config.method_options or {})})
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
        self.bit_states = [state for _, state in bit_states(self.agent)]
        self.hook_seconds = 0.0
        self.runner = ContinualRun(self, self.strategy, self.agent, len(self.games), self.result, self.rundir,
                                   config.to_dict(), quiet=config.quiet, resume=config.resume,
                                   free=RLConfig.RESUMABLE)

    # -- the task loop ---------------------------------------------------------------------
    def task_context(self, t: int) -> RLTaskContext:
        if self.config.single_task and t > 0:
            self.fresh_agent(t)
        return RLTaskContext(self.agent, t, self.info, self.config.seed)

    def fresh_agent(self, t: int) -> None:
        """``--single-task``: the agent re-initialised in place (seeded per game) before game ``t`` > 0;
        game 0 keeps the agent the run started with, as a continual run's first game does. Only
        ``finetune`` may run this way (RLConfig.validate), so no method state needs resetting."""
        torch.manual_seed(rl_stream_seed(self.config.seed, t, 2))
        fresh = Agent(self.games, LayerFactory(self.config.backbone, self.config.bits), self.config.head)
        self.agent.load_state_dict(fresh.state_dict())

    def after_consolidation(self, t: int) -> None:
        """Nothing to check: one process."""

    def project(self) -> None:
        """Keep every quantised weight inside the window its frozen bits allow (codes refreshed when read)."""
        project_latents_(self.bit_states)

    def steps_per_game(self) -> int:
        """The environment steps each game trains: ``--steps`` rounded up to whole rollouts."""
        c = self.config
        return math.ceil(c.steps / (c.envs * c.rollout)) * c.envs * c.rollout

    def train(self, t: int, ctx: RLTaskContext) -> int:
        """PPO on game ``t`` for :meth:`steps_per_game` steps (whole rollouts); returns those steps."""
        c = self.config
        g = self.games[t]
        env = VectorGame(g, c.envs, rl_stream_seed(c.seed, t, 0))
        generator = rl_generator(c.seed, t, 1)
        updates = self.steps_per_game() // (c.envs * c.rollout)
        params = [p for p in self.agent.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=c.lr, eps=1e-5)
        settings = UpdateSettings(c.epochs, c.minibatches, c.clip, c.vf_coef, c.ent_coef, c.max_grad_norm,
                                  c.discount, c.gae_lambda)
        step_once = StepRunner(self.strategy, ctx, optimizer, None, self.project,
                               hint="lower --lr or the method's strength", max_grad_norm=c.max_grad_norm)
        steps_taken = 0

        def step(loss: torch.Tensor, epoch: int, minibatch: int) -> float:
            nonlocal steps_taken
            steps_taken += 1
            return step_once(loss, self.strategy.penalty(), t, epoch, steps_taken - 1)

        recent: deque[float] = deque(maxlen=20)
        running = torch.zeros(c.envs)
        curve = {"steps": [], "returns": []}
        every = max(1, updates // c.curve_points)
        bar = None
        if not c.quiet:
            from tqdm import tqdm
            bar = tqdm(total=updates * c.envs * c.rollout, desc=f"game {t + 1}/{len(self.games)} {g.name}",
                       unit="step", unit_scale=True, leave=False)
        try:
            self.agent.train()
            for u in range(updates):
                if c.anneal_lr:
                    for group in optimizer.param_groups:
                        group["lr"] = c.lr * (1.0 - u / updates)
                rollout = collect(self.agent, t, env, c.rollout, c.discount, generator, recent.append, running)
                ctx.remember(rollout.obs.flatten(0, 1), rollout.actions.flatten(), c.consolidation_states)
                update(self.agent, t, rollout, settings, generator, step)
                mean = sum(recent) / len(recent) if recent else None  # None: no episode has ended yet
                if (u + 1) % every == 0 or u == updates - 1:
                    curve["steps"].append((u + 1) * c.envs * c.rollout)
                    curve["returns"].append(mean)
                if bar is not None:
                    bar.update(c.envs * c.rollout)
                    bar.set_postfix(ret=progress_return(mean))
        finally:
            if bar is not None:
                bar.close()
            env.close()
        self.hook_seconds += step_once.hook_seconds
        self.result.train_curves.append(curve)
        return updates * c.envs * c.rollout

    def evaluate_all(self) -> list[float]:
        """Every game's mean return; the episodes behind each mean go to ``result.episode_returns``."""
        c = self.config
        episodes = [episode_returns(g, c.eval_episodes, c.eval_seed, c.eval_max_steps, self.agent, j, c.eval_policy)
                    for j, g in enumerate(self.games)]
        self.result.episode_returns.append(episodes)
        return [mean_of(e) for e in episodes]

    def capacity(self) -> Optional[float]:
        """Fraction of the agent's quantised bits that are frozen; None without Bit layers."""
        found = bit_capacity(self.agent)
        return None if found is None else found[0]

    # -- the run ---------------------------------------------------------------------------
    def _random_returns(self) -> None:
        """The random policy's mean return on every game (once; a resumed run has them)."""
        c = self.config
        if not self.result.random_episodes:
            self.result.random_episodes = [episode_returns(g, c.eval_episodes, c.eval_seed, c.eval_max_steps)
                                           for g in self.games]
        trained = self.steps_per_game()
        if trained != c.steps:
            self.rundir.log(f"--steps {c.steps:,} is not a whole number of rollouts ({c.envs} environments x "
                            f"{c.rollout} steps): each game trains {trained:,} steps (results.json: "
                            "steps_trained)", c.quiet)

    def run(self) -> RLResult:
        return self.runner.run(before=self._random_returns)


def progress_return(mean: Optional[float]) -> str:
    """The progress bar's mean return of the last episodes: ``–`` until an episode has ended."""
    return "\u2013" if mean is None else f"{mean:.2f}"


def run_rl(config: RLConfig) -> RLResult:
    """Train one agent on ``config.games`` in turn (the Python twin of ``bitcl rl``)."""
    return RLRun(config).run()
