"""Validators for what bitcl reads back from its own files: ``results.json`` and checkpoint progress.

A file that parses (valid JSON, a readable safetensors header) is not yet a bitcl file:
every value is checked against the contracts in docs/contracts/ (types, ranges,
finiteness, consistent task counts) before anything uses it, and refused with one line
naming the file and the first thing wrong. Sizes are checked before anything is allocated.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence

from bitcl import metrics
from bitcl.errors import BitclError, CheckpointError, DataError
from bitcl.fields import Fields, check_int, check_number, int_list, matrix, number_list  # noqa: F401

_HEX64 = re.compile(r"[0-9a-f]{64}")

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
    """Check a parsed results.json (supervised or RL, docs/contracts/results.md, rl-results.md); returns it unchanged."""
    f = Fields(obj, where, DataError)
    for key in require:
        if not f.has(key):
            f.fail(f"missing key {key!r}")
    f.string("method")
    f.string("benchmark", required=False)
    f.string("scenario", required=False)
    f.string("bitcl_version", required=False)
    digest = f.string("code_digest", required=False)
    if digest is not None and not _HEX64.fullmatch(digest):
        f.fail(f"code_digest must be 64 lowercase hex digits, got {digest[:80]!r}")
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
RESULT_KEYS = ("accuracy_matrix", "capacity", "capacity_per_layer", "timing", "state_bytes", "extra", "data_source",
               "chance", "test_samples")
# bitcl.rl.results.RLResult.PROGRESS_KEYS, and random_returns of bitcl 0.2
RL_RESULT_KEYS = ("random_episodes", "episode_returns", "return_matrix", "capacity", "timing", "state_bytes",
                  "train_curves", "steps_trained", "extra", "random_returns")


def _task_facts(f: Fields, done: int) -> None:
    """Per task: the chance level its head allows (0..1) and its test-set size (the not-learned check)."""
    chance = f.array("chance", required=False)
    if chance is not None:
        number_list(chance, f"{f.path}.chance", f.where, f.error, 0.0, 1.0)
    samples = f.array("test_samples", required=False)
    if samples is not None:
        int_list(samples, f"{f.path}.test_samples", f.where, f.error, lo=0)


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
    Every driver records ``{"task", "config", "result"[, "model"]}`` (``bitcl.train.runner``);
    ``bitcl rl``'s result holds ``return_matrix``, ``random_returns``... Older ``bitcl rl``
    checkpoints kept those result keys at the top level beside ``config``; they are still read.
    """
    error = CheckpointError
    f = Fields(progress, where, error, "bitcl_progress")
    f.sub("config")
    if f.has("return_matrix") and not f.has("result"):
        return _validate_legacy_rl_progress(f, task)
    strict_keys(f, PROGRESS_KEYS, ("task", "config", "result"))
    t = f.integer("task", 0, 1 << 20)
    if task is not None and t != task:
        f.fail(f"records task {t} but the file is named for task {task}")
    spec = None
    if f.has("model"):
        spec = validate_model_spec(f.obj["model"], where, error, legacy)
        _check_run_config(f.obj["config"], where)
    result = f.sub("result")
    done = t + 1
    if result.has("return_matrix"):
        strict_keys(result, RL_RESULT_KEYS, ("return_matrix",))
        _validate_rl_result(result, done, f.sub("config").array("games", required=False))
        return progress
    strict_keys(result, RESULT_KEYS, ("accuracy_matrix",))
    _task_facts(result, done)
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


def _validate_legacy_rl_progress(f: Fields, task: Optional[int]) -> dict:
    """A ``bitcl rl`` checkpoint of the older shape: result keys beside ``config``."""
    done = len(f.array("return_matrix"))
    if task is not None and done != task + 1:
        f.fail(f"return_matrix has {done} rows but the file is named for game {task}")
    _validate_rl_result(f, done, f.sub("config").array("games", required=False))
    return f.obj


def _validate_rl_result(f: Fields, done: int, games: Optional[list]) -> None:
    """``bitcl rl``'s result so far: ``done`` rows of returns, one per game each, random returns
    per game, per-game lists (``steps_trained`` too, when recorded) of ``done`` entries."""
    rows = f.array("return_matrix")
    matrix(rows, f"{f.path}.return_matrix", f.where, f.error, rows=done,
           columns=len(games) if games is not None else None)
    random = f.array("random_returns", required=False)
    if random is not None:
        number_list(random, f"{f.path}.random_returns", f.where, f.error,
                    length=len(games) if games is not None else None)
    steps = f.array("steps_trained", required=False)
    if steps is not None:
        int_list(steps, f"{f.path}.steps_trained", f.where, f.error, lo=1, length=done)
    # bitcl 0.3: the evaluation episodes behind the means (a game's list per entry)
    random_eps = f.array("random_episodes", required=False)
    if random_eps is not None:
        if games is not None and len(random_eps) != len(games):
            f.fail(f"random_episodes has {len(random_eps)} entries for {len(games)} games")
        for j, eps in enumerate(random_eps):
            number_list(eps, f"{f.path}.random_episodes[{j}]", f.where, f.error)
    episodes = f.array("episode_returns", required=False)
    if episodes is not None:
        if len(episodes) != done:
            f.fail(f"episode_returns has {len(episodes)} rows for {done} games trained")
        for i, row in enumerate(episodes):
            if not isinstance(row, list) or (games is not None and len(row) != len(games)):
                f.fail(f"episode_returns[{i}] must hold one list per game")
            for j, eps in enumerate(row):
                number_list(eps, f"{f.path}.episode_returns[{i}][{j}]", f.where, f.error)
    _per_task_lists(f, done)
    f.sub("extra", required=False)
