"""Continual-learning methods, one file each, registered by name."""
from . import af, anpyc, blip, dlcft, ewc, finetune, joint, mas, masx, rewc, si, sib, siu, sos  # noqa: F401  (registration)
from .base import Strategy, get_strategy, make_options, register, strategy_names

__all__ = ["Strategy", "get_strategy", "make_options", "register", "strategy_names"]
