"""Continual reinforcement learning: one PPO agent, a sequence of games, bit-level protection.

BLIP's second family of experiments (Shi et al., "Continual Learning via Bit-Level
Information Preserving", CVPR 2021, arXiv 2105.04444, Sec. 5.3): an actor-critic with a
shared convolutional trunk and a policy/value head per game learns games one after
another; every game is evaluated after each. The methods are bitcl's strategies
unchanged (``finetune``, ``ft-fix``, ``ewc``, ``blip``: those with ``rl = True``), fed the
states of the last rollouts instead of images (:class:`~bitcl.rl.context.RLTaskContext`).

Modules: ``envs`` (MinAtar and Atari through gymnasium), ``agent``, ``ppo``, ``context``,
``evaluate``, ``results`` (the results.json contract), ``loop`` (the run), ``config``,
``cli`` (``bitcl rl``), ``report``. Environments need the extras ``bitcl[rl]`` (MinAtar)
or ``bitcl[atari]`` (ALE); nothing here imports them until a game is made.
"""
from .config import RLConfig

__all__ = ["RLConfig", "run_rl"]


def run_rl(config: RLConfig):
    """Train one agent on ``config.games`` in turn; see :func:`bitcl.rl.loop.run_rl`."""
    from .loop import run_rl as _run
    return _run(config)
