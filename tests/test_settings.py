"""bitcl.settings: one schema validates every settings dataclass and makes its flags."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bitcl import settings
from bitcl.cli import config_from_args, main
from bitcl.config import RunConfig
from bitcl.constants import BIT_RANGE, LAYER_KINDS, MAX_BITS, MIN_BITS, SCENARIOS
from bitcl.errors import ConfigError
from bitcl.interop.quantize import BitConfig
from bitcl.parsing import Parser
from bitcl.rl.config import RLConfig
from bitcl.settings import setting
from bitcl.strategies import get_strategy, strategy_names, upgrade_recorded_options
from bitcl.train.results import RunResult


@dataclass
class Example:
    count: int = setting(3, "a count", low=1, high=10)
    ratio: float = setting(0.5, "a ratio in (0, 1)", above=0.0, below=1.0)
    kind: str = setting("a", "a kind", choices=("a", "b"))
    flag: bool = setting(False, "a switch")
    limit: Optional[int] = setting(None, "an optional limit", low=0, shown="no limit")
    widths: list[int] = setting([4], "widths", nonempty=True, items_low=1, items_high=8)
    names: tuple[str, ...] = setting(("x",), "names")
    total: int = setting(0, "a renamed count", low=0, aliases=("old_total",))
    scale: float = setting(1.0, "any finite number")


@pytest.mark.parametrize("field, value, needle", [
    ("count", 0, "--count must lie in \\[1, 10\\], got 0"),
    ("count", 2.0, "--count must be an integer"),
    ("count", True, "--count must be an integer"),
    ("ratio", 1.0, "--ratio must lie in \\(0.0, 1.0\\)"),
    ("ratio", math.nan, "--ratio must be a finite number"),
    ("ratio", "half", "--ratio must be a finite number"),
    ("kind", "c", "--kind must be one of a, b"),
    ("flag", 1, "--flag must be true or false"),
    ("limit", -1, "--limit must be >= 0"),
    ("widths", [], "--widths must not be empty"),
    ("widths", [9], "--widths items must lie in 1..8"),
    ("widths", [1.5], "--widths must be an integer"),
    ("widths", "4", "--widths must be a list"),
    ("names", [1], "--names must be a string"),
    ("count", None, "--count must be set"),
])
def test_validate_refuses_bad_values_naming_the_setting(field, value, needle):
    """Every kind of bad value raises ConfigError whose message names the flag and the constraint."""
    with pytest.raises(ConfigError, match=needle):
        settings.validate(Example(**{field: value}))


def test_validate_normalises_and_accepts_good_values():
    """Optional settings accept None; ints of float settings become floats; sequences their declared kind."""
    example = settings.validate(Example(scale=2, limit=None, widths=(1, 8), names=["a", "b"], count=10))
    assert example.widths == [1, 8] and example.names == ("a", "b") and example.count == 10
    assert isinstance(example.scale, float) and example.scale == 2.0


def test_label_names_python_settings_their_own_way():
    """The Python API labels settings by attribute (BitConfig.bits), not by flag."""
    with pytest.raises(ConfigError, match=r"^Example\.count must lie in"):
        settings.validate(Example(count=11), label=lambda name: f"Example.{name}")


@given(st.integers(-50, 50))
def test_integer_range_is_exactly_the_declared_one(value):
    """An integer is accepted iff it lies in the inclusive [low, high] of its metadata."""
    try:
        settings.validate(Example(count=value))
        accepted = True
    except ConfigError:
        accepted = False
    assert accepted == (1 <= value <= 10)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_exclusive_float_bounds(value):
    """``above``/``below`` exclude their bounds; non-finite numbers are always refused."""
    try:
        settings.validate(Example(ratio=value))
        accepted = True
    except ConfigError:
        accepted = False
    assert accepted == (math.isfinite(value) and 0.0 < value < 1.0)


def test_build_refuses_unknown_keys_and_renames_old_ones():
    """build() refuses unknown keys, renames deprecated ones (a warning for typed input) and refuses both."""
    with pytest.raises(ConfigError, match="thing has no option\\(s\\) --nope"):
        settings.build(Example, {"nope": 1}, "thing")
    assert settings.build(Example, {"old_total": 4}).total == 4
    with pytest.warns(FutureWarning, match="--old-total is deprecated; use --total"):
        settings.build(Example, {"old_total": 4}, warn=True)
    with pytest.raises(ConfigError, match="--total is given twice"):
        settings.build(Example, {"old_total": 4, "total": 5})


def test_check_values_checks_a_record_without_building_it():
    """check_values: the schema applied to a dict read from disk (unknown and missing keys, bad values)."""
    assert settings.check_values(Example, {"count": 2, "scale": 1}) == {"count": 2, "scale": 1.0}
    with pytest.raises(ConfigError, match="config.count must lie in"):
        settings.check_values(Example, {"count": 0}, label=lambda n: f"config.{n}")
    with pytest.raises(ConfigError, match="unknown setting"):
        settings.check_values(Example, {"color": "red"})
    with pytest.raises(ConfigError, match="expected an object"):
        settings.check_values(Example, [1])


def parse(cls, argv, **kwargs):
    parser = Parser(prog="test")
    settings.add_flags(parser, cls, **kwargs)
    return vars(parser.parse_args(argv))


def test_flags_parse_every_kind_and_suppress_untyped_defaults(capsys):
    """Flags convert each kind; only typed flags appear (SUPPRESS) unless keep_defaults."""
    assert parse(Example, []) == {}
    got = parse(Example, ["--count", "4", "--flag", "--widths", "2,3", "--names", "a, b", "--kind", "b"])
    assert got == {"count": 4, "flag": True, "widths": [2, 3], "names": ("a", "b"), "kind": "b"}
    assert parse(Example, [], keep_defaults=True)["widths"] == [4]
    assert parse(Example, ["--old-total", "7"]) == {"total": 7}
    assert capsys.readouterr().err.strip() == (
        "test: warning: --old-total is deprecated (removed in the next release); use --total")


def help_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``{option string: its help text}`` of every argument with help."""
    return {a.option_strings[0]: a.help for a in parser._actions if a.option_strings and a.help
            and a.help != argparse.SUPPRESS and a.dest != "help"}


