"""RLTaskContext: what a strategy sees of one game (see ``bitcl.strategies.context``).

``logits(x)`` are the current game's policy logits, so a Fisher over them is the Fisher of
the policy's log-probabilities (EWC's and BLIP's RL measure). ``importance_batches``
serves the states of the game's last rollouts with the actions taken there (the
"empirical" labels) and one uniform number per state from a seeded generator (labels
sampled from the policy for the true Fisher). No optional service is provided: methods
that need replay, retraining or independent minibatches are refused before training.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from bitcl.strategies.context import RunInfo, TaskContext
from bitcl.train.seeds import rl_generator


class RLTaskContext(TaskContext):
    provides: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, agent, game_index: int, info: RunInfo, seed: int):
        super().__init__(agent, game_index, info)
        self.seed = seed
        self.states = torch.empty(0)
        self.actions = torch.empty(0, dtype=torch.int64)

    def remember(self, states: torch.Tensor, actions: torch.Tensor, keep: int) -> None:
        """Keep the newest ``keep`` states (and actions) of the rollouts seen so far."""
        states = torch.cat([self.states, states]) if len(self.states) else states
        actions = torch.cat([self.actions, actions]) if len(self.actions) else actions
        self.states, self.actions = states[-keep:], actions[-keep:]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.policy_logits(x.to(self.device), self.task_index)

    def importance_batches(self, samples: int, batch_size: int, purpose: str):
        """``([(states, actions, u)], count)``: ``samples`` of the kept states (0 or more than kept:
        all), chosen and labelled by the generator of the run seed, the game and ``purpose`` (``bitcl.train.seeds``)."""
        total = len(self.states)
        if total == 0:
            return [], 0
        generator = rl_generator(self.seed, self.task_index, purpose)
        take = total if samples <= 0 or samples >= total else samples
        idx = torch.randperm(total, generator=generator)[:take].sort().values
        uniforms = torch.rand(take, generator=generator, dtype=torch.float64)
        states, actions = self.states[idx], self.actions[idx]
        batches = [(states[i:i + batch_size].to(self.device), actions[i:i + batch_size].to(self.device),
                    uniforms[i:i + batch_size]) for i in range(0, take, batch_size)]
        return batches, take
