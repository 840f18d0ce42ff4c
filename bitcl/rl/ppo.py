"""A compact PPO whose every optimiser step runs the continual-learning hooks.

Schulman et al., "Proximal Policy Optimization Algorithms", arXiv 1707.06347: the
clipped surrogate (Eq. 7), value and entropy terms (Eq. 9), minibatch epochs over each
rollout, advantages by GAE (Schulman et al., "High-Dimensional Continuous Control Using
Generalized Advantage Estimation", arXiv 1506.02438, Eq. 16) normalised per minibatch,
gradient-norm clipping and linear learning-rate annealing over a game, as in
stable-baselines3 (its loss: ``pg + vf_coef * mse(values, returns) - ent_coef * entropy``).
Written here rather than borrowed so that every minibatch update goes through bitcl's one
training step (``bitcl.train.step``: the strategy hooks between backward, optimiser step and
bit projection, gradient clipping an option of that step) without wrapping a foreign loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


def gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_value: torch.Tensor,
        gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns (``advantages + values``) of a rollout, all of shape (T, N).

    ``dones[t]``: the episode ended at step t (its reward is the last; nothing bootstraps
    across it); ``last_value``: V of the observation after the rollout's last step.
    δ_t = r_t + γ V_{t+1} (1 - d_t) - V_t and A_t = δ_t + γ λ (1 - d_t) A_{t+1}.
    """
    steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    for t in reversed(range(steps)):
        next_value = last_value if t == steps - 1 else values[t + 1]
        live = 1.0 - dones[t].float()
        delta = rewards[t] + gamma * next_value * live - values[t]
        running = delta + gamma * lam * live * running
        advantages[t] = running
    return advantages, advantages + values


def log_probs_and_entropy(logits: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logp = torch.log_softmax(logits, 1)
    entropy = -(logp.exp() * logp).sum(1)
    return logp.gather(1, actions.unsqueeze(1)).squeeze(1), entropy


def clipped_loss(new_logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                 values: torch.Tensor, returns: torch.Tensor, entropy: torch.Tensor, clip: float,
                 vf_coef: float, ent_coef: float) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's loss on one minibatch (advantages already normalised) and its parts."""
    ratio = torch.exp(new_logp - old_logp)
    surrogate = torch.min(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    policy_loss = -surrogate.mean()
    value_loss = (values - returns).pow(2).mean()
    entropy_mean = entropy.mean()
    loss = policy_loss + vf_coef * value_loss - ent_coef * entropy_mean
    return loss, {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(),
                  "entropy": entropy_mean.item()}


@dataclass
class Rollout:
    """``T`` steps of ``N`` environments."""

    obs: torch.Tensor          # (T, N, *obs) uint8
    actions: torch.Tensor      # (T, N) int64, indices into the game's actions
    logp: torch.Tensor         # (T, N)
    values: torch.Tensor       # (T, N)
    rewards: torch.Tensor      # (T, N), with γ V(final obs) added where an episode was truncated
    dones: torch.Tensor        # (T, N) bool
    last_value: torch.Tensor   # (N,)


@torch.no_grad()
def collect(agent: nn.Module, game: int, env, steps: int, gamma: float, generator: torch.Generator,
            on_episode: Callable[[float], None], returns_so_far: torch.Tensor) -> Rollout:
    """Play ``steps`` steps in every environment of ``env`` (a :class:`~bitcl.rl.envs.VectorGame`)."""
    n = env.n
    obs_buf = torch.empty((steps, n, *env.obs.shape[1:]), dtype=torch.uint8)
    actions = torch.empty((steps, n), dtype=torch.int64)
    logp = torch.empty((steps, n))
    values = torch.empty((steps, n))
    rewards = torch.empty((steps, n))
    dones = torch.empty((steps, n), dtype=torch.bool)
    device = next(agent.parameters()).device
    for t in range(steps):
        obs = env.obs
        logits, value = agent(obs.to(device), game)
        logits, value = logits.cpu(), value.cpu()
        action = torch.multinomial(torch.softmax(logits, 1), 1, generator=generator).squeeze(1)
        obs_buf[t], actions[t], values[t] = obs, action, value
        logp[t] = torch.log_softmax(logits, 1).gather(1, action.unsqueeze(1)).squeeze(1)
        _, reward, term, trunc, final = env.step(action)
        if final:  # a truncated episode still has a future: bootstrap it (as stable-baselines3 does)
            idx = sorted(final)
            _, final_values = agent(torch.stack([final[i] for i in idx]).to(device), game)
            reward[idx] += gamma * final_values.cpu()
        rewards[t] = reward
        done = term | trunc
        dones[t] = done
        returns_so_far += reward
        for i in torch.nonzero(done).flatten().tolist():
            on_episode(float(returns_so_far[i]))
            returns_so_far[i] = 0.0
    _, last_value = agent(env.obs.to(device), game)
    return Rollout(obs_buf, actions, logp, values, rewards, dones, last_value.cpu())


@dataclass
class UpdateSettings:
    epochs: int
    minibatches: int
    clip: float
    vf_coef: float
    ent_coef: float
    max_grad_norm: float
    gamma: float
    gae_lambda: float


def update(agent: nn.Module, game: int, rollout: Rollout, settings: UpdateSettings, generator: torch.Generator,
           step: Callable[[torch.Tensor, int, int], float]) -> dict[str, float]:
    """PPO epochs over one rollout. For each minibatch ``k`` of epoch ``e``, ``step(loss, e, k)``
    takes the optimiser step: the loop's :class:`~bitcl.train.step.StepRunner` (penalty,
    finiteness check, backward, ``after_backward``, gradient clipping at
    ``settings.max_grad_norm``, optimiser step, bit projection, ``after_step``), the one step
    of every bitcl loop. Returns the last minibatch's loss parts."""
    device = next(agent.parameters()).device
    advantages, returns = gae(rollout.rewards, rollout.values, rollout.dones, rollout.last_value,
                              settings.gamma, settings.gae_lambda)
    obs = rollout.obs.flatten(0, 1)
    flat = {"actions": rollout.actions.flatten(), "logp": rollout.logp.flatten(),
            "advantages": advantages.flatten(), "returns": returns.flatten()}
    total = obs.shape[0]
    size = max(1, total // settings.minibatches)
    stats: dict[str, float] = {}
    for epoch in range(settings.epochs):
        order = torch.randperm(total, generator=generator)
        for k, start in enumerate(range(0, total - size + 1, size)):
            idx = order[start:start + size]
            adv = flat["advantages"][idx]
            adv = (adv - adv.mean()) / (adv.std() + 1e-8) if len(idx) > 1 else adv
            logits, values = agent(obs[idx].to(device), game)
            new_logp, entropy = log_probs_and_entropy(logits, flat["actions"][idx].to(device))
            loss, stats = clipped_loss(new_logp, flat["logp"][idx].to(device), adv.to(device), values,
                                       flat["returns"][idx].to(device), entropy, settings.clip,
                                       settings.vf_coef, settings.ent_coef)
            step(loss, epoch, k)
    return stats
