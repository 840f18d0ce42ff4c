"""The actor-critic agent: one convolutional trunk shared by every game, a head per game.

As in BLIP's continual-RL experiments (Shi et al., CVPR 2021, arXiv 2105.04444, Sec. 5.3,
after Kostrikov's PPO): the trunk is shared and protected, each game has its own policy
and value heads (task-incremental). ``head="shared"`` gives instead one policy head over
the union of the sequence's actions (a game reads the rows of its own actions) and one
value head, both quantised and protected like the trunk.

Trunks (built through :class:`~bitcl.models.factory.LayerFactory`: Bit layers for a
quantised agent, float for baselines):

* ``minatar``: conv 3x3 16 (stride 1) and a 128-unit layer, the network of the MinAtar
  paper (Young & Tian, arXiv 1903.03176);
* ``atari``: the Nature CNN (Mnih et al., Nature 2015): conv 8x8/4 32, 4x4/2 64,
  3x3/1 64, a 512-unit layer.

Initialisation is orthogonal (gain sqrt 2 in the trunk, 0.01 for policies, 1 for
values), as in stable-baselines3 and the PPO paper's code, then projected onto the
bit grid.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch import nn

from bitcl.models.factory import LayerFactory
from bitcl.quant import bit_states

from .envs import Game, union_actions

HEADS = ("per-game", "shared")


def minatar_trunk(layers: LayerFactory, channels: int) -> nn.Sequential:
    trunk = nn.Sequential(layers.conv(channels, 16, 3), nn.ReLU(), nn.Flatten(),
                          layers.linear(16 * 8 * 8, 128), nn.ReLU())
    trunk.out_features = 128
    return trunk


def nature_trunk(layers: LayerFactory, channels: int) -> nn.Sequential:
    trunk = nn.Sequential(layers.conv(channels, 32, 8, stride=4), nn.ReLU(),
                          layers.conv(32, 64, 4, stride=2), nn.ReLU(),
                          layers.conv(64, 64, 3), nn.ReLU(), nn.Flatten(),
                          layers.linear(64 * 7 * 7, 512), nn.ReLU())
    trunk.out_features = 512
    return trunk


def _init(module: nn.Module, gain: float) -> None:
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.orthogonal_(layer.weight, gain)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class Agent(nn.Module):
    """``forward(obs, game) -> (logits over the game's actions, value)``; obs as the env gives them."""

    output_modules = ("policies", "values")  # the action and value heads (ANPyC never prunes them)

    def __init__(self, games: Sequence[Game], layers: LayerFactory, head: str = "per-game"):
        super().__init__()
        suite = games[0].suite
        channels = games[0].obs_shape[0]
        self.obs_scale = 1.0 if suite == "minatar" else 1.0 / 255.0
        self.head = head
        self.trunk = (minatar_trunk if suite == "minatar" else nature_trunk)(layers, channels)
        width = self.trunk.out_features
        if head == "per-game":
            self.policies = nn.ModuleList(nn.Linear(width, len(g.actions)) for g in games)
            self.values = nn.ModuleList(nn.Linear(width, 1) for _ in games)
            columns = [list(range(len(g.actions))) for g in games]
        else:
            union = union_actions(games)
            self.policies = nn.ModuleList([layers.linear(width, len(union))])
            self.values = nn.ModuleList([layers.linear(width, 1)])
            columns = [[union.index(a) for a in g.actions] for g in games]
        for i, cols in enumerate(columns):  # which policy outputs are game i's actions
            self.register_buffer(f"columns_{i}", torch.tensor(cols, dtype=torch.int64))
        _init(self.trunk, math.sqrt(2))
        _init(self.policies, 0.01)
        _init(self.values, 1.0)
        with torch.no_grad():
            for _, state in bit_states(self):
                state.project_()

    @property
    def shared_head(self) -> bool:
        return self.head == "shared"

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        return self.trunk(obs.float() * self.obs_scale)

    def policy_logits(self, obs: torch.Tensor, game: int) -> torch.Tensor:
        """Logits over game ``game``'s actions (the log-likelihood of Fisher estimates)."""
        return self._policy(self.features(obs), game)

    def _policy(self, features: torch.Tensor, game: int) -> torch.Tensor:
        if self.shared_head:
            return self.policies[0](features).index_select(1, getattr(self, f"columns_{game}"))
        return self.policies[game](features)

    def forward(self, obs: torch.Tensor, game: int) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(obs)
        value = self.values[0 if self.shared_head else game](features).squeeze(1)
        return self._policy(features, game), value

    def backbone_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Named parameters every game shares (the trunk, and the heads when shared)."""
        for name, param in self.named_parameters():
            if self.shared_head or name.startswith("trunk."):
                yield name, param
