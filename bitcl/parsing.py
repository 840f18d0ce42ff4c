"""The argument parser every ``bitcl`` command uses: errors are one line, never a usage dump.

``bitcl.cli`` and ``bitcl.rl.cli`` (and ``bitcl analyze bits``) build their parsers from
:class:`Parser`; flags of settings dataclasses come from :func:`bitcl.settings.add_flags`.
"""
from __future__ import annotations

import argparse
import os
import sys

from bitcl.errors import BitclError
from bitcl.settings import add_flags


class UsageError(BitclError):
    """A command line argparse rejected."""


class Parser(argparse.ArgumentParser):
    """argparse without prefix abbreviations, raising :class:`UsageError` instead of exiting."""

    def __init__(self, *args, **kwargs):
        # No prefix abbreviations: the method's own flags are added after a first parse that knows
        # only --method and --config, where EWC's `--c 100` would otherwise be read as `--config 100`.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line, no usage dump
        raise UsageError(message)


def add_method_flags(parser: argparse.ArgumentParser, method_cls, defaults: dict | None = None) -> None:
    """The flags of a method's ``Options`` in their own help group, stored as ``opt_<name>``
    (``bitcl run`` and ``bitcl rl``); ``defaults`` are the command's own defaults, shown in --help."""
    group = parser.add_argument_group(f"options of method {method_cls.name!r}")
    add_flags(group, method_cls.Options, dest_prefix="opt_", defaults=defaults)


__all__ = ["Parser", "UsageError", "add_method_flags", "warn_nothing_saved"]


def warn_nothing_saved(command: str, out, quiet: bool) -> None:
    """One stderr line at the start of a run without ``--out``: its results are printed, not saved."""
    if out is None and not quiet and os.environ.get("RANK", "0") == "0":
        print(f"bitcl {command}: no --out given: nothing will be saved (results.json, checkpoints); "
              "the results are only printed", file=sys.stderr, flush=True)
