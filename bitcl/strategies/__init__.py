"""Continual-learning methods, one file each, registered by name and discovered automatically."""
from .base import (Strategy, build_options, discover, get_strategy, make_options, register, resolved_options,
                   strategy_names, upgrade_recorded_options)
from .context import RunInfo, TaskContext, Unsupported, check_supported

__all__ = ["RunInfo", "Strategy", "TaskContext", "Unsupported", "build_options", "check_supported", "discover",
           "get_strategy", "make_options", "register", "resolved_options", "strategy_names",
           "upgrade_recorded_options"]
