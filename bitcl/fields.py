"""Typed reading of JSON-like values (results.json, checkpoint metadata, model descriptions):
one :class:`Fields` view per object, checks that name the file and the field, raising the
caller's error class. Below every reader (``bitcl.train.validate``, ``bitcl.models.spec``),
so it depends on nothing of bitcl but its errors.
"""
from __future__ import annotations

import math
from typing import Any, Optional

from bitcl.errors import BitclError


class Fields:
    """Typed reads from one JSON object; every failure names ``where`` and the key path."""

    def __init__(self, obj: Any, where: str, error: type[BitclError], path: str = ""):
        self.where, self.error, self.path = where, error, path
        if not isinstance(obj, dict):
            self.fail(f"expected a JSON object, got {_kind(obj)}")
        self.obj = obj

    def fail(self, message: str):
        prefix = f"{self.path}: " if self.path else ""
        raise self.error(f"{self.where}: {prefix}{message}")

    def has(self, key: str) -> bool:
        return key in self.obj

    def _get(self, key: str, required: bool):
        """The value at ``key``; ``_ABSENT`` when an optional key is missing (JSON null is a value)."""
        if key not in self.obj:
            if required:
                self.fail(f"missing key {key!r}")
            return _ABSENT
        return self.obj[key]

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def sub(self, key: str, required: bool = True) -> Optional["Fields"]:
        value = self._get(key, required)
        return None if value is _ABSENT else Fields(value, self.where, self.error, self._name(key))

    def integer(self, key: str, lo: Optional[int] = None, hi: Optional[int] = None, required: bool = True):
        value = self._get(key, required)
        return None if value is _ABSENT else check_int(value, self._name(key), lo, hi, self.where, self.error)

    def number(self, key: str, lo: float = -math.inf, hi: float = math.inf, required: bool = True):
        value = self._get(key, required)
        return None if value is _ABSENT else check_number(value, self._name(key), lo, hi, self.where, self.error)

    def string(self, key: str, choices: Optional[Sequence[str]] = None, required: bool = True):
        value = self._get(key, required)
        if value is _ABSENT:
            return None
        if not isinstance(value, str):
            self.fail(f"{key!r} must be a string, got {_kind(value)}")
        if choices is not None and value not in choices:
            self.fail(f"{key!r} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def boolean(self, key: str, required: bool = True):
        value = self._get(key, required)
        if value is _ABSENT:
            return None
        if not isinstance(value, bool):
            self.fail(f"{key!r} must be true or false, got {_kind(value)}")
        return value

    def array(self, key: str, required: bool = True, length: Optional[int] = None) -> Optional[list]:
        value = self._get(key, required)
        if value is _ABSENT:
            return None
        if not isinstance(value, list):
            self.fail(f"{key!r} must be a list, got {_kind(value)}")
        if length is not None and len(value) != length:
            self.fail(f"{key!r} has {len(value)} entries, expected {length}")
        return value


_ABSENT = object()


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def check_int(value: Any, name: str, lo: Optional[int], hi: Optional[int], where: str,
              error: type[BitclError]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{where}: {name} must be an integer, got {_kind(value)}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
        raise error(f"{where}: {name} must lie in {span}, got {value}")
    return value


def check_number(value: Any, name: str, lo: float, hi: float, where: str, error: type[BitclError]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{where}: {name} must be a number, got {_kind(value)}")
    if not math.isfinite(value):
        raise error(f"{where}: {name} must be finite, got {value}")
    if not lo <= value <= hi:
        raise error(f"{where}: {name} must lie in [{lo:g}, {hi:g}], got {value}")
    return float(value)


def number_list(values: Any, name: str, where: str, error: type[BitclError], lo: float = -math.inf,
                hi: float = math.inf, length: Optional[int] = None) -> list[float]:
    if not isinstance(values, list):
        raise error(f"{where}: {name} must be a list, got {_kind(values)}")
    if length is not None and len(values) != length:
        raise error(f"{where}: {name} has {len(values)} entries, expected {length}")
    return [check_number(v, f"{name}[{i}]", lo, hi, where, error) for i, v in enumerate(values)]


def int_list(values: Any, name: str, where: str, error: type[BitclError], lo: Optional[int] = None,
             hi: Optional[int] = None, length: Optional[int] = None, nonempty: bool = False) -> list[int]:
    if not isinstance(values, list):
        raise error(f"{where}: {name} must be a list, got {_kind(values)}")
    if length is not None and len(values) != length:
        raise error(f"{where}: {name} has {len(values)} entries, expected {length}")
    if nonempty and not values:
        raise error(f"{where}: {name} must not be empty")
    return [check_int(v, f"{name}[{i}]", lo, hi, where, error) for i, v in enumerate(values)]


def matrix(values: Any, name: str, where: str, error: type[BitclError], rows: Optional[int] = None,
           columns: Optional[int] = None, lo: float = -math.inf, hi: float = math.inf) -> list[list[float]]:
    """A list of equally long lists of finite numbers (``rows`` x ``columns`` when given)."""
    if not isinstance(values, list) or not values:
        raise error(f"{where}: {name} must be a non-empty list of rows")
    if rows is not None and len(values) != rows:
        raise error(f"{where}: {name} has {len(values)} rows, expected {rows}")
    width = columns if columns is not None else (len(values[0]) if isinstance(values[0], list) else 0)
    return [number_list(row, f"{name}[{i}]", where, error, lo, hi, width) for i, row in enumerate(values)]
