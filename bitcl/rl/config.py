"""RLConfig: every setting of a ``bitcl rl`` run, one typed field each.

Each field is a CLI flag (``gae_lambda`` -> ``--gae-lambda``) whose help shows its default,
and is recorded with its resolved value under ``config`` in results.json. PPO defaults
are those of the PPO paper's Atari setting scaled to MinAtar (8 environments, 128-step
rollouts, 4 epochs of 4 minibatches, lr 5e-4 annealed, clip 0.2, entropy 0.01).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bitcl.errors import ConfigError

from .agent import HEADS
from .envs import SUITES

DEVICES = ("cpu", "cuda")
EVAL_POLICIES = ("sample", "greedy")


def _f(default: Any, help: str, **meta) -> Any:
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class RLConfig:
    method: str = _f("blip", "continual-learning method (those of `bitcl list` marked rl)")
    suite: str = _f("minatar", "game suite", choices=SUITES)
    games: tuple = _f(("breakout", "space_invaders", "freeway"), "comma-separated games, in training order")
    steps: int = _f(150_000, "environment steps per game (all environments together), rounded up to whole "
                             "rollouts of envs x rollout steps; results.json records the trained count as "
                             "steps_trained")
    envs: int = _f(8, "parallel environments")
    seed: int = _f(0, "seed of the agent, environments and sampling")
    device: str = _f("cpu", "torch device", choices=DEVICES)
    threads: int = _f(1, "torch threads (1 is fastest for MinAtar-sized nets on a loaded CPU; "
                         "benchmarks/bench_rl.py)")
    backbone: str = _f("quant", "trunk layers: quant (Bit layers) or float", choices=("quant", "float"))
    bits: int = _f(20, "bits per quantised weight (2..24)")
    head: str = _f("per-game", "a policy and value head per game, or one shared over the union of actions",
                   choices=HEADS)
    rollout: int = _f(128, "steps per environment between updates")
    epochs: int = _f(4, "PPO epochs over each rollout")
    minibatches: int = _f(4, "minibatches per epoch")
    lr: float = _f(5e-4, "Adam learning rate (annealed linearly to 0 over each game)")
    anneal_lr: bool = _f(True, "anneal the learning rate over each game")
    discount: float = _f(0.99, "discount factor gamma (named so that EWC's --gamma keeps its meaning)")
    gae_lambda: float = _f(0.95, "GAE lambda")
    clip: float = _f(0.2, "PPO clip range")
    vf_coef: float = _f(0.5, "value loss coefficient")
    ent_coef: float = _f(0.01, "entropy bonus coefficient")
    max_grad_norm: float = _f(0.5, "gradient norm clipping")
    eval_episodes: int = _f(100, "evaluation episodes per game (fixed seeds); every return-matrix entry gets a "
                                 "95 per cent interval over them and games are tested against the random policy")
    reference: str = _f(None, "results.json of a `bitcl rl --single-task` run on the same games and budget: "
                              "normalise by its returns (Continual World); default: by each game's return at "
                              "the end of its own training")
    single_task: bool = _f(False, "reference run: a freshly initialised agent per game, same budget (use with "
                                  "--method finetune; its results.json is what --reference reads)")
    eval_seed: int = _f(10_000, "seed of the evaluation episodes (the same for every evaluation)")
    eval_policy: str = _f("sample", "evaluation actions: sampled from the policy, or its argmax",
                          choices=EVAL_POLICIES)
    eval_max_steps: int = _f(5_000, "longest evaluation episode, in agent steps")
    consolidation_states: int = _f(4096, "states of the last rollouts kept for the method's importance "
                                         "(Fisher) after each game")
    curve_points: int = _f(50, "points of each game's training-return curve in results.json")
    out: str = _f(None, "run directory (results.json, checkpoints/, log.txt)")
    overwrite: bool = _f(False, "replace the run already in --out")
    resume: bool = _f(False, "continue the run in --out from its last complete game")
    quiet: bool = _f(False, "no progress bars or per-game lines")
    method_options: dict = _f(None, "the method's options (flags of the method)")

    # settings that may differ between a run and its resumption
    RESUMABLE = ("out", "overwrite", "resume", "quiet", "device", "threads")

    def validate(self) -> None:
        if isinstance(self.games, str):
            self.games = tuple(g.strip() for g in self.games.split(",") if g.strip())
        self.games = tuple(self.games)
        if not self.games:
            raise ConfigError("--games must name at least one game")
        positive = ("steps", "envs", "threads", "rollout", "epochs", "minibatches", "eval_episodes",
                    "eval_max_steps", "consolidation_states", "curve_points")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not 2 <= self.bits <= 24:
            raise ConfigError(f"--bits must lie in 2..24, got {self.bits}")
        for name in ("lr", "clip", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("discount", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"--{name.replace('_', '-')} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("vf_coef", "ent_coef"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.minibatches > self.envs * self.rollout:
            raise ConfigError(f"--minibatches {self.minibatches} exceeds the rollout's "
                              f"{self.envs * self.rollout} samples")
        for name, choices in (("suite", SUITES), ("device", DEVICES), ("head", HEADS),
                              ("eval_policy", EVAL_POLICIES), ("backbone", ("quant", "float"))):
            if getattr(self, name) not in choices:
                raise ConfigError(f"--{name.replace('_', '-')} must be one of {', '.join(choices)}, "
                                  f"got {getattr(self, name)!r}")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite exclude each other")
        if self.single_task and self.method != "finetune":
            raise ConfigError("--single-task trains a fresh agent per game, so no continual method acts: "
                              f"use --method finetune (got {self.method!r})")
        if self.single_task and self.reference:
            raise ConfigError("--single-task makes a reference run; it cannot itself take --reference")
        if self.resume and not self.out:
            raise ConfigError("--resume needs --out")

    def fields(self) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(self) if f.name != "method_options"]

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in self.fields()}
        out["games"] = list(self.games)
        out["method_options"] = dict(self.method_options or {})
        return out
