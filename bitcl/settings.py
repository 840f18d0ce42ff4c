"""One schema for every settings dataclass: declare a setting once, validate it and make its flag from it.

A setting is a dataclass field made with :func:`setting`: its default, its help text and its
constraints (``choices``, ``low``/``high`` inclusive bounds, ``above``/``below`` exclusive ones,
``items_low``/``items_high`` for the items of a list, ``nonempty``) live in the field's metadata;
its type is the field's annotation, resolved with :func:`typing.get_type_hints` (``int``,
``float``, ``str``, ``bool``, ``Optional[...]`` of those, ``list[int]``, ``tuple[str, ...]``,
``dict``; any other annotation, e.g. a callable, is not type-checked here).

* :func:`validate` checks every field of an instance and raises :class:`~bitcl.errors.ConfigError`
  naming the setting (``--bits`` for a command-line setting, ``BitConfig.bits`` or ``epochs`` for
  a Python one: the ``label`` argument). Relations between fields stay with their class.
* :func:`build` makes an instance from a dict (unknown keys refused, deprecated spellings renamed)
  and validates it: a method's options from ``results.json`` or from ``bitcl.fit(options=...)``.
* :func:`add_flags` adds one argparse flag per field, with its choices, its type and its help
  showing the default once; a deprecated spelling (``aliases``) still works and prints a one-line
  warning on stderr.

``RunConfig`` (``bitcl run``), every method's ``Options``, ``RLConfig`` (``bitcl rl``),
``bitcl.fit``'s arguments and ``BitConfig`` (``bitcl.quantize_``) are checked here. Records read
back from disk (a checkpoint's ``bitcl_progress``) can check a dict against a class's schema
with :func:`check_values` (see its docstring).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
import types
import typing
import warnings
from typing import Any, Callable, Iterable, Optional, Sequence

from bitcl.errors import ConfigError

Label = Callable[[str], str]


def flag_name(name: str) -> str:
    """The command-line spelling of a field: ``fisher_prior`` -> ``--fisher-prior``."""
    return "--" + name.replace("_", "-")


def setting(default: Any, help: str, *, choices: Optional[Sequence] = None, low: Optional[float] = None,
            high: Optional[float] = None, above: Optional[float] = None, below: Optional[float] = None,
            items_low: Optional[int] = None, items_high: Optional[int] = None, nonempty: bool = False,
            shown: Optional[str] = None, aliases: Sequence[str] = (), metavar: Optional[str] = None,
            flag: bool = True) -> Any:
    """A dataclass field with its help and constraints (module docstring).

    ``shown``: what ``--help`` prints as the default when the default itself (None) means
    something else ("preset, else 10"). ``aliases``: earlier names of the field (``fisher_samples``),
    accepted as deprecated flags and as keys of :func:`build`. ``flag=False``: no command-line flag.
    """
    meta: dict[str, Any] = {"help": help}
    for key, value in (("choices", None if choices is None else tuple(choices)), ("low", low), ("high", high),
                       ("above", above), ("below", below), ("items_low", items_low), ("items_high", items_high),
                       ("shown", shown), ("metavar", metavar)):
        if value is not None:
            meta[key] = value
    if nonempty:
        meta["nonempty"] = True
    if aliases:
        meta["aliases"] = tuple(aliases)
    if not flag:
        meta["flag"] = False
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: copy.copy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def default_of(f: dataclasses.Field) -> Any:
    """A field's default value (calling its factory)."""
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


# -- types ------------------------------------------------------------------------------------------

