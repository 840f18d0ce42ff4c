"""``bitcl run | rerun | rl | list | report | analyze | export | pretrain``: the command line
(contract in DESIGN.md part 2). Flags of ``run`` and ``pretrain`` are generated from the fields
of ``RunConfig`` and of each method's options dataclass, so each setting is declared once.

Bad input of any kind ends with one line on stderr and exit status 2, never a
traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import traceback
import typing
from typing import Optional, Sequence

from bitcl.errors import BitclError

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1


class UsageError(BitclError):
    """A command line argparse rejected."""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        # No prefix abbreviations: the method's own flags are added after a first parse that knows
        # only --method and --config, where EWC's `--c 100` would otherwise be read as `--config 100`.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line, no usage dump
        raise UsageError(message)


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _option_flags(options_cls) -> list[tuple[str, dict]]:
    """argparse arguments for every field of an options dataclass (a strategy's, or RL's)."""
    hints = typing.get_type_hints(options_cls)
    flags = []
    for f in dataclasses.fields(options_cls):
        kind = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        text = f.metadata.get("help", "")
        kwargs = {"dest": f"opt_{f.name}", "default": argparse.SUPPRESS,
                  "help": text if "(default:" in text else f"{text} (default: {default})"}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind if kind in (int, float, str) else str
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
            else:
                kwargs["metavar"] = f.name.upper()
        flags.append(("--" + f.name.replace("_", "-"), kwargs))
    return flags


def add_config_flags(parser: argparse.ArgumentParser, names: Optional[Sequence[str]] = None,
                     defaults: Optional[dict] = None) -> None:
    """One flag per RunConfig field (all of them, or ``names``), with its help, choices and default.

    Flags default to SUPPRESS, so that only what the user typed overrides a ``--config`` file or a
    preset; ``defaults`` changes the default a command shows and uses (e.g. pretrain's epochs)."""
    from bitcl.config import ENGINE_DEFAULTS, RunConfig
    hints = typing.get_type_hints(RunConfig)
    defaults = defaults or {}
    for f in dataclasses.fields(RunConfig):
        if f.name == "method_options" or (names is not None and f.name not in names):
            continue
        default = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING else f.default_factory())
        shown = default if default is not None else (
            f"preset, else {ENGINE_DEFAULTS[f.name]}" if f.name in ENGINE_DEFAULTS else "none")
        text = f.metadata.get("help", "")
        # a help text that explains its own default ("default: the benchmark's") is not given a second one
        kwargs = {"dest": f.name, "default": argparse.SUPPRESS,
                  "help": text if "(default:" in text else f"{text} (default: {shown})"}
        kind = hints[f.name]
        inner = typing.get_args(kind)[0] if typing.get_origin(kind) is typing.Union else kind
        if inner is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(inner) is list:
            kwargs["type"] = _int_list
            kwargs["metavar"] = "N,N"
        else:
            kwargs["type"] = inner
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
            else:
                kwargs["metavar"] = f.name.upper()
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def _run_parser(method_cls, prog: str = "bitcl run") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="Train one model on a sequence of tasks (DESIGN.md: CLI contract).")
    p.add_argument("--config", dest="config_file", default=None, metavar="RESULTS_JSON",
                   help="replay the settings recorded in a run's results.json (flags given here override them)")
    add_config_flags(p)
    if method_cls is not None:
        group = p.add_argument_group(f"options of method {method_cls.name!r}")
        for flag, kwargs in _option_flags(method_cls.Options):
            group.add_argument(flag, **kwargs)
    return p


def _recorded_config(path: str) -> dict:
    """The ``config`` of a results.json file (validated by ``bitcl.train.validate``)."""
    from bitcl.train.validate import read_results
    from bitcl.versions import check_results_version
    results = read_results(path, require=("config",))
    check_results_version(results, path)
    return dict(results["config"])


def config_from_args(argv: Sequence[str]):
    """RunConfig from the command line: the defaults, then a ``--config`` file, then the flags typed."""
    from bitcl.config import RunConfig
    from bitcl.strategies import get_strategy
    pre = _Parser(add_help=False)
    pre.add_argument("--method", default=None)
    pre.add_argument("--config", dest="config_file", default=None)
    known, _ = pre.parse_known_args(argv)
    base = _recorded_config(known.config_file) if known.config_file else {}
    method = known.method or base.get("method") or RunConfig().method
    args = vars(_run_parser(get_strategy(method)).parse_args(argv))
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


