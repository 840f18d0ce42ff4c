"""Validators for what bitcl reads back from its own files: ``results.json`` and checkpoint progress.

A file that parses (valid JSON, a readable safetensors header) is not yet a bitcl file:
every value is checked against the contracts of DESIGN.md part 2 (types, ranges,
finiteness, consistent task counts) before anything uses it, and refused with one line
naming the file and the first thing wrong. Sizes are checked before anything is allocated.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence

from bitcl import metrics
from bitcl.errors import BitclError, CheckpointError, DataError

MAX_RESULTS_BYTES = 256 << 20  # a 1,000-task results.json is ~20 MB; far larger is not a bitcl file
MAX_BITS, MIN_BITS = 24, 2
TIMING_PER_TASK = ("train_seconds", "epoch_seconds", "consolidate_seconds", "eval_seconds")
SETTINGS = ("task", "domain", "class", "data")
METRIC_TOLERANCE = 1e-6  # acc/bwt/forgetting are recomputed from the matrix and must agree


def memory_bytes() -> int:
    """Physical memory of this machine (bytes); the ceiling for anything a file asks us to allocate."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def check_fits_memory(nbytes: int, where: str, error: type[BitclError] = DataError) -> None:
    """Refuse (before allocating) a file that claims more data than this machine's memory."""
    limit = memory_bytes()
    if nbytes > limit:
        raise error(f"{where}: claims {nbytes:,} bytes of data, more than this machine's memory "
                    f"({limit:,} bytes); refusing to allocate it")


def read_safetensors(path: Path, key: str, framework: str, what: str) -> tuple[dict[str, str], dict]:
    """Metadata (strings) and tensors of a safetensors file whose metadata must hold ``key``.

    Anything a foreign or damaged file makes safetensors (or torch/numpy) raise becomes one
    CheckpointError naming the file: the bytes are untrusted, so every exception is caught here.
    """
    from safetensors import safe_open
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what}")
    try:
        with safe_open(str(path), framework=framework) as f:
            raw = f.metadata() or {}
            if key not in raw:
                raise CheckpointError(f"{path}: not a bitcl {what} (no {key!r} metadata)")
            return raw, {k: f.get_tensor(k) for k in f.keys()}
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - see the docstring
        reason = (str(error).splitlines() or [type(error).__name__])[0][:160]
        raise CheckpointError(f"{path}: not a readable safetensors {what} ({reason})") from None


def decode_json(raw: dict[str, str], key: str, where: str) -> Any:
    """One JSON metadata entry, or CheckpointError naming it."""
    try:
        return json.loads(raw[key])
    except (ValueError, RecursionError):
        raise CheckpointError(f"{where}: metadata {key!r} is not valid JSON") from None


# -- tiny typed accessors ---------------------------------------------------------------------
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


def timing_map(fields: Fields, key: str, per_task: Optional[int]) -> None:
    """``timing``: lists of non-negative finite seconds; the per-task ones have one entry per task."""
    timing = fields.sub(key, required=False)
    if timing is None:
        return
    for name, values in timing.obj.items():
        length = per_task if name in TIMING_PER_TASK and per_task is not None else None
        number_list(values, f"{timing.path}.{name}", fields.where, fields.error, lo=0.0, length=length)


# -- results.json ---------------------------------------------------------------------------------
def validate_results(obj: Any, where: str, require: Sequence[str] = ()) -> dict:
    """Check a parsed results.json (supervised or RL, DESIGN.md part 2); returns it unchanged."""
    f = Fields(obj, where, DataError)
    for key in require:
        if not f.has(key):
            f.fail(f"missing key {key!r}")
    f.string("method")
    f.string("benchmark", required=False)
    f.string("scenario", required=False)
    f.string("bitcl_version", required=False)
    f.integer("seed", 0, 2 ** 63 - 1, required=False)
    f.sub("config", required=False)
    if f.has("return_matrix"):
        tasks = _validate_rl(f)
    else:
        tasks = _validate_supervised(f)
    f.integer("tasks", tasks, tasks, required=False)
    capacity = f.array("capacity", required=False)
    if capacity is not None:
        number_list(capacity, "capacity", where, DataError, 0.0, 1.0, tasks)
    timing_map(f, "timing", tasks)
    memory = f.sub("memory", required=False)
    if memory is not None:
        memory.integer("params", 0, required=False)
        state = memory.array("state_bytes", required=False)
        if state is not None:
            int_list(state, "memory.state_bytes", where, DataError, lo=0, length=tasks)
    return obj