def _split_optional(hint: Any) -> tuple[bool, Any]:
    """``(True, X)`` for ``Optional[X]`` / ``X | None``, else ``(False, hint)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return len(args) < len(typing.get_args(hint)), args[0]
    return False, hint


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _scalar(label: str, kind: Any, value: Any) -> Any:
    """``value`` checked (and an int widened to float for a float setting), or ConfigError."""
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{label} must be true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{label} must be an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{label} must be a finite number, got {value!r}")
        return float(value)
    elif kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{label} must be a string, got {value!r}")
    elif kind is dict or typing.get_origin(kind) is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{label} must be a mapping of names to values, got {value!r}")
    return value


def _sequence_item(kind: Any) -> Optional[Any]:
    """The item type of ``list[X]`` / ``tuple[X, ...]``, else None."""
    if typing.get_origin(kind) in (list, tuple):
        args = [a for a in typing.get_args(kind) if a is not Ellipsis]
        return args[0] if args else Any
    return None


def _bounds(label: str, value: Any, meta: dict) -> None:
    low, high, above, below = (meta.get(k) for k in ("low", "high", "above", "below"))
    lower = f"[{low}" if low is not None else f"({above}" if above is not None else None
    upper = f"{high}]" if high is not None else f"{below})" if below is not None else None
    ok = ((low is None or value >= low) and (high is None or value <= high)
          and (above is None or value > above) and (below is None or value < below))
    if ok:
        return
    if lower and upper:
        raise ConfigError(f"{label} must lie in {lower}, {upper}, got {value!r}")
    if lower:
        raise ConfigError(f"{label} must be {'>=' if low is not None else '>'} {low if low is not None else above}, "
                          f"got {value!r}")
    raise ConfigError(f"{label} must be {'<=' if high is not None else '<'} {high if high is not None else below}, "
                      f"got {value!r}")


def check_value(label: str, hint: Any, meta: dict, value: Any) -> Any:
    """One setting's value checked against its annotation and metadata; returns it (normalised:
    an int for a float setting becomes a float, a list setting a list, a tuple setting a tuple)."""
    optional, kind = _split_optional(hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{label} must be set")
    item = _sequence_item(kind)
    if item is not None:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{label} must be a list, got {value!r}")
        value = [_scalar(label, item, v) for v in value]
        if item is int and any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise ConfigError(f"{label} must be a list of integers, got {value!r}")
        if meta.get("nonempty") and not value:
            raise ConfigError(f"{label} must not be empty")
        lo, hi = meta.get("items_low"), meta.get("items_high")
        if any((lo is not None and v < lo) or (hi is not None and v > hi) for v in value):
            span = f"{lo}..{hi}" if lo is not None and hi is not None else f">= {lo}" if lo is not None else f"<= {hi}"
            raise ConfigError(f"{label} items must lie in {span}, got {value}")
        if "choices" in meta and any(v not in meta["choices"] for v in value):
            raise ConfigError(f"{label} items must be among {', '.join(map(str, meta['choices']))}, got {value}")
        return tuple(value) if typing.get_origin(kind) is tuple else value
    value = _scalar(label, kind, value)
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{label} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _bounds(label, value, meta)
    return value


def validate(obj: Any, label: Label = flag_name) -> Any:
    """Check every field of the dataclass instance ``obj`` against its annotation and metadata.

    Raises ConfigError naming the first bad setting as ``label(field_name)`` (default: the flag,
    ``--bits``). Normalises in place (ints of float settings become floats, list settings lists);
    returns ``obj``."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = check_value(label(f.name), hints[f.name], f.metadata, getattr(obj, f.name))
        if value is not getattr(obj, f.name):
            object.__setattr__(obj, f.name, value)
    return obj


def check_values(cls: type, values: dict, label: Label = flag_name, *, require: bool = False,
                 allow: Iterable[str] = ()) -> dict:
    """Check a dict of settings against ``cls``'s schema without building an instance: unknown keys
    (other than those in ``allow``, passed through unchecked) are refused, each known one is checked
    as :func:`validate` would; with ``require``, every field without a default must be present.
    Returns the normalised dict.

    For records read back from disk, e.g. a checkpoint's ``bitcl_progress.config`` against
    :class:`bitcl.config.RunConfig`::

        check_values(RunConfig, config, lambda name: f"config.{name}",
                     allow=("data_source", "bitcl_version", "evaluated_on"))
    """
    if not isinstance(values, dict):
        raise ConfigError(f"expected an object of settings, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    allowed = set(allow)
    unknown = sorted(set(values) - set(fields) - allowed)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(label(k) for k in unknown)}")
    if require:
        missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"missing setting(s) {', '.join(label(k) for k in missing)}")
    hints = _hints(cls)
    return {k: v if k not in fields else check_value(label(k), hints[k], fields[k].metadata, v)
            for k, v in values.items()}


# -- renamed settings ----------------------------------------------------------------------------

def renamed(cls: type) -> dict[str, str]:
    """``{old name: current name}`` for every deprecated spelling (``aliases``) of ``cls``'s fields."""
    return {old: f.name for f in dataclasses.fields(cls) for old in f.metadata.get("aliases", ())}


def upgrade_keys(cls: type, values: dict, label: Label = flag_name, warn: bool = False) -> dict:
    """``values`` with deprecated keys renamed to the current ones (a key given under both names is
    refused). ``warn``: a FutureWarning per old name (for values typed by a user, not read from a
    record written by an earlier release)."""
    names = renamed(cls)
    out = dict(values)
    for old, new in names.items():
        if old not in out:
            continue
        if new in out:
            raise ConfigError(f"{label(new)} is given twice: also as its old name {label(old)}")
        if warn:
            warnings.warn(f"{label(old)} is deprecated; use {label(new)}", FutureWarning, stacklevel=3)
        out[new] = out.pop(old)
    return out


