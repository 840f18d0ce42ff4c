"""A sweep specification (TOML) and its expansion into ``bitcl run`` command lines.

The spec's keys are ``bitcl run``'s settings (``benchmark = "split-mnist"``, ``tasks = 2``) and
the methods' options (``c = 100``). A list value spans the grid: ``methods = ["finetune", "ewc"]``,
``seeds = [0, 1, 2]``, ``c = [1, 10, 100]`` (settings whose value is itself a list, such as
``hidden``, span the grid with a list of lists: ``hidden = [[400], [400, 400]]``). A method option
applies to the methods that have it; the others run once without it.

Each run is built as the argument list of ``bitcl run`` and checked by the CLI's own parser
(``bitcl.run_args.config_from_args``), so a sweep accepts exactly what ``bitcl run`` accepts.
Runs are named from their settings: ``split-mnist/ewc/c=100/seed=1``.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from bitcl.errors import ConfigError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 (the `tomli` dependency)
    import tomli as tomllib

PLURALS = {"methods": "method", "seeds": "seed", "benchmarks": "benchmark", "scenarios": "scenario"}
# settings the sweep owns: each run gets its own folder and runs quietly
OWNED = ("out", "overwrite", "resume", "quiet", "config", "method_options")
PATH_SETTINGS = ("data", "pretrained")  # relative paths are read from the spec file's folder
SWEEP_KEYS = {"retries": int, "backend": str, "workers": int, "threads": int}
TABLES = ("select", "ray", "slurm")
BACKENDS = ("local", "ray", "slurm")
# +1: higher is better. min_diagonal: the lowest accuracy on a task just after learning it (the
# accuracy matrix's diagonal), for choosing how a backbone learns regardless of later forgetting
METRICS = {"acc": +1, "bwt": +1, "forgetting": -1, "min_diagonal": +1}
SAMPLERS = ("grid", "optuna")
OPTUNA_KEYS = ("sampler", "n_trials", "low", "high", "log", "sampler_seed")


def run_fields() -> dict[str, dataclasses.Field]:
    from bitcl.config import RunConfig
    return {f.name: f for f in dataclasses.fields(RunConfig) if f.name not in OWNED}


def _list_valued(f: dataclasses.Field) -> bool:
    return "list[" in str(f.type)


def _method_options(method: str) -> set[str]:
    from bitcl.strategies import get_strategy
    return {f.name for f in dataclasses.fields(get_strategy(method).Options)}


@dataclass(frozen=True)
class Select:
    """Choose ``option`` among ``values`` by ``metric`` on a validation hold-out of the training split.

    ``option`` and ``values`` may be per method (``{ewc = "c", anpyc = "lam"}``,
    ``{ewc = [100, 1000], si = [2, 20]}``): methods strengths are on different scales. Several
    settings chosen together are a list of names with a list of candidates, each a list of values:
    ``option = ["lr", "batch_size"]``, ``values = [[3e-3, 64], [6e-3, 32]]``."""

    option: Any  # str, tuple of str (chosen together), or method -> either
    values: Any  # tuple of candidates, or method -> tuple; None: a range (low, high) for the optuna sampler
    metric: str = "acc"
    fraction: float = 0.1
    seeds: Optional[tuple[int, ...]] = None  # None: the sweep's seeds
    extend: int = 0  # while the best value is on an edge of the grid, add one beyond it (at most this many per side)
    extend_factor: float = 10.0
    sampler: str = "grid"  # "grid": every candidate; "optuna": n_trials candidates proposed by Optuna's TPE sampler
    n_trials: int = 0
    low: Any = None  # optuna range: a number, or method -> number
    high: Any = None
    log: bool = True  # optuna range on a log scale (strengths span decades)
    sampler_seed: int = 0

    def option_for(self, method: str):
        """The option chosen for ``method``, or None when nothing is chosen for it."""
        option = self.option.get(method) if isinstance(self.option, dict) else self.option
        if option is None or not all(applies(o, method) for o in names_of(option)):
            return None
        if isinstance(self.values, dict) and method not in self.values:
            return None
        return option

    def values_for(self, method: str) -> list:
        return list(self.values[method] if isinstance(self.values, dict) else self.values)

    def range_for(self, method: str) -> tuple:
        """The optuna sampler's (low, high) for ``method``."""
        pick = (lambda v: v[method] if isinstance(v, dict) else v)
        return pick(self.low), pick(self.high)

    @property
    def options(self) -> list[str]:
        """Every setting or option name chosen, for any method."""
        chosen = self.option.values() if isinstance(self.option, dict) else [self.option]
        return sorted({n for o in chosen for n in names_of(o)})

    def as_dict(self) -> dict:
        values = (None if self.values is None else {m: list(v) for m, v in self.values.items()}
                  if isinstance(self.values, dict) else list(self.values))
        record = {"option": self.option, "values": values, "metric": self.metric, "split": "validation",
                  "fraction": self.fraction, "seeds": None if self.seeds is None else list(self.seeds),
                  "extend": self.extend, "extend_factor": self.extend_factor, "sampler": self.sampler}
        if self.sampler == "optuna":
            record.update(n_trials=self.n_trials, low=self.low, high=self.high, log=self.log,
                          sampler_seed=self.sampler_seed)
        return record