def _validate_supervised(f: Fields) -> int:
    a = matrix(f.array("accuracy_matrix"), "accuracy_matrix", f.where, DataError, lo=0.0, hi=1.0)
    tasks = len(a)
    if len(a[0]) != tasks:
        f.fail(f"accuracy_matrix must be {tasks} x {tasks} (every task evaluated after every task), "
               f"got {tasks} x {len(a[0])}")
    for key, fn in (("acc", metrics.acc), ("bwt", metrics.bwt), ("forgetting", metrics.forgetting)):
        value = f.number(key)
        if abs(value - fn(a)) > METRIC_TOLERANCE:
            f.fail(f"{key} = {value} disagrees with its accuracy_matrix ({fn(a)})")
    return tasks


def _validate_rl(f: Fields) -> int:
    """``bitcl rl`` results: normalised values, score and forgetting are null for a game whose own
    return did not beat the random policy (``bitcl.rl.results``)."""
    games = f.array("games")
    if not games or not all(isinstance(g, str) for g in games):
        f.fail("games must be a non-empty list of names")
    tasks = len(games)
    matrix(f.array("return_matrix"), "return_matrix", f.where, DataError, tasks, tasks)
    normalised = f.array("normalised_matrix", required=False)
    if normalised is not None:
        cleaned = [[0.0 if v is None else v for v in row] if isinstance(row, list) else row for row in normalised]
        matrix(cleaned, "normalised_matrix", f.where, DataError, tasks, tasks)
    random = f.array("random_returns", required=False)
    if random is not None:
        number_list(random, "random_returns", f.where, DataError, length=tasks)
    for key in ("score", "forgetting"):
        if f.obj.get(key) is not None:
            f.number(key)
    return tasks


