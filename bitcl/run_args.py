"""The settings of ``bitcl run`` from its command line: one flag per ``RunConfig`` field and per
option of the chosen method (:mod:`bitcl.settings`), a ``--config`` results file to replay, and a
``--preset`` paper protocol. Used by the CLI and by ``bitcl sweep`` (which checks every run of a
grid exactly as ``bitcl run`` would), so it lives below both.
"""
from __future__ import annotations

from typing import Optional, Sequence

from bitcl.parsing import Parser, add_method_flags
from bitcl.settings import add_flags


def add_config_flags(parser, names: Optional[Sequence[str]] = None, defaults: Optional[dict] = None) -> None:
    """One flag per RunConfig field (all of them, or ``names``), with its help, choices and default.

    Flags default to SUPPRESS, so that only what the user typed overrides a ``--config`` file or a
    preset; ``defaults`` changes the default a command shows (e.g. pretrain's epochs)."""
    from bitcl.config import RunConfig
    add_flags(parser, RunConfig, names=names, defaults=defaults)


def run_parser(method_cls, prog: str = "bitcl run") -> Parser:
    p = Parser(prog=prog, description="Train one model on a sequence of tasks (the CLI is documented in docs/cli.md).")
    p.add_argument("--config", dest="config_file", default=None, metavar="RESULTS_JSON",
                   help="replay the settings recorded in a run's results.json (flags given here override them)")
    add_config_flags(p)
    if method_cls is not None:
        add_method_flags(p, method_cls)
    return p


def recorded_config(path: str) -> dict:
    """The ``config`` of a results.json file (validated by ``bitcl.train.validate``), with method
    options renamed since it was written under their current names."""
    from bitcl.strategies import upgrade_recorded_options
    from bitcl.train.validate import read_results
    from bitcl.versions import check_results_version
    results = read_results(path, require=("config",))
    check_results_version(results, path)
    return upgrade_recorded_options(dict(results["config"]))


def config_from_args(argv: Sequence[str]):
    """RunConfig from the command line: the defaults, then a ``--config`` file, then the flags typed."""
    from bitcl.config import RunConfig
    from bitcl.presets import protocol_settings, split_protocol
    from bitcl.strategies import get_strategy
    argv, protocol = split_protocol(list(argv))  # --preset NAME: a paper protocol (bitcl list)
    pre = Parser(add_help=False)
    pre.add_argument("--method", default=None)
    pre.add_argument("--config", dest="config_file", default=None)
    known, _ = pre.parse_known_args(argv)
    base = recorded_config(known.config_file) if known.config_file else {}
    if protocol:
        base = {**protocol_settings(protocol), **base}
    method = known.method or base.get("method") or RunConfig().method
    args = vars(run_parser(get_strategy(method)).parse_args(argv))
    args.pop("config_file", None)
    options = {k[4:]: v for k, v in args.items() if k.startswith("opt_")}
    fields = {k: v for k, v in args.items() if not k.startswith("opt_")}
    values = {**base, **fields}
    if base and "method" in fields and fields["method"] != base.get("method"):
        values["method_options"] = {}  # another method's options do not carry over
    values["method_options"] = {**values.get("method_options", {}), **options}
    if base:
        values.setdefault("overwrite", False)
        values.setdefault("resume", False)
    return RunConfig.from_dict(values, known.config_file or "command line")


__all__ = ["add_config_flags", "config_from_args", "recorded_config", "run_parser"]
