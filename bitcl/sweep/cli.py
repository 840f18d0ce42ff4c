"""The command lines ``bitcl sweep SPEC.toml --out DIR`` and ``bitcl run --seeds 0,1,2 --out DIR``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from bitcl.errors import ConfigError

EXIT_RUNS_FAILED = 1


def cmd_sweep(argv: Sequence[str]) -> int:
    from bitcl.parsing import Parser
    from bitcl.sweep.runner import run_sweep
    from bitcl.sweep.spec import load_spec
    p = Parser(prog="bitcl sweep", description="Run a grid of `bitcl run` settings (docs/sweeps.md).")
    p.add_argument("spec", help="TOML file: bitcl run settings; list values span the grid")
    p.add_argument("--out", required=True, help="sweep directory: one run folder per run, summary.json/.md, plots/")
    p.add_argument("--backend", choices=("local", "ray", "slurm"), default=None, help="overrides the spec's backend")
    p.add_argument("--workers", type=int, default=None, help="runs at a time (local; default: one per core)")
    p.add_argument("--retries", type=int, default=None, help="attempts after a failure (default: the spec's, else 1)")
    args = p.parse_args(argv)
    spec = load_spec(args.spec)
    for key in ("backend", "workers", "retries"):
        value = getattr(args, key)
        if value is not None:
            if key in ("workers", "retries") and value < (1 if key == "workers" else 0):
                raise ConfigError(f"--{key} must be >= {1 if key == 'workers' else 0}, got {value}")
            setattr(spec, key, value)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    summary = run_sweep(spec, out.resolve())
    print((out / "summary.md").read_text(), end="")
    return _failures(summary, out, "sweep")


def _failures(summary: dict, out: Path, command: str) -> int:
    failed = summary["failed"]
    if not failed:
        return 0
    print(f"bitcl {command}: error: {len(failed)} run(s) failed, first {failed[0]['name']}: {failed[0]['error']} "
          f"(all in {out / 'summary.json'})", file=sys.stderr)
    return EXIT_RUNS_FAILED


def split_seeds(argv: Sequence[str]) -> tuple[list[int], list[str]]:
    """(the seeds of ``--seeds 0,1,2``, the other flags)."""
    rest, seeds, i = [], None, 0
    argv = list(argv)
    while i < len(argv):
        arg = argv[i]
        if arg == "--seeds" or arg.startswith("--seeds="):
            if seeds is not None:
                raise ConfigError("--seeds is given twice")
            if "=" in arg:
                text = arg.split("=", 1)[1]
            elif i + 1 < len(argv):
                text, i = argv[i + 1], i + 1
            else:
                raise ConfigError("--seeds needs a value, e.g. --seeds 0,1,2")
            try:
                seeds = [int(s) for s in text.split(",") if s.strip()]
            except ValueError:
                raise ConfigError(f"--seeds: expected comma-separated integers, got {text!r}") from None
            if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
                raise ConfigError(f"--seeds: expected distinct non-negative integers, got {text!r}")
        else:
            rest.append(arg)
        i += 1
    return seeds or [], rest


def run_seeds(argv: Sequence[str]) -> int:
    """``bitcl run ... --seeds 0,1,2 --out DIR``: each seed into DIR/seed-N/, then mean ± 95 % interval."""
    from bitcl.run_args import config_from_args
    from bitcl.sweep.runner import Sweep
    from bitcl.sweep.spec import RunSpec, Spec
    seeds, rest = split_seeds(argv)
    config = config_from_args(rest)  # every other flag, checked as `bitcl run` checks it
    if config.out is None:
        raise ConfigError("--seeds needs --out DIR (each seed runs into DIR/seed-N/)")
    if any(a == "--seed" or a.startswith("--seed=") for a in rest):
        raise ConfigError("--seed and --seeds exclude each other")
    out = Path(config.out).resolve()
    base = [a for a in _without_out(rest)]
    runs = [_SeedRun(f"seed-{s}", {"seed": s}, "seeds", config.benchmark, tuple(base + ["--seed", str(s)]))
            for s in seeds]
    spec = Spec(path=Path("--seeds"), grid={"seed": seeds}, retries=0)
    with Sweep(spec, out, log=print) as sweep:
        sweep.run_all(runs, reuse="--overwrite" not in rest)
        records = [sweep.records[r.name] for r in runs]
    done = [r for r in records if r["status"] == "done"]
    for r in done:
        print(f"{r['name']}: ACC {r['results']['acc']:.4f}  BWT {r['results']['bwt']:+.4f}  "
              f"forgetting {r['results']['forgetting']:.4f}")
    if done:
        text = seeds_text(config.method, config.benchmark, done)
        print("\n" + text)
        _write_seed_summary(out, done, records)
    failed = [{"name": r["name"], "error": r.get("error")} for r in records if r["status"] != "done"]
    return _failures({"failed": failed}, out, "run")


def seeds_text(method: str, benchmark: str, done: list[dict]) -> str:
    """ACC, BWT and forgetting over the seeds: mean ± half-width of the 95 % t interval (n)."""
    from bitcl import stats
    seeds = [r["settings"]["seed"] for r in done]
    lines = [f"{method} on {benchmark}, seeds {seeds}: mean ± half-width of the {int(stats.LEVEL * 100)} % "
             "Student t interval (std ddof 1)"]
    for key, title in (("acc", "ACC"), ("bwt", "BWT"), ("forgetting", "forgetting")):
        lines.append(f"  {title:<11}{stats.summarize([r['results'][key] for r in done], key).format(4)}")
    return "\n".join(lines)


def _write_seed_summary(out: Path, done: list[dict], records: list[dict]) -> None:
    import json
    from bitcl import stats
    from bitcl.checkpoint import atomic_write_text
    from bitcl.sweep.summary import INTERVAL_TEXT
    summary = {"interval": INTERVAL_TEXT, "interval_kind": stats.INTERVAL_KIND, "level": stats.LEVEL,
               "seeds": [r["settings"]["seed"] for r in done],
               **{key: stats.summarize([r["results"][key] for r in done], key).as_dict()
                  for key in ("acc", "bwt", "forgetting")},
               "runs": [{k: r.get(k) for k in ("name", "dir", "status", "attempts", "error", "results")}
                        for r in records]}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")


def _without_out(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--out":
            skip = True
        elif not arg.startswith("--out="):
            out.append(arg)
    return out


class _SeedRun:
    """A RunSpec-like run of ``bitcl run --seeds``: the user's own flags plus --seed and --out."""

    def __init__(self, name: str, settings: dict, group: str, benchmark: str, flags: tuple):
        self.name, self.settings, self.group, self.benchmark, self.flags = name, settings, group, benchmark, flags

    def argv(self, out: Path) -> list[str]:
        return [*self.flags, "--out", str(out), "--quiet"]