def names_of(option) -> tuple[str, ...]:
    """The names an option of [select] sets: one, or several chosen together."""
    return tuple(option) if isinstance(option, (list, tuple)) else (option,)


def assign(point: dict, option, value) -> dict:
    """``point`` with the candidate ``value`` of ``option`` (one name, or several together)."""
    if isinstance(option, tuple):
        return {**point, **dict(zip(option, value))}
    return {**point, option: value}


@dataclass
class Spec:
    """A parsed sweep specification."""

    path: Path
    grid: dict[str, list]  # key -> the values it takes (one value: a fixed setting)
    retries: int = 1
    backend: str = "local"
    workers: Optional[int] = None
    threads: Optional[int] = None
    select: Optional[Select] = None
    ray: dict = field(default_factory=dict)
    slurm: dict = field(default_factory=dict)

    @property
    def varying(self) -> list[str]:
        """The keys with more than one value, in the spec's order (they name the runs)."""
        return [k for k, v in self.grid.items() if len(v) > 1]


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its settings, its name (a relative folder) and its ``bitcl run`` flags."""

    name: str
    settings: dict  # run settings, method options under "method_options"
    group: str  # the name without the seed: runs that differ only in seed share it
    benchmark: str

    def argv(self, out: Path) -> list[str]:
        """``bitcl run`` flags for this run written into ``out``."""
        args = []
        opts = self.settings.get("method_options", {})
        for key, value in [*((k, v) for k, v in self.settings.items() if k != "method_options"), *opts.items()]:
            args += flag(key, value)
        return args + ["--out", str(out), "--quiet"]


def flag(key: str, value: Any) -> list[str]:
    """``--key value`` as ``bitcl run`` parses it (booleans: ``--key`` / ``--no-key``; lists: commas)."""
    name = "--" + key.replace("_", "-")
    if isinstance(value, bool):
        return [name] if value else ["--no-" + key.replace("_", "-")]
    if isinstance(value, (list, tuple)):
        return [name, ",".join(str(v) for v in value)]
    if isinstance(value, float):
        return [name, repr(value)]
    return [name, str(value)]


def format_value(value: Any) -> str:
    """A value as it appears in a run's name: file-name safe, distinct for distinct values."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, tuple)):
        text = "-".join(format_value(v) for v in value)
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._+=-]+", "_", text).strip("_") or "_"


def nice(value: float) -> float:
    """Round a product of decades to 6 significant digits (0.1 * 0.1 is 0.010000000000000002)."""
    return float(f"{value:.6g}")


