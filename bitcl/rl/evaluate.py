"""Evaluation: unclipped returns over fixed episodes, for the agent and for a random policy.

Every evaluation of a game plays the same ``episodes`` episodes (environments seeded with
``eval_seed``, actions sampled from a generator seeded with it too), whole games with no
episodic life and no reward clipping, each capped at ``max_steps`` agent steps; so a
return-matrix entry depends only on the weights. Each episode's return is kept, so every
entry has an interval (``bitcl.stats``) and games can be tested against the random policy.
"""
from __future__ import annotations

from typing import Optional

import torch

from .envs import Game, VectorGame


@torch.no_grad()
def episode_returns(g: Game, episodes: int, seed: int, max_steps: int, agent=None, game_index: int = 0,
                    policy: str = "sample") -> list[float]:
    """The return of each of ``episodes`` seeded episodes of ``agent`` (None: uniform-random actions)."""
    env = VectorGame(g, episodes, seed, train=False)
    generator = torch.Generator().manual_seed(seed)
    totals = torch.zeros(episodes)
    running = torch.ones(episodes, dtype=torch.bool)
    device: Optional[torch.device] = next(agent.parameters()).device if agent is not None else None
    was_training = agent.training if agent is not None else False
    if agent is not None:
        agent.eval()
    try:
        for _ in range(max_steps):
            if agent is None:
                actions = torch.randint(len(g.actions), (episodes,), generator=generator)
            else:
                logits = agent.policy_logits(env.obs.to(device), game_index).cpu()
                actions = (logits.argmax(1) if policy == "greedy"
                           else torch.multinomial(torch.softmax(logits, 1), 1, generator=generator).squeeze(1))
            _, reward, term, trunc, _ = env.step(actions)
            totals += reward * running
            running &= ~(term | trunc)
            if not running.any():
                break
    finally:
        env.close()
        if agent is not None:
            agent.train(was_training)
    return totals.tolist()


def mean_of(returns: list[float]) -> float:
    """The mean that goes into ``return_matrix``: float32, as the returns were summed."""
    return float(torch.tensor(returns, dtype=torch.float32).mean())


def mean_return(g: Game, episodes: int, seed: int, max_steps: int, agent=None, game_index: int = 0,
                policy: str = "sample") -> float:
    """Mean return of ``agent`` (None: uniform-random actions) on ``episodes`` seeded episodes."""
    return mean_of(episode_returns(g, episodes, seed, max_steps, agent, game_index, policy))