def warn_nothing_saved(command: str, out, quiet: bool) -> None:
    """One stderr line at the start of a run without ``--out``: its results are printed, not saved."""
    if out is None and not quiet and os.environ.get("RANK", "0") == "0":
        print(f"bitcl {command}: no --out given: nothing will be saved (results.json, checkpoints); "
              "the results are only printed", file=sys.stderr, flush=True)


def cmd_run(argv: Sequence[str]) -> int:
    from bitcl.engine import run
    config = config_from_args(argv)
    warn_nothing_saved("run", config.out, config.quiet)
    result = run(config)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    print(result.format_matrix())
    if config.out:
        print(f"results: {config.out}/results.json")
    return 0


def cmd_rerun(argv: Sequence[str]) -> int:
    """``bitcl rerun DIR --out NEW``: the run recorded in DIR/results.json, again."""
    p = _Parser(prog="bitcl rerun", description="Reproduce a run from its own results.json.")
    p.add_argument("run", help="run directory holding results.json")
    p.add_argument("--out", required=True, help="directory of the new run (never the old one)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    from pathlib import Path
    if Path(args.out).resolve() == Path(args.run).resolve():
        raise UsageError(f"--out {args.out}: is the run being reproduced; choose another directory")
    flags = ["--config", str(Path(args.run) / "results.json"), "--out", args.out]
    flags += ["--overwrite"] * args.overwrite + ["--quiet"] * args.quiet
    return cmd_run(flags)


def cmd_list(argv: Sequence[str]) -> int:
    from bitcl.data import BENCHMARKS
    from bitcl.models import backbone_names, backbone_spec
    from bitcl.presets import describe_presets
    from bitcl.strategies import get_strategy, strategy_names
    from bitcl.strategies.base import option_default
    _Parser(prog="bitcl list").parse_args(argv)
    print("methods:")
    for name in strategy_names():
        cls = get_strategy(name)
        notes = [f"scenarios: {', '.join(cls.scenarios)}"]
        if cls.requires_quantized:
            notes.append("quantised backbone only")
        if not cls.distributable:
            notes.append("not under torchrun")
        if cls.rl:
            notes.append("also `bitcl rl`")
        print(f"  {name:<10} {cls.summary} [{'; '.join(notes)}]")
        opts = ", ".join(f"--{f.name.replace('_', '-')} {option_default(f)}" for f in dataclasses.fields(cls.Options))
        if opts:
            print(f"  {'':<10}   options: {opts}")
    print("benchmarks:")
    for name, spec in BENCHMARKS.items():
        print(f"  {name:<15} {spec.description} (default {spec.default_tasks} tasks)")
    print("architectures (--arch):")
    for name in backbone_names():
        print(f"  {name:<10} {backbone_spec(name).summary}")
    presets = describe_presets()
    print("presets (applied to settings left unset; --no-preset turns them off):")
    for line in presets or ["  none"]:
        print(f"  {line}")
    return 0


def cmd_report(argv: Sequence[str]) -> int:
    from bitcl.report import write_report
    p = _Parser(prog="bitcl report", description="Compare runs: markdown table and PNG plots.")
    p.add_argument("runs", nargs="+", help="run directories holding results.json")
    p.add_argument("--out", default=None, help="markdown file to write (plots go beside it)")
    args = p.parse_args(argv)
    print(write_report(args.runs, args.out))
    return 0


def cmd_analyze(argv: Sequence[str]) -> int:
    what = argv[0] if argv else None
    if what == "importance":
        from bitcl.analysis.importance import analyze_importance, format_table
        from bitcl.config import RunConfig
        parser = _Parser(prog="bitcl analyze importance",
                         description="Train one task, then compare every importance measure with the Fisher.")
        add_config_flags(parser, [n for n in _TRAINING_FIELDS + ("benchmark", "scenario", "tasks", "out")])
        parser.add_argument("--task", type=int, default=0, help="which task of the benchmark to train")
        parser.add_argument("--samples", type=int, default=1000, help="samples for the output/Fisher measures")
        args = vars(parser.parse_args(argv[1:]))
        task, samples = args.pop("task"), args.pop("samples")
        config = RunConfig(**args).resolved()
        result = analyze_importance(config, task, samples, config.out)
        print(format_table(result))
        if config.out:
            print(f"wrote {config.out}/importance.json")
        return 0
    if what == "bits":
        from bitcl.analysis.bits import cmd_bits
        return cmd_bits(argv[1:], _Parser)
    raise UsageError("usage: bitcl analyze {importance,bits} ... (bitcl analyze importance --help)")


def cmd_export(argv: Sequence[str]) -> int:
    p = _Parser(prog="bitcl export", description="Export a checkpoint for edge deployment.")
    p.add_argument("checkpoint", help="DIR/checkpoints/task-<t>.safetensors")
    p.add_argument("--format", required=True, choices=("packed", "onnx"))
    p.add_argument("--out", required=True, help="file to write")
    p.add_argument("--task", type=int, default=None, help="task whose head (and input permutation) to export")
    p.add_argument("--bits", type=int, default=None, help="keep only the B most significant bits of each weight")
    args = p.parse_args(argv)
    if args.format == "packed":
        from bitcl.export import export_packed
        s = export_packed(args.checkpoint, args.out, args.task, args.bits)
        print(f"wrote {s['file']}: {s['file_bytes']:,} bytes; {s['quantized_weights']:,} quantised weights at "
              f"{s['bits_per_weight']} bits = {s['plane_bytes']:,} bytes of planes "
              f"({s['plane_bytes_per_weight']:.4f} bytes per weight)")
    else:
        from bitcl.export.onnx import export_onnx
        s = export_onnx(args.checkpoint, args.out, args.task, args.bits)
        print(f"wrote {s['file']}: {s['file_bytes']:,} bytes (input 'pixels': raw 0..255 floats, dynamic batch)")
    return 0


_TRAINING_FIELDS = ("data", "classes", "epochs", "batch_size", "lr", "optimizer", "momentum", "lr_schedule", "seed",
                   "arch", "hidden", "width", "bn", "dropout", "backbone", "bits", "device", "pad_to", "augment",
                   "validation", "quiet")


def cmd_pretrain(argv: Sequence[str]) -> int:
    from bitcl.config import RunConfig
    from bitcl.pretrain import pretrain
    p = _Parser(prog="bitcl pretrain", description="Pre-train a backbone on source classes (training split).")
    add_config_flags(p, _TRAINING_FIELDS, defaults={"epochs": 5})
    p.add_argument("--out", required=True, help="safetensors file to write")
    args = vars(p.parse_args(argv))
    out = args.pop("out")
    args.setdefault("epochs", 5)
    meta = pretrain(RunConfig(**args), out)
    print(f"wrote {out}: {meta['arch']} backbone ({meta['backbone']}), classes {meta['classes']}, "
          f"source test accuracy {meta['source_test_accuracy']:.4f}")
    return 0


def cmd_rl(argv: Sequence[str]) -> int:
    try:
        from bitcl.rl.cli import cmd_rl as run_rl
    except ImportError as error:
        raise UsageError(f"bitcl rl needs the RL extra: pip install 'bitcl[rl]' ({error})") from None
    return run_rl(argv)


COMMANDS = {"run": cmd_run, "rerun": cmd_rerun, "rl": cmd_rl, "list": cmd_list, "report": cmd_report,
            "analyze": cmd_analyze, "export": cmd_export, "pretrain": cmd_pretrain}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: bitcl {{{','.join(COMMANDS)}}} ...  (bitcl COMMAND --help)")
        return 0 if argv else EXIT_BAD_INPUT
    command, rest = argv[0], argv[1:]
    debug = "--debug" in rest
    rest = [a for a in rest if a != "--debug"]
    try:
        if command not in COMMANDS:
            raise UsageError(f"unknown command {command!r}; choose from {', '.join(COMMANDS)}")
        return COMMANDS[command](rest)
    except (BitclError, FloatingPointError, OSError, MemoryError) as error:
        if debug:
            traceback.print_exc()
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if isinstance(error, MemoryError):
            message = "out of memory (reduce the data, --batch-size or the model)"
        print(f"bitcl {command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"bitcl {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug, not bad input: say so, one line (--debug shows the traceback)
        if debug:
            traceback.print_exc()
        first = str(error).splitlines()[0] if str(error) else ""
        print(f"bitcl {command}: internal error: {type(error).__name__}: {first} (rerun with --debug for the "
              "traceback and report it)", file=sys.stderr)
        return EXIT_INTERNAL


def exit_process(code: int) -> None:
    """Leave with ``code``; a torchrun worker skips interpreter teardown (``os._exit``).

    gloo's worker thread frees the last collective's work object (and the tensors it holds)
    just after the main thread has seen it complete. If the interpreter is already
    finalising, that thread cannot take the GIL to release the tensors and the process
    aborts (``terminate called without an active exception``, SIGABRT) although the run
    finished: seen in 1 to 7 % of two-rank runs on this machine. Every file bitcl writes is closed by
    then, so only the standard streams need flushing.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def entry() -> None:
    """The ``bitcl`` console script and ``python -m bitcl``."""
    exit_process(main())


if __name__ == "__main__":
    entry()
