"""Game suites through the gymnasium API: MinAtar (default) and Atari (ALE), vectorised.

* MinAtar (Young & Tian, "MinAtar: An Atari-Inspired Testbed for Thorough and
  Reproducible Reinforcement Learning Experiments", arXiv 1903.03176): 10x10xC boolean
  observations, ids ``MinAtar/<Game>-v1`` (the game's minimal action set). Channels
  differ per game (4 to 10), so every observation is zero-padded to the suite's 10
  channels: one trunk reads every game.
* Atari through ``ale-py`` (``ALE/<Game>-v5``, ROMs in the wheel) with the standard
  preprocessing of Mnih et al. (Nature 2015): frame skip 4 (with max-pooling), 84x84 grey,
  4 stacked frames, episodic life and reward clipping for training only; evaluation
  plays whole games and reports unclipped returns.

Each game also names its actions in the suite's full action set, so an agent with one
shared head over the union of the sequence's actions can address every game.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from bitcl.errors import ConfigError

MINATAR_GAMES = {"breakout": "Breakout", "space_invaders": "SpaceInvaders", "freeway": "Freeway",
                 "asterix": "Asterix", "seaquest": "Seaquest"}
MINATAR_CHANNELS = 10                     # Seaquest's, the most of any MinAtar game
ATARI_GAMES = {"breakout": "Breakout", "pong": "Pong", "space_invaders": "SpaceInvaders",
               "beam_rider": "BeamRider", "seaquest": "Seaquest", "qbert": "Qbert", "enduro": "Enduro",
               "road_runner": "RoadRunner", "boxing": "Boxing", "asterix": "Asterix",
               "kung_fu_master": "KungFuMaster", "freeway": "Freeway", "james_bond": "Jamesbond",
               "krull": "Krull", "river_raid": "Riverraid"}
SUITES = ("minatar", "atari")
EXTRA = {"minatar": ("rl", ("gymnasium", "minatar")), "atari": ("atari", ("gymnasium", "ale_py", "cv2"))}


@dataclass(frozen=True)
class Game:
    """One game of a suite: its gymnasium id, observation shape and actions."""

    suite: str
    name: str
    env_id: str
    obs_shape: tuple[int, ...]       # (C, H, W) as the agent reads it
    actions: tuple[int, ...]         # the game's actions, as indices of the suite's full action set


def require_suite(suite: str) -> None:
    """ConfigError naming the pip extra when the suite's packages are not installed."""
    if suite not in SUITES:
        raise ConfigError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    extra, modules = EXTRA[suite]
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(f"--suite {suite} needs the optional packages of bitcl[{extra}] "
                              f"(pip install 'bitcl[{extra}]'); {module!r} is not installed") from None


def _register(suite: str) -> None:
    import gymnasium as gym
    if suite == "minatar":
        if "MinAtar/Breakout-v1" not in gym.registry:
            from minatar.gym import register_envs
            register_envs()
    else:
        import ale_py
        gym.register_envs(ale_py)


def suite_games(suite: str) -> dict[str, str]:
    if suite not in SUITES:
        raise ConfigError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    return MINATAR_GAMES if suite == "minatar" else ATARI_GAMES


def game(suite: str, name: str) -> Game:
    """The :class:`Game` ``name`` of ``suite`` (ConfigError for an unknown game or a missing extra)."""
    games = suite_games(suite)
    if name not in games:
        raise ConfigError(f"unknown {suite} game {name!r}; choose from {', '.join(games)}")
    require_suite(suite)
    _register(suite)
    import gymnasium as gym
    if suite == "minatar":
        env_id = f"MinAtar/{games[name]}-v1"
        env = gym.make(env_id)
        actions = tuple(int(a) for a in env.unwrapped.game.minimal_action_set())
        shape = (MINATAR_CHANNELS, 10, 10)
    else:
        env_id = f"ALE/{games[name]}-v5"
        env = gym.make(env_id)
        actions = tuple(int(a.value) for a in env.unwrapped.ale.getMinimalActionSet())  # ale_py.Action enums
        shape = (4, 84, 84)
    env.close()
    return Game(suite, name, env_id, shape, actions)


def _minatar_env(g: Game):
    import gymnasium as gym
    from gymnasium.wrappers import TransformObservation

    pad = MINATAR_CHANNELS

    def to_chw(obs):  # (10, 10, C) bool -> (10, 10, 10) uint8 channels first, zero-padded
        out = np.zeros((pad, obs.shape[0], obs.shape[1]), dtype=np.uint8)
        out[: obs.shape[2]] = np.moveaxis(obs, 2, 0)
        return out

    space = gym.spaces.Box(0, 1, (pad, 10, 10), np.uint8)
    return TransformObservation(gym.make(g.env_id), to_chw, space)


def _atari_env(g: Game, train: bool):
    import gymnasium as gym
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation, TransformReward
    env = gym.make(g.env_id, frameskip=1)  # AtariPreprocessing does the skipping (and max-pools)
    env = AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, terminal_on_life_loss=train)
    env = FrameStackObservation(env, 4)
    if train:
        env = TransformReward(env, lambda r: float(np.sign(r)))
    return env


def make_env_fn(g: Game, train: bool) -> Callable:
    """A thunk building one environment of ``g`` (training: Atari's episodic life and clipping)."""
    if g.suite == "minatar":
        return lambda: _minatar_env(g)
    return lambda: _atari_env(g, train)


class VectorGame:
    """``n`` synchronous copies of a game returning torch tensors (uint8 observations).

    Autoreset happens in the same step (gymnasium's ``SAME_STEP`` mode): a step that ends an
    episode returns the next episode's first observation, and the ended one's last observation
    (needed to bootstrap a truncated episode) is in ``final_obs``.
    """

    def __init__(self, g: Game, n: int, seed: int, train: bool = True):
        import gymnasium as gym
        _register(g.suite)
        self.game = g
        self.n = n
        self.env = gym.vector.SyncVectorEnv([make_env_fn(g, train) for _ in range(n)],
                                            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        obs, _ = self.env.reset(seed=seed)
        self.obs = torch.as_tensor(np.asarray(obs, dtype=np.uint8))

    def step(self, actions: torch.Tensor):
        """``(obs, reward, terminated, truncated, final_obs)`` (final_obs: None, or a dict env -> obs)."""
        obs, reward, term, trunc, info = self.env.step(actions.cpu().numpy())
        final = None
        if "final_obs" in info and np.any(trunc):
            final = {int(i): torch.as_tensor(np.asarray(info["final_obs"][i], dtype=np.uint8))
                     for i in np.nonzero(trunc)[0]}
        self.obs = torch.as_tensor(np.asarray(obs, dtype=np.uint8))
        return (self.obs, torch.as_tensor(reward, dtype=torch.float32), torch.as_tensor(term),
                torch.as_tensor(trunc), final)

    def close(self) -> None:
        self.env.close()


def resolve_games(suite: str, names: Sequence[str]) -> list[Game]:
    """The :class:`Game` of each name (checked: known, not repeated, the suite's extra installed)."""
    if not names:
        raise ConfigError("--games must name at least one game")
    seen = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"--games lists {name!r} twice")
        seen.add(name)
    return [game(suite, name) for name in names]


def union_actions(games: Sequence[Game]) -> tuple[int, ...]:
    """The sorted union of the games' actions (the shared head's outputs)."""
    return tuple(sorted({a for g in games for a in g.actions}))
