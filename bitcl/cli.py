"""``bitcl run | rerun | rl | list | report | analyze | export | pretrain``: the command line
(contract in docs/cli.md). Flags of ``run`` and ``pretrain`` are generated from the fields of
``RunConfig`` and of each method's options dataclass by :mod:`bitcl.settings`, so each setting
is declared once.

Bad input of any kind ends with one line on stderr and exit status 2, never a
traceback.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import sys
import traceback
from typing import Optional, Sequence

from bitcl.errors import BitclError, EnvironmentFault
from bitcl.parsing import Parser, UsageError, warn_nothing_saved
from bitcl.run_args import add_config_flags, config_from_args  # noqa: F401  (public: bitcl.cli.config_from_args)
from bitcl.settings import default_of

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1


def cmd_run(argv: Sequence[str]) -> int:
    if any(a == "--seeds" or a.startswith("--seeds=") for a in argv):  # several seeds: bitcl.sweep runs them
        from bitcl.sweep.cli import run_seeds
        return run_seeds(argv)
    from bitcl.engine import run
    config = config_from_args(argv)
    config.resolved()  # every setting (method options too) checked before anything is said or run
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
    p = Parser(prog="bitcl rerun", description="Reproduce a run from its own results.json.")
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
    Parser(prog="bitcl list").parse_args(argv)
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
        opts = ", ".join(f"--{f.name.replace('_', '-')} {default_of(f)}" for f in dataclasses.fields(cls.Options))
        if opts:
            print(f"  {'':<10}   options: {opts}")
    print("benchmarks:")
    for name, spec in BENCHMARKS.items():
        print(f"  {name:<15} {spec.description} (default {spec.default_tasks} tasks)")
    print("architectures (--arch):")
    for name in backbone_names():
        spec = backbone_spec(name)
        print(f"  {name:<10} {spec.summary}")
        if spec.training:  # what fills --optimizer/--lr/--momentum when neither they nor a preset do
            shown = ", ".join(f"--{k} {v}" for k, v in spec.training.items())
            print(f"  {'':<10}   defaults: {shown} ({spec.training_source})")
    presets = describe_presets()
    print("presets (applied to settings left unset; --no-preset turns them off):")
    for line in presets or ["  none"]:
        print(f"  {line}")
    from bitcl.presets import describe_protocols
    print("paper protocols (bitcl run --preset NAME; docs/benchmarks.md):")
    for line in describe_protocols():
        print(f"  {line}")
    return 0


def cmd_report(argv: Sequence[str]) -> int:
    from bitcl.report import write_report
    p = Parser(prog="bitcl report", description="Compare runs: markdown table and PNG plots.")
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
        parser = Parser(prog="bitcl analyze importance",
                         description="Train one task, then compare every importance measure with the Fisher.")
        add_config_flags(parser, [n for n in _TRAINING_FIELDS + ("benchmark", "scenario", "tasks", "out")])
        parser.add_argument("--task", type=int, default=0, help="which task of the benchmark to train")
        parser.add_argument("--samples", type=int, default=1000, help="samples for the output/Fisher measures")
        args = vars(parser.parse_args(argv[1:]))
        task, samples = args.pop("task"), args.pop("samples")
        config = RunConfig(**{**args, "method": "finetune"})
        if config.out:
            from bitcl.train.rundir import refuse_inside_run
            refuse_inside_run(config.out, "bitcl analyze importance --out")
        result = analyze_importance(config, task, samples, config.out)
        print(format_table(result))
        if config.out:
            print(f"wrote {config.out}/importance.json")
        return 0
    if what == "bits":
        from bitcl.analysis.bits import cmd_bits
        return cmd_bits(argv[1:], Parser)
    raise UsageError("usage: bitcl analyze {importance,bits} ... (bitcl analyze importance --help)")


def cmd_export(argv: Sequence[str]) -> int:
    p = Parser(prog="bitcl export", description="Export a checkpoint for edge deployment.")
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
    p = Parser(prog="bitcl pretrain", description="Pre-train a backbone on source classes (training split).")
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


def cmd_sweep(argv: Sequence[str]) -> int:
    from bitcl.sweep.cli import cmd_sweep as run_sweep
    return run_sweep(argv)


def cmd_data(argv: Sequence[str]) -> int:
    from bitcl.data.cli import cmd_data as run_data
    return run_data(argv)


COMMANDS = {"run": cmd_run, "rerun": cmd_rerun, "rl": cmd_rl, "list": cmd_list, "report": cmd_report,
            "analyze": cmd_analyze, "export": cmd_export, "pretrain": cmd_pretrain,
            "sweep": cmd_sweep, "data": cmd_data}

SUMMARIES = {  # one line each, for `bitcl` without a command
    "run": "train one model on a sequence of tasks (results.json, checkpoints)",
    "rerun": "reproduce a run from its own results.json",
    "rl": "continual reinforcement learning on a sequence of games",
    "list": "methods, benchmarks, architectures and presets, with their options",
    "report": "compare runs: markdown table and plots",
    "analyze": "importance measures of one task, or bits needed per task of a run",
    "export": "export a checkpoint for deployment (packed bit planes or ONNX)",
    "pretrain": "pre-train a backbone on source classes, for --pretrained",
    "sweep": "a grid of runs (methods x seeds x options) from a TOML spec, with a summary over seeds",
    "data": "download, verify and list the datasets bitcl can fetch",
}

EXIT_ENVIRONMENT = 1  # the machine failed (disk full, permission denied, read-only): not the input
# errno values that mean the environment, not the input, is at fault
ENVIRONMENT_ERRNOS = frozenset(getattr(errno, name) for name in (
    "ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EIO", "EMFILE", "ENFILE", "ENOMEM", "EBUSY", "ETXTBSY")
    if hasattr(errno, name))


def command_list() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: bitcl COMMAND [options]  (bitcl COMMAND --help for a command's options)", "commands:"]
    lines += [f"  {name:<{width}}  {SUMMARIES[name]}" for name in COMMANDS]
    return "\n".join(lines)


def classify(error: BaseException) -> tuple[int, str]:
    """Exit status and one-line message for an exception that reached ``main``.

    * bad input (``BitclError``: a file, option or value the user gave is wrong, including an input
      file that is missing or unreadable, which readers report as DataError/CheckpointError) -> 2;
    * environment faults (``EnvironmentFault``, or an ``OSError`` whose errno says disk full,
      quota, read-only, permission, I/O error) -> 1, naming the path and the OS reason;
    * any other ``OSError`` (a path that does not exist, is a directory...) names a path the user
      gave -> 2; ``MemoryError`` -> 1 (the machine ran out, the input may be fine).
    Anything else is a bug in bitcl (``main`` says "internal error").
    """
    status = getattr(error, "exit_status", None)  # errors that know their class (a failed download: 1)
    if status is not None:
        return status, _first_line(error)
    if isinstance(error, (BitclError, FloatingPointError)):
        return EXIT_BAD_INPUT, _first_line(error)
    if isinstance(error, MemoryError):
        return EXIT_ENVIRONMENT, "out of memory (reduce the data, --batch-size or the model)"
    if isinstance(error, EnvironmentFault):
        return EXIT_ENVIRONMENT, _first_line(error)
    reason = error.strerror or _first_line(error)
    where = f"{error.filename}: " if error.filename else ""
    if error.errno in ENVIRONMENT_ERRNOS:
        return EXIT_ENVIRONMENT, f"{where}{reason}"
    return EXIT_BAD_INPUT, f"{where}{reason}"


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(command_list(), file=sys.stderr)  # no command is bad usage: the list on stderr, exit 2
        return EXIT_BAD_INPUT
    if argv[0] in ("-h", "--help"):
        print(command_list())
        return 0
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
        code, message = classify(error)
        print(f"bitcl {command}: error: {message}", file=sys.stderr)
        return code
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
