"""RLConfig: every setting of a ``bitcl rl`` run, one typed field each.

Each field is a CLI flag (``gae_lambda`` -> ``--gae-lambda``) whose help shows its default,
and is recorded with its resolved value under ``config`` in results.json. PPO defaults
are those of the PPO paper's Atari setting scaled to MinAtar (8 environments, 128-step
rollouts, 4 epochs of 4 minibatches, lr 5e-4 annealed, clip 0.2, entropy 0.01).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from bitcl.constants import LAYER_KINDS, MAX_BITS, MIN_BITS
from bitcl.errors import ConfigError
from bitcl.settings import setting, validate

from .agent import HEADS
from .envs import SUITES

DEVICES = ("cpu", "cuda")
EVAL_POLICIES = ("sample", "greedy")

# `bitcl rl`'s own defaults for method options whose general default (chosen on images) does not
# carry over to policies: the per-sample policy Fisher has another scale. Chosen by
# `python benchmarks/bench_rl.py tune` (validation seeds 100 and 101, games reversed: benchmarks/results/rl_tuning.json)
# and used by the MinAtar figure (rl_sequence.json); tests/rl/test_rl_defaults.py pins them to that file.
METHOD_DEFAULTS: dict[str, dict] = {
    "blip": {"fisher_prior": 1e-3},
    "ewc": {"mode": "online", "c": 1.0},
}


def method_defaults(method: str) -> dict:
    """The option defaults ``bitcl rl`` uses for ``method`` where they differ from the method's own."""
    return dict(METHOD_DEFAULTS.get(method, {}))


@dataclass
class RLConfig:
    method: str = setting("blip", "continual-learning method (those of `bitcl list` marked rl)")
    suite: str = setting("minatar", "game suite", choices=SUITES)
    games: tuple[str, ...] = setting(("breakout", "space_invaders", "freeway"),
                                     "comma-separated games, in training order", nonempty=True, metavar="G1,G2,...")
    steps: int = setting(150_000, "environment steps per game (all environments together), rounded up to whole "
                                  "rollouts of envs x rollout steps; results.json records the trained count as "
                                  "steps_trained", low=1)
    envs: int = setting(8, "parallel environments", low=1)
    seed: int = setting(0, "seed of the agent, environments and sampling", low=0)
    device: str = setting("cpu", "torch device", choices=DEVICES)
    threads: int = setting(1, "torch threads (1 is fastest for MinAtar-sized nets on a loaded CPU; "
                              "benchmarks/bench_rl.py)", low=1)
    backbone: str = setting("quant", "trunk layers: quant (Bit layers) or float", choices=LAYER_KINDS)
    bits: int = setting(20, "bits per quantised weight", low=MIN_BITS, high=MAX_BITS)
    head: str = setting("per-game", "a policy and value head per game, or one shared over the union of actions",
                        choices=HEADS)
    rollout: int = setting(128, "steps per environment between updates", low=1)
    epochs: int = setting(4, "PPO epochs over each rollout", low=1)
    minibatches: int = setting(4, "minibatches per epoch", low=1)
    lr: float = setting(5e-4, "Adam learning rate (annealed linearly to 0 over each game)", above=0.0)
    anneal_lr: bool = setting(True, "anneal the learning rate over each game")
    discount: float = setting(0.99, "discount factor gamma (named so that EWC's --gamma keeps its meaning)",
                              low=0.0, high=1.0)
    gae_lambda: float = setting(0.95, "GAE lambda", low=0.0, high=1.0)
    clip: float = setting(0.2, "PPO clip range", above=0.0)
    vf_coef: float = setting(0.5, "value loss coefficient", low=0.0)
    ent_coef: float = setting(0.01, "entropy bonus coefficient", low=0.0)
    max_grad_norm: float = setting(0.5, "gradient norm clipping", above=0.0)
    eval_episodes: int = setting(100, "evaluation episodes per game (fixed seeds); every return-matrix entry gets a "
                                      "95 per cent interval over them and games are tested against the random "
                                      "policy", low=1)
    reference: Optional[str] = setting(None, "results.json of a `bitcl rl --single-task` run on the same games and "
                                             "budget: normalise by its returns (Continual World); default: by each "
                                             "game's return at the end of its own training")
    single_task: bool = setting(False, "reference run: a freshly initialised agent per game, same budget (use with "
                                       "--method finetune; its results.json is what --reference reads)")
    eval_seed: int = setting(10_000, "seed of the evaluation episodes (the same for every evaluation)", low=0)
    eval_policy: str = setting("sample", "evaluation actions: sampled from the policy, or its argmax",
                               choices=EVAL_POLICIES)
    eval_max_steps: int = setting(5_000, "longest evaluation episode, in agent steps", low=1)
    consolidation_states: int = setting(4096, "states of the last rollouts kept for the method's importance "
                                              "(Fisher) after each game", low=1)
    curve_points: int = setting(50, "points of each game's training-return curve in results.json", low=1)
    out: Optional[str] = setting(None, "run directory (results.json, checkpoints/, log.txt)")
    overwrite: bool = setting(False, "replace the run already in --out")
    resume: bool = setting(False, "continue the run in --out from its last complete game")
    quiet: bool = setting(False, "no progress bars or per-game lines")
    method_options: Optional[dict] = setting(None, "the method's options (flags of the method)", flag=False)

    # settings that may differ between a run and its resumption
    RESUMABLE = ("out", "overwrite", "resume", "quiet", "device", "threads")

    def validate(self) -> None:
        """Every field against its schema (:func:`bitcl.settings.validate`), then the relations."""
        if isinstance(self.games, str):
            self.games = tuple(g.strip() for g in self.games.split(",") if g.strip())
        if isinstance(self.games, (list, tuple)) and not self.games:
            raise ConfigError("--games must name at least one game")
        validate(self)
        if self.minibatches > self.envs * self.rollout:
            raise ConfigError(f"--minibatches {self.minibatches} exceeds the rollout's "
                              f"{self.envs * self.rollout} samples")
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