# -- parsing -----------------------------------------------------------------------------------
def load_spec(path: str | os.PathLike) -> Spec:
    """Read and check a sweep spec; ConfigError names the file and the key at fault."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; give the sweep's TOML file") from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    return parse_spec(raw, path)


def parse_spec(raw: dict, path: Path) -> Spec:
    where = str(path)
    fields = run_fields()
    spec = Spec(path=path, grid={})
    for key, value in raw.items():
        if key in TABLES:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [{key}] must be a table")
            continue
        if key in SWEEP_KEYS:
            if not isinstance(value, SWEEP_KEYS[key]) or isinstance(value, bool):
                raise ConfigError(f"{where}: {key} must be {SWEEP_KEYS[key].__name__}, got {value!r}")
            setattr(spec, key, value)
            continue
        if isinstance(value, dict):
            raise ConfigError(f"{where}: unknown table [{key}]; tables are {', '.join(TABLES)}")
        name = PLURALS.get(key, key)
        if name in OWNED:
            raise ConfigError(f"{where}: {key} is set by the sweep (each run gets its own folder under --out)")
        if name in spec.grid:
            raise ConfigError(f"{where}: {name} is given twice ({key} and {name})")
        spec.grid[name] = _values(name, value, fields.get(name), where)
    if spec.retries < 0:
        raise ConfigError(f"{where}: retries must be >= 0, got {spec.retries}")
    if spec.backend not in BACKENDS:
        raise ConfigError(f"{where}: backend must be one of {', '.join(BACKENDS)}, got {spec.backend!r}")
    for key in ("workers", "threads"):
        if getattr(spec, key) is not None and getattr(spec, key) < 1:
            raise ConfigError(f"{where}: {key} must be >= 1, got {getattr(spec, key)}")
    spec.ray, spec.slurm = dict(raw.get("ray", {})), dict(raw.get("slurm", {}))
    for key in PATH_SETTINGS:
        if key in spec.grid:
            spec.grid[key] = [v if not isinstance(v, str) or os.path.isabs(v) else str((path.parent / v).resolve())
                              for v in spec.grid[key]]
    spec.grid.setdefault("method", [_default("method")])
    spec.grid.setdefault("benchmark", [_default("benchmark")])
    spec.grid.setdefault("seed", [_default("seed")])
    _check_options(spec, fields, where)
    if "select" in raw:
        spec.select = _parse_select(raw["select"], spec, where)
    return spec


def _default(name: str):
    from bitcl.config import RunConfig
    return getattr(RunConfig(), name)


def _values(name: str, value: Any, f: Optional[dataclasses.Field], where: str) -> list:
    listed = f is not None and _list_valued(f)
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where}: {name} is an empty list (nothing to run)")
        if listed and not all(isinstance(v, list) for v in value):
            return [value]  # hidden = [400, 400] is one value
        values = value
    else:
        values = [value]
    for v in values:
        if isinstance(v, dict) or (isinstance(v, list) and not listed):
            raise ConfigError(f"{where}: {name} = {v!r}: expected a value or a list of values")
    if len({format_value(v) for v in values}) != len(values):
        raise ConfigError(f"{where}: {name} lists the same value twice: {values!r}")
    return list(values)


def _check_options(spec: Spec, fields: dict, where: str) -> None:
    from bitcl.strategies import strategy_names
    known = set(strategy_names())
    unknown = [m for m in spec.grid["method"] if m not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown method {unknown[0]!r}; choose from {', '.join(sorted(known))}")
    for key in spec.grid:
        if key not in fields and not any(key in _method_options(m) for m in spec.grid["method"]):
            raise ConfigError(f"{where}: {key} is neither a `bitcl run` setting nor an option of "
                              f"{', '.join(spec.grid['method'])}")


def _parse_select(raw: dict, spec: Spec, where: str) -> Select:
    allowed = {"option", "values", "metric", "split", "fraction", "seeds", "extend", "extend_factor", *OPTUNA_KEYS}
    extra = sorted(set(raw) - allowed)
    if extra:
        raise ConfigError(f"{where}: [select] has unknown keys {extra}; allowed: {', '.join(sorted(allowed))}")
    sampler = raw.get("sampler", "grid")
    if sampler not in SAMPLERS:
        raise ConfigError(f"{where}: [select] sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if sampler == "grid" and set(raw) & set(OPTUNA_KEYS) - {"sampler"}:
        raise ConfigError(f"{where}: [select] {', '.join(sorted(set(raw) & set(OPTUNA_KEYS) - {'sampler'}))} "
                          "apply only with sampler = \"optuna\"")
    option, values = raw.get("option"), raw.get("values")
    methods = spec.grid["method"]
    if isinstance(option, list):
        option = tuple(option)
    elif isinstance(option, dict):
        option = {m: tuple(o) if isinstance(o, list) else o for m, o in option.items()}
    options = option if isinstance(option, dict) else {m: option for m in methods}
    if not options or not all(names_of(o) and all(isinstance(n, str) and n for n in names_of(o))
                              for o in options.values()):
        raise ConfigError(f"{where}: [select] option must name a setting or method option, a list of them chosen "
                          "together, or map methods to one")
    per_method = values if isinstance(values, dict) else {m: values for m in methods}
    for table in (options, per_method):
        strangers = sorted(set(table) - set(methods))
        if strangers:
            raise ConfigError(f"{where}: [select] names methods not in the sweep: {strangers}")
    fields = run_fields()
    for name in {n for o in options.values() for n in names_of(o)}:
        if name in spec.grid:
            raise ConfigError(f"{where}: [select] option {name!r} is also a key of the grid; give its values in "
                              "[select] only")
        if name not in fields and not any(name in _method_options(m) for m in methods):
            raise ConfigError(f"{where}: [select] option {name!r} is neither a `bitcl run` setting nor an option of "
                              f"{', '.join(methods)}")
    if isinstance(option, dict):
        for method, o in options.items():
            for name in names_of(o):
                if not applies(name, method):
                    raise ConfigError(f"{where}: [select] option {name!r} is not an option of method {method!r}")
    if sampler == "optuna":
        values, per_method = _parse_optuna(raw, options, values, methods, where)
    checked = {}
    for method, vals in per_method.items():
        if not isinstance(vals, list) or len(vals) < 2:
            raise ConfigError(f"{where}: [select] values must list at least two candidates"
                              + (f" (method {method})" if isinstance(values, dict) else ""))
        o = options.get(method)
        if isinstance(o, tuple):
            if not all(isinstance(v, list) and len(v) == len(o) for v in vals):
                raise ConfigError(f"{where}: [select] option {list(o)} is chosen jointly: each candidate must list "
                                  f"{len(o)} values")
            for i, name in enumerate(o):
                for v in vals:
                    _values(name, [v[i]], fields.get(name), where)
            if len({repr(v) for v in vals}) != len(vals):
                raise ConfigError(f"{where}: [select] values lists the same candidate twice")
            checked[method] = tuple(tuple(v) for v in vals)
        else:
            checked[method] = tuple(_values(o or "values", vals, fields.get(o), where))
    if sampler != "optuna" or values is not None:
        values = checked if isinstance(values, dict) else next(iter(checked.values()))
    metric = raw.get("metric", "acc")
    if metric not in METRICS:
        raise ConfigError(f"{where}: [select] metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if raw.get("split", "validation") != "validation":
        raise ConfigError(f"{where}: [select] split must be \"validation\" (choosing on the test split would "
                          "report a biased score)")
    fraction = raw.get("fraction", 0.1)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 0.5:
        raise ConfigError(f"{where}: [select] fraction must lie in (0, 0.5], got {fraction!r}")
    seeds = raw.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not seeds
                              or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise ConfigError(f"{where}: [select] seeds must list non-negative integers, got {seeds!r}")
    extend = raw.get("extend", 0)
    if isinstance(extend, bool) or not isinstance(extend, int) or extend < 0:
        raise ConfigError(f"{where}: [select] extend must be a non-negative integer, got {extend!r}")
    factor = raw.get("extend_factor", 10.0)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1 or not math.isfinite(factor):
        raise ConfigError(f"{where}: [select] extend_factor must be a number > 1, got {factor!r}")
    flat = [v for vs in checked.values() for v in vs]
    if extend and not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in flat):
        # (a joint candidate is a tuple, so this also refuses extend with options chosen together)
        raise ConfigError(f"{where}: [select] extend needs positive numeric values")
    if sampler == "optuna" and extend:
        raise ConfigError(f"{where}: [select] extend applies to the grid; with sampler = \"optuna\" widen low/high")
    return Select(option, values, metric, float(fraction), None if seeds is None else tuple(seeds), extend,
                  float(factor), sampler, raw.get("n_trials", 0), raw.get("low"), raw.get("high"),
                  raw.get("log", True), raw.get("sampler_seed", 0))


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _parse_optuna(raw: dict, options: dict, values, methods: list, where: str) -> tuple:
    """Check the optuna sampler's keys; returns (values, the candidates to check per method: {} for a range)."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ConfigError(f"{where}: [select] sampler = \"optuna\" needs Optuna: pip install 'bitcl[sweep]'") from None
    if any(isinstance(o, tuple) for o in options.values()):
        raise ConfigError(f"{where}: [select] sampler = \"optuna\" chooses one option per method, not several "
                          "together")
    n_trials = raw.get("n_trials")
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(f"{where}: [select] n_trials must be a positive integer with sampler = \"optuna\", got "
                          f"{n_trials!r}")
    seed = raw.get("sampler_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{where}: [select] sampler_seed must be a non-negative integer, got {seed!r}")
    log = raw.get("log", True)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: [select] log must be true or false, got {log!r}")
    has_range = "low" in raw or "high" in raw
    if values is not None:
        if has_range:
            raise ConfigError(f"{where}: [select] give either values (candidates to choose among) or low and high "
                              "(a range), not both")
        listed = [v for vs in (values.values() if isinstance(values, dict) else [values]) for v in
                  (vs if isinstance(vs, list) else [vs])]
        if not all(isinstance(v, (bool, int, float, str)) for v in listed):
            raise ConfigError(f"{where}: [select] sampler = \"optuna\" chooses among single values (numbers, "
                              "strings, booleans), not lists")
        return values, (values if isinstance(values, dict) else {m: values for m in methods})
    low, high = raw.get("low"), raw.get("high")
    per_low = low if isinstance(low, dict) else {m: low for m in methods}
    per_high = high if isinstance(high, dict) else {m: high for m in methods}
    for table in (per_low, per_high):
        strangers = sorted(set(table) - set(methods))
        if strangers:
            raise ConfigError(f"{where}: [select] names methods not in the sweep: {strangers}")
    for method in options:
        lo, hi = per_low.get(method), per_high.get(method)
        if not (_is_number(lo) and _is_number(hi)):
            raise ConfigError(f"{where}: [select] sampler = \"optuna\" needs values, or numbers low and high"
                              + (f" (method {method})" if isinstance(low, dict) or isinstance(high, dict) else "")
                              + f", got low={lo!r}, high={hi!r}")
        if not lo < hi:
            raise ConfigError(f"{where}: [select] low must be below high, got low={lo!r}, high={hi!r}")
        if log and lo <= 0:
            raise ConfigError(f"{where}: [select] log = true needs low > 0, got low={lo!r}")
    return None, {}