def build(cls: type, values: Optional[dict] = None, owner: str = "settings", label: Label = flag_name,
          warn: bool = False) -> Any:
    """An instance of the settings dataclass ``cls`` from a dict, validated: unknown keys, wrong
    types, non-finite numbers, bad choices and values out of range raise ConfigError naming the
    setting (``owner`` starts the message for unknown keys); deprecated names are renamed."""
    values = upgrade_keys(cls, dict(values or {}), label, warn)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{owner} has no option(s) {', '.join(label(k) for k in unknown)}")
    obj = cls(**values)
    validate(obj, label)
    check_relations = getattr(obj, "check_relations", None)
    if check_relations:
        check_relations()
    return obj


# -- command-line flags -------------------------------------------------------------------------------

def int_list(text: str) -> list[int]:
    """argparse type of ``list[int]`` settings: ``"400,400"`` -> ``[400, 400]``."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def name_list(text: str) -> tuple[str, ...]:
    """argparse type of ``tuple[str, ...]`` settings: ``"a, b"`` -> ``("a", "b")``."""
    return tuple(v.strip() for v in text.split(",") if v.strip())


class _DeprecatedFlag(argparse.Action):
    """A flag's old spelling: stores like the current one and says once, on stderr, what to type now."""

    def __init__(self, option_strings, dest, current: str = "", **kwargs):
        self.current = current
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if self.nargs == 0:  # an old boolean spelling
            values = True
        print(f"{parser.prog}: warning: {option_string} is deprecated (removed in the next release); "
              f"use {self.current}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) if value else "none"
    return "none" if value is None else str(value)


def flag_arguments(cls: type, *, dest_prefix: str = "", names: Optional[Iterable[str]] = None,
                   defaults: Optional[dict] = None, keep_defaults: bool = False) -> list[tuple[list[str], dict]]:
    """``[(option strings, add_argument kwargs)]`` for the fields of ``cls`` (all with a flag, or
    ``names``), deprecated spellings last. Defaults are ``argparse.SUPPRESS`` (only what the user
    typed appears in the namespace) unless ``keep_defaults``; ``defaults`` overrides the default a
    command shows (and, with ``keep_defaults``, uses)."""
    hints = _hints(cls)
    defaults = defaults or {}
    wanted = None if names is None else set(names)
    out = []
    for f in dataclasses.fields(cls):
        if not f.metadata.get("flag", True) or (wanted is not None and f.name not in wanted):
            continue
        meta = f.metadata
        default = defaults.get(f.name, default_of(f))
        shown = meta["shown"] if "shown" in meta and f.name not in defaults else _shown(default)
        help_text = meta.get("help", "")
        if meta.get("aliases"):
            help_text += f" (formerly {', '.join(flag_name(a) for a in meta['aliases'])}, deprecated)"
        kwargs: dict[str, Any] = {"dest": dest_prefix + f.name,
                                  "default": default if keep_defaults else argparse.SUPPRESS,
                                  "help": f"{help_text} (default: {shown})".replace("%", "%%")}
        _, kind = _split_optional(hints[f.name])
        item = _sequence_item(kind)
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif item is not None:
            kwargs["type"] = int_list if item is int else name_list
            kwargs["metavar"] = meta.get("metavar", "N,N" if item is int else "A,B")
        else:
            kwargs["type"] = kind if kind in (int, float, str) else str
            if "choices" in meta:
                kwargs["choices"] = meta["choices"]
            else:
                kwargs["metavar"] = meta.get("metavar", f.name.upper())
        out.append(([flag_name(f.name)], kwargs))
        for old in meta.get("aliases", ()):
            alias = {k: v for k, v in kwargs.items() if k not in ("action", "help", "default")}
            alias.update(default=argparse.SUPPRESS, help=argparse.SUPPRESS, current=flag_name(f.name),
                         action=_DeprecatedFlag)
            if kind is bool:  # an old boolean spelling takes no value and sets True
                alias["nargs"] = 0
            out.append(([flag_name(old)], alias))
    return out


def add_flags(parser: Any, cls: type, **kwargs) -> None:
    """Add :func:`flag_arguments` of ``cls`` to ``parser`` (or an argument group); same keywords."""
    for strings, arguments in flag_arguments(cls, **kwargs):
        parser.add_argument(*strings, **arguments)


__all__ = ["add_flags", "build", "check_value", "check_values", "default_of", "flag_arguments", "flag_name",
           "int_list", "name_list", "renamed", "setting", "upgrade_keys", "validate"]
