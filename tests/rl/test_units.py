"""The agent, the task context and the environments of `bitcl rl`, piece by piece."""
import pytest
import torch

from bitcl.errors import ConfigError
from bitcl.models.factory import LayerFactory
from bitcl.quant import BitConv2d, BitLinear
from bitcl.rl.agent import Agent
from bitcl.rl.context import RLTaskContext
from bitcl.rl.envs import VectorGame, resolve_games, union_actions
from bitcl.strategies.base import protected_parameters
from bitcl.strategies.context import RunInfo

pytest.importorskip("minatar", reason="the MinAtar suite needs bitcl[rl]")

GAMES = ("breakout", "space_invaders")


@pytest.fixture(scope="module")
def games():
    return resolve_games("minatar", GAMES)


def test_per_game_heads_are_float_and_unprotected(games):
    """Per-game heads: the trunk is quantised and is all a method protects; each game has its own heads."""
    agent = Agent(games, LayerFactory("quant", 8))
    assert isinstance(agent.trunk[0], BitConv2d) and isinstance(agent.trunk[3], BitLinear)
    assert set(protected_parameters(agent)) == {n for n, _ in agent.named_parameters() if n.startswith("trunk.")}
    obs = torch.zeros(5, 10, 10, 10, dtype=torch.uint8)
    for i, g in enumerate(games):
        logits, value = agent(obs, i)
        assert logits.shape == (5, len(g.actions)) and value.shape == (5,)


def test_shared_head_reads_each_games_actions_from_the_union(games):
    """One shared head over the union of actions: game i's logits are the union rows of its actions."""
    agent = Agent(games, LayerFactory("quant", 8), head="shared")
    union = union_actions(games)
    assert agent.policies[0].out_features == len(union)
    assert "policies.0.weight" in protected_parameters(agent)
    obs = torch.randint(0, 2, (3, 10, 10, 10), dtype=torch.uint8)
    full = agent.policies[0](agent.features(obs))
    for i, g in enumerate(games):
        cols = [union.index(a) for a in g.actions]
        assert torch.equal(agent.policy_logits(obs, i), full[:, cols])


def test_importance_batches_are_seeded_and_sized(games):
    """importance_batches: the asked number of kept states with their actions, u in [0,1), same draw twice."""
    agent = Agent(games, LayerFactory("float"))
    ctx = RLTaskContext(agent, 1, RunInfo(2, "rl"), seed=3)
    states = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 10, 10, 10).contiguous()
    ctx.remember(states[:30], torch.arange(30), keep=40)
    ctx.remember(states[30:], torch.arange(30, 50), keep=40)
    assert len(ctx.states) == 40 and int(ctx.states[0, 0, 0, 0]) == 10   # the newest 40 are kept
    batches, count = ctx.importance_batches(25, 10, "fisher")
    again, _ = ctx.importance_batches(25, 10, "fisher")
    assert count == 25 and [len(b[0]) for b in batches] == [10, 10, 5]
    for (x, y, u), (x2, _, u2) in zip(batches, again):
        assert torch.equal(x, x2) and torch.equal(u, u2)
        assert torch.equal(x[:, 0, 0, 0].long(), y)                      # states stay paired with actions
        assert bool(((u >= 0) & (u < 1)).all())
    assert ctx.importance_batches(0, 100, "fisher")[1] == 40            # 0: every kept state
    assert torch.equal(ctx.logits(states[:2]), agent.policy_logits(states[:2], 1))


def test_minatar_observations_are_padded_to_ten_channels(games):
    """Every MinAtar game is seen through 10 uint8 channels, its own channels first, padding zero."""
    env = VectorGame(games[0], 2, seed=0)
    try:
        assert env.obs.shape == (2, 10, 10, 10) and env.obs.dtype == torch.uint8
        assert int(env.obs[:, 4:].sum()) == 0          # Breakout has 4 channels
        obs, reward, term, trunc, _ = env.step(torch.zeros(2, dtype=torch.int64))
        assert obs.shape == (2, 10, 10, 10) and reward.shape == (2,)
    finally:
        env.close()


@pytest.mark.parametrize("suite,names,message", [
    ("minatar", ("breakout", "pong"), "unknown minatar game 'pong'"),
    ("minatar", ("breakout", "breakout"), "twice"),
    ("minatar", (), "at least one game"),
    ("nes", ("mario",), "unknown suite"),
])
def test_bad_game_lists_are_config_errors(suite, names, message):
    """Unknown games, repeats, empty lists and unknown suites raise ConfigError naming the problem."""
    with pytest.raises(ConfigError, match=message):
        resolve_games(suite, names)


def test_missing_extra_names_the_pip_extra(monkeypatch):
    """Without the suite's packages the error names the extra to install."""
    import builtins
    real = builtins.__import__

    def no_ale(name, *args, **kwargs):
        if name == "ale_py":
            raise ImportError("No module named 'ale_py'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ale)
    import bitcl.rl.envs as envs
    monkeypatch.setattr(envs.importlib, "import_module",
                        lambda name: no_ale(name) if name == "ale_py" else real(name))
    with pytest.raises(ConfigError, match=r"bitcl\[atari\]"):
        envs.require_suite("atari")