def test_help_shows_each_default_once():
    """Every flag of RunConfig, RLConfig and every method's options shows '(default: ...)' exactly once."""
    classes = [RunConfig, RLConfig, Example] + [get_strategy(m).Options for m in strategy_names()]
    for cls in classes:
        parser = Parser(prog="test")
        settings.add_flags(parser, cls)
        for flag, text in help_of(parser).items():
            assert text.count("(default:") == 1, (cls.__name__, flag, text)
    parser = Parser(prog="test")
    settings.add_flags(parser, Example)
    assert help_of(parser)["--limit"].endswith("(default: no limit)")


def test_every_settings_class_declares_help_and_resolvable_types():
    """Each field of every settings dataclass has help text and a type the schema can resolve."""
    classes = [RunConfig, RLConfig, BitConfig] + [get_strategy(m).Options for m in strategy_names()]
    for cls in classes:
        settings.validate(cls())  # the defaults satisfy their own schema
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), (cls.__name__, f.name)


def test_constants_are_the_ones_the_schema_checks():
    """The bit range, layer kinds and scenarios come from bitcl.constants wherever they are checked."""
    from bitcl.data import SCENARIOS as data_scenarios
    from bitcl.models import BACKBONES
    from bitcl.quant import MAX_BITS as quant_max, MIN_BITS as quant_min
    assert BIT_RANGE == (MIN_BITS, MAX_BITS) == (quant_min, quant_max) == (2, 24)
    assert BACKBONES is LAYER_KINDS and data_scenarios is SCENARIOS
    for cls, name in ((RunConfig, "bits"), (RLConfig, "bits"), (BitConfig, "bits")):
        meta = {f.name: f.metadata for f in dataclasses.fields(cls)}[name]
        assert (meta["low"], meta["high"]) == BIT_RANGE
    with pytest.raises(ConfigError, match="--bits must lie in \\[2, 24\\]"):
        RLConfig(bits=25).validate()
    with pytest.raises(ConfigError, match="BitConfig.bits must lie in \\[2, 24\\]"):
        BitConfig(bits=1).validate()


def test_samples_is_one_name_for_every_sample_count():
    """Every method whose options count training samples calls the option ``samples`` (batch: ``batch``)."""
    for name in strategy_names():
        fields = {f.name for f in dataclasses.fields(get_strategy(name).Options)}
        assert not {f for f in fields if f.endswith("_samples") or f.endswith("_batch")}, (name, fields)


def test_blip_fisher_samples_is_a_deprecated_alias(capsys):
    """--fisher-samples / --fisher-batch still work, warn in one line on stderr, and record the new name."""
    config = config_from_args(["--method", "blip", "--fisher-samples", "7", "--fisher-batch", "9"])
    assert config.method_options == {"samples": 7, "batch": 9}
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bitcl run: warning: --fisher-{k} is deprecated (removed in the next release); use --{k}"
                   for k in ("samples", "batch")]
    assert config.resolved().method_options["samples"] == 7


def test_old_recorded_option_names_are_upgraded(tmp_path):
    """A results.json written before the rename replays under the new names; flags typed now win."""
    old = {"method": "blip", "method_options": {"fisher_samples": 5, "fisher_prior": 1e-9}}
    assert upgrade_recorded_options(old)["method_options"] == {"samples": 5, "fisher_prior": 1e-9}
    assert upgrade_recorded_options({"method": "ewc", "method_options": {"samples": 1}}) == \
        {"method": "ewc", "method_options": {"samples": 1}}
    result = RunResult(RunConfig(method="blip", epochs=1).resolved(), 2, accuracy_matrix=[[0.9, 0.5], [0.8, 0.9]],
                       state_bytes=[9, 9])
    result.timing = {k: [0.1, 0.1] for k in result.timing}
    record = result.to_json()
    options = record["config"]["method_options"]
    options.pop("samples")
    options["fisher_samples"] = 11  # as 0.2 wrote it
    path = tmp_path / "results.json"
    path.write_text(json.dumps(record))
    replayed = config_from_args(["--config", str(path)]).resolved()
    assert replayed.method_options["samples"] == 11 and "fisher_samples" not in replayed.method_options
    assert config_from_args(["--config", str(path), "--samples", "3"]).resolved().method_options["samples"] == 3


def test_bad_option_from_the_command_line_is_one_line(capsys):
    """A value out of range typed on the command line: one line naming the flag, exit status 2."""
    assert main(["run", "--method", "ewc", "--gamma", "2", "--epochs", "0"]) == 2
    assert capsys.readouterr().err.strip() == "bitcl run: error: --gamma must lie in [0.0, 1.0], got 2.0"


def test_check_values_passes_allowed_descriptive_keys_through():
    """Keys a record carries beside the settings (allow=...) pass unchecked; the settings are still checked."""
    record = {"bits": 20, "data_source": {"kind": "npz"}}
    assert settings.check_values(RunConfig, record, allow=("data_source",)) == record
    with pytest.raises(ConfigError, match="config.bits must lie in"):
        settings.check_values(RunConfig, {"bits": 30, "data_source": {}}, lambda n: f"config.{n}",
                              allow=("data_source",))