def read_results(path: str | os.PathLike, require: Sequence[str] = ()) -> dict:
    """Read and validate a ``results.json`` (a file, or a run directory holding one).

    Raises :class:`DataError` with one line naming the file and what is wrong: missing,
    too large, not JSON, or JSON that is not bitcl results. ``require`` names keys that
    must be present beyond the always-required ones (e.g. ``("config",)`` to rerun).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{path}: no such results file (not a finished bitcl run?)") from None
    except OSError as error:
        raise DataError(f"{path}: unreadable ({error.strerror or error})") from None
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    if size > MAX_RESULTS_BYTES:
        raise DataError(f"{path}: {size:,} bytes is too large for a results.json (limit {MAX_RESULTS_BYTES:,})")
    try:
        obj = json.loads(path.read_bytes())
    except OSError as error:
        raise DataError(f"{path}: unreadable ({error.strerror or error})") from None
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DataError(f"{path}: not valid JSON ({str(error).splitlines()[0][:120]})") from None
    return validate_results(obj, str(path), require)


# -- checkpoint progress (``bitcl_progress`` metadata) ---------------------------------------------
def validate_model_spec(spec: Any, where: str, error: type[BitclError] = CheckpointError,
                        legacy: bool = True) -> dict:
    """The model description stored with checkpoints and packed files, checked strictly
    (:meth:`bitcl.models.spec.ModelSpec.from_json`); returned complete, defaults filled in."""
    from bitcl.models.spec import ModelSpec
    return ModelSpec.from_json(spec, where, error, legacy).to_json()


def check_spec_size(spec: dict, available: int, where: str, error: type[BitclError] = CheckpointError) -> None:
    """Refuse, before building it, a model far larger than the tensors a file holds
    (:meth:`bitcl.models.spec.ModelSpec.check_size`)."""
    from bitcl.models.spec import ModelSpec
    ModelSpec.from_json(spec, where, error, legacy=True).check_size(available, where, error)


PROGRESS_KEYS = ("task", "config", "result", "model")
RESULT_KEYS = ("accuracy_matrix", "capacity", "capacity_per_layer", "timing", "state_bytes", "extra", "data_source")


def strict_keys(f: Fields, allowed: Sequence[str], required: Sequence[str] = ()) -> None:
    """Refuse keys outside ``allowed`` and missing ``required`` ones (every reader reads alike)."""
    unknown = sorted((k for k in f.obj if k not in allowed), key=str)
    if unknown:
        f.fail(f"unknown key {unknown[0]!r} (expected keys: {', '.join(allowed)})")
    for key in required:
        if key not in f.obj:
            f.fail(f"missing key {key!r}")


def validate_progress(progress: Any, where: str, task: Optional[int] = None, legacy: bool = True) -> dict:
    """The ``bitcl_progress`` entry of a checkpoint: results so far, config, and the model description.

    ``task`` (from the file name ``task-<t>.safetensors``) must equal the recorded task; every
    per-task list has exactly ``task + 1`` entries and every matrix row one entry per task.
    Supervised runs record ``{"task", "config", "result", "model"}``; ``bitcl rl`` records its
    result keys (``return_matrix``, ``random_returns``...) at the top level with ``config``.
    """
    error = CheckpointError
    f = Fields(progress, where, error, "bitcl_progress")
    f.sub("config")
    if f.has("return_matrix"):
        return _validate_rl_progress(f, task)
    strict_keys(f, PROGRESS_KEYS, ("task", "config", "result"))
    t = f.integer("task", 0, 1 << 20)
    if task is not None and t != task:
        f.fail(f"records task {t} but the file is named for task {task}")
    spec = None
    if f.has("model"):
        spec = validate_model_spec(f.obj["model"], where, error, legacy)
        _check_run_config(f.obj["config"], where)
    result = f.sub("result")
    strict_keys(result, RESULT_KEYS, ("accuracy_matrix",))
    done = t + 1
    columns = spec.get("tasks") if spec else None
    rows = matrix(result.array("accuracy_matrix"), "bitcl_progress.result.accuracy_matrix", where, error,
                  rows=done, columns=columns, lo=0.0, hi=1.0)
    if columns is None and len(rows[0]) < done:
        result.fail(f"accuracy_matrix rows have {len(rows[0])} entries for {done} tasks trained")
    _per_task_lists(result, done)
    per_layer = result.array("capacity_per_layer", required=False)
    if per_layer:
        if len(per_layer) != done:
            result.fail(f"capacity_per_layer has {len(per_layer)} entries, expected {done}")
        for i, layer in enumerate(per_layer):
            fields = Fields(layer, where, error, f"bitcl_progress.result.capacity_per_layer[{i}]")
            for name in fields.obj:
                fields.number(name, 0.0, 1.0)
    result.sub("extra", required=False)
    return progress


def _check_run_config(config: dict, where: str) -> None:
    """A ``bitcl run`` checkpoint's config must be a valid RunConfig (what ``--resume`` and
    ``analyze bits`` rebuild the run from), so every reader accepts or refuses the same file."""
    from bitcl.config import RunConfig
    try:
        RunConfig.from_dict(config, "bitcl_progress.config")
    except BitclError as error:
        raise CheckpointError(f"{where}: {error}") from None


def _per_task_lists(f: Fields, done: int) -> None:
    """capacity (fractions), timing (seconds) and state_bytes: one entry per finished task."""
    capacity = f.array("capacity", required=False)
    if capacity:
        number_list(capacity, f"{f.path}.capacity", f.where, f.error, 0.0, 1.0, done)
    timing_map(f, "timing", done)
    state = f.array("state_bytes", required=False)
    if state is not None:
        int_list(state, f"{f.path}.state_bytes", f.where, f.error, lo=0, length=done)


def _validate_rl_progress(f: Fields, task: Optional[int]) -> dict:
    rows = f.array("return_matrix")
    done = len(rows)
    if task is not None and done != task + 1:
        f.fail(f"return_matrix has {done} rows but the file is named for game {task}")
    games = f.sub("config").array("games", required=False)
    matrix(rows, "bitcl_progress.return_matrix", f.where, f.error, rows=done,
           columns=len(games) if games is not None else None)
    random = f.array("random_returns", required=False)
    if random is not None:
        number_list(random, "bitcl_progress.random_returns", f.where, f.error,
                    length=len(games) if games is not None else None)
    _per_task_lists(f, done)
    f.sub("extra", required=False)
    return f.obj
