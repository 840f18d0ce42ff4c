"""``bitcl rl``: continual reinforcement learning from the command line.

Every :class:`~bitcl.rl.config.RLConfig` field is a flag shown with its default; the
method's options come from its ``Options`` dataclass. Bad input (unknown game or method,
zero steps, a suite whose extra is not installed) raises a :class:`bitcl.errors.BitclError`,
which the CLI prints as one line with exit status 2.
"""
from __future__ import annotations

from typing import Sequence

from bitcl.parsing import Parser, add_method_flags
from bitcl.settings import add_flags

from .config import RLConfig, method_defaults


def rl_parser(method_cls=None) -> Parser:
    """The parser of ``bitcl rl`` (with ``method_cls``'s options when given)."""
    p = Parser(prog="bitcl rl", description="Train one PPO agent on a sequence of games, evaluating every game "
                                            "after each (continual reinforcement learning).")
    add_flags(p, RLConfig, keep_defaults=True)
    if method_cls is not None:
        add_method_flags(p, method_cls, defaults=method_defaults(method_cls.name))
    return p


def config_from_args(argv: Sequence[str]) -> RLConfig:
    from bitcl.strategies import get_strategy
    pre = Parser(add_help=False)
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
    from bitcl.parsing import warn_nothing_saved
    warn_nothing_saved("rl", config.out, config.quiet)
    result = run_rl(config)
    print(result.format_matrix())
    if config.out:
        print(f"results: {config.out}/results.json")
    return 0

