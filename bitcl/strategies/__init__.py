"""Continual-learning methods, one file each, registered by name."""
from . import blip, finetune, joint  # noqa: F401  (registration side effects)
from .base import Strategy, get_strategy, make_options, register, strategy_names

__all__ = ["Strategy", "get_strategy", "make_options", "register", "strategy_names"]