# -- expansion ---------------------------------------------------------------------------------
def applies(key: str, method: str) -> bool:
    """Whether ``key`` is a run setting, or an option ``method`` has."""
    return key in run_fields() or key in _method_options(method)


def make_run(values: dict, varying: list[str], prefix: str = "") -> RunSpec:
    """A RunSpec from one point of the grid (``values``: key -> value, already restricted to the method)."""
    fields = run_fields()
    method = values["method"]
    settings = {k: v for k, v in values.items() if k in fields}
    options = {k: v for k, v in values.items() if k not in fields}
    if options:
        settings["method_options"] = options
    parts = [format_value(values["benchmark"]), format_value(method)]
    parts += [f"{k}={format_value(values[k])}" for k in varying
              if k not in ("benchmark", "method", "seed") and k in values]
    group = "/".join(parts)
    name = group + f"/seed={values['seed']}"
    return RunSpec((prefix + "/" if prefix else "") + name, settings, group, values["benchmark"])


def expand(spec: Spec, extra: Optional[dict] = None, varying_extra: tuple = (), prefix: str = "",
           seeds: Optional[tuple] = None) -> list[RunSpec]:
    """Every run of the grid (``extra``: fixed values added to each point, e.g. a selected option)."""
    grid = dict(spec.grid)
    if seeds is not None:
        grid["seed"] = list(seeds)
    keys = list(grid)
    varying = spec.varying + [k for k in varying_extra if k not in spec.varying]
    runs, seen = [], set()
    for combo in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, combo))
        point.update(extra or {})
        point = {k: v for k, v in point.items() if applies(k, point["method"])}
        run = make_run(point, varying, prefix)
        if run.name not in seen:
            seen.add(run.name)
            runs.append(run)
    return runs


def check_runs(runs: list[RunSpec], out: Path) -> None:
    """Parse every run's flags with ``bitcl run``'s own parser before anything starts."""
    from bitcl.run_args import config_from_args
    from bitcl.errors import BitclError
    for run in runs:
        try:
            config_from_args(run.argv(out / run.name)).resolved()
        except BitclError as error:
            raise ConfigError(f"run {run.name}: {str(error).splitlines()[0]}") from None
