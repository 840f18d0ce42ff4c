"""``bitcl rl``: continual reinforcement learning from the command line.

Every :class:`~bitcl.rl.config.RLConfig` field is a flag shown with its default; the
method's options come from its ``Options`` dataclass. Bad input (unknown game or method,
zero steps, a suite whose extra is not installed) raises a :class:`bitcl.errors.BitclError`,
which the CLI prints as one line with exit status 2.
"""
from __future__ import annotations

import argparse
import typing
from typing import Sequence

from .config import RLConfig


def _games(text: str) -> tuple[str, ...]:
    return tuple(g.strip() for g in text.split(",") if g.strip())


def rl_parser(method_cls=None) -> argparse.ArgumentParser:
    """The parser of ``bitcl rl`` (with ``method_cls``'s options when given)."""
    from bitcl.cli import _option_flags, _Parser
    p = _Parser(prog="bitcl rl", description="Train one PPO agent on a sequence of games, evaluating every game "
                                             "after each (continual reinforcement learning).")
    hints = typing.get_type_hints(RLConfig)
    defaults = RLConfig()
    for f in defaults.fields():
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        shown = ",".join(default) if f.name == "games" else default
        kwargs = {"dest": f.name, "default": default, "help": f"{f.metadata['help']} (default: {shown})"}
        if hints[f.name] is bool:
            kwargs["action"] = "store_true" if default is False else argparse.BooleanOptionalAction
        elif f.name == "games":
            kwargs.update(type=_games, metavar="G1,G2,...")
        else:
            kwargs["type"] = str if f.name == "out" else hints[f.name]
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
            else:
                kwargs["metavar"] = f.name.upper()
        p.add_argument(flag, **kwargs)
    if method_cls is not None:
        group = p.add_argument_group(f"options of method {method_cls.name!r}")
        for flag, kwargs in _option_flags(method_cls.Options):
            group.add_argument(flag, **kwargs)
    return p


def config_from_args(argv: Sequence[str]) -> RLConfig:
    from bitcl.cli import _Parser
    from bitcl.strategies import get_strategy
    pre = _Parser(add_help=False)
    pre.add_argument("--method", default=RLConfig().method)
    known, _ = pre.parse_known_args(argv)
    method_cls = get_strategy(known.method)
    args = rl_parser(method_cls).parse_args(argv)
    options = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_")}
    fields = {k: v for k, v in vars(args).items() if not k.startswith("opt_")}
    config = RLConfig(**fields, method_options=options)
    config.validate()
    return config


def cmd_rl(argv: Sequence[str]) -> int:
    """``bitcl rl [flags]``: run, print the return matrix, score and forgetting; 0 on success."""
    from .loop import run_rl
    config = config_from_args(argv)
    from bitcl.cli import warn_nothing_saved
    warn_nothing_saved("rl", config.out, config.quiet)
    result = run_rl(config)
    print(result.format_matrix())
    if config.out:
        print(f"results: {config.out}/results.json")
    return 0

