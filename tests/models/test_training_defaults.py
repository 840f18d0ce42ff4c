"""Per-backbone training defaults (issue 22): which optimiser, learning rate and momentum a run gets
when neither the user nor a preset sets them."""
import pytest

from bitcl import presets
from bitcl.cli import config_from_args
from bitcl.config import ENGINE_DEFAULTS, RunConfig
from bitcl.models import backbone_spec, register_backbone, training_defaults
from bitcl.models import factory
from bitcl.models.backbones import MLP
from tests.conftest import cli

ENGINE = ("adam", 3e-3, 0.0)


def chosen(config: RunConfig) -> tuple:
    return config.optimizer, config.lr, config.momentum


@pytest.fixture
def sgd_backbone(monkeypatch):
    """A registered backbone whose defaults are SGD 0.05 with momentum 0.9 (registry restored after)."""
    spec = factory.BackboneSpec("sgdnet", lambda args: MLP(args.input_shape), "test net",
                                {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}, "a test")
    monkeypatch.setitem(factory._BACKBONES, "sgdnet", spec)
    return "sgdnet"


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_mlp_and_conv_keep_the_engine_defaults(arch):
    """Backbones without their own defaults resolve exactly as before (Adam 3e-3, momentum 0), so
    their runs stay bit-identical."""
    assert training_defaults(arch) == {}
    assert chosen(RunConfig(arch=arch).resolved()) == ENGINE
    assert (ENGINE_DEFAULTS["optimizer"], ENGINE_DEFAULTS["lr"], ENGINE_DEFAULTS["momentum"]) == ENGINE


@pytest.mark.parametrize("arch", ["alexnet", "resnet18"])
def test_paper_backbones_resolve_to_their_registered_defaults(arch):
    """AlexNet and ResNet-18 resolve to the defaults they register (the engine's while they register
    none: their search, benchmarks/search_backbones.py, decides), and a replay is the same run."""
    defaults = training_defaults(arch)
    config = RunConfig(arch=arch).resolved()
    if defaults:
        assert set(defaults) == {"optimizer", "lr", "momentum"}
        assert backbone_spec(arch).training_source.startswith("benchmarks/search_backbones.py")
        assert chosen(config) == (defaults["optimizer"], defaults["lr"], defaults["momentum"])
    else:
        assert chosen(config) == ENGINE
    assert RunConfig.from_dict(config.to_dict()).resolved() == config


def test_registered_defaults_fill_an_unset_run(sgd_backbone):
    config = RunConfig(arch=sgd_backbone).resolved()
    assert chosen(config) == ("sgd", 0.05, 0.9)
    assert {k: config.to_dict()[k] for k in ("optimizer", "lr", "momentum")} == {
        "optimizer": "sgd", "lr": 0.05, "momentum": 0.9}  # recorded in results.json as used


def test_user_settings_win_over_the_backbone_defaults(sgd_backbone):
    assert chosen(RunConfig(arch=sgd_backbone).resolved()) == ("sgd", 0.05, 0.9)
    # --lr alone keeps the backbone's optimiser and momentum
    assert chosen(RunConfig(arch=sgd_backbone, lr=0.01).resolved()) == ("sgd", 0.01, 0.9)
    assert chosen(RunConfig(arch=sgd_backbone, momentum=0.5).resolved()) == ("sgd", 0.05, 0.5)
    # naming the backbone's optimiser keeps its lr and momentum; naming another drops them all
    assert chosen(RunConfig(arch=sgd_backbone, optimizer="sgd").resolved()) == ("sgd", 0.05, 0.9)
    assert chosen(RunConfig(arch=sgd_backbone, optimizer="adam").resolved()) == ENGINE
    assert chosen(RunConfig(arch=sgd_backbone, optimizer="adam", lr=1e-4).resolved()) == ("adam", 1e-4, 0.0)


def test_a_preset_wins_over_the_backbone_defaults(monkeypatch, sgd_backbone):
    monkeypatch.setitem(presets.PRESETS, ("split-mnist", "finetune", "task"), {"lr": 1e-3, "source": "test"})
    assert chosen(RunConfig(method="finetune", arch=sgd_backbone).resolved()) == ("sgd", 1e-3, 0.9)
    assert chosen(RunConfig(method="finetune", arch=sgd_backbone, preset=False).resolved()) == ("sgd", 0.05, 0.9)
    monkeypatch.setitem(presets.PRESETS, ("split-mnist", "finetune", "task"),
                        {"optimizer": "adam", "lr": 1e-3, "source": "test"})
    assert chosen(RunConfig(method="finetune", arch=sgd_backbone).resolved()) == ("adam", 1e-3, 0.0)


def test_command_line_flags_reach_the_resolution(sgd_backbone):
    assert chosen(config_from_args(["--arch", sgd_backbone]).resolved()) == ("sgd", 0.05, 0.9)
    assert chosen(config_from_args(["--arch", sgd_backbone, "--optimizer", "adam"]).resolved()) == ENGINE
    assert chosen(config_from_args(["--arch", "mlp", "--momentum", "0.5"]).resolved()) == ("adam", 3e-3, 0.5)


@pytest.mark.parametrize("training, needle", [
    ({"optimizer": "sgd", "lr": 0.1}, "exactly optimizer, lr, momentum"),
    ({"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "epochs": 3}, "exactly optimizer, lr, momentum"),
])
def test_registering_partial_training_defaults_is_refused(training, needle):
    with pytest.raises(ValueError, match=needle):
        register_backbone("never-registered", "x", training, "a test")
    assert "never-registered" not in factory._BACKBONES


def test_registering_defaults_without_their_source_is_refused():
    with pytest.raises(ValueError, match="training_source"):
        register_backbone("never-registered", "x", {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9})


def test_help_and_list_show_where_the_defaults_come_from(sgd_backbone):
    helped = cli("run", "--help")
    assert helped.returncode == 0
    text = " ".join(helped.stdout.split())
    assert "preset, else the --arch's (bitcl list), else adam" in text
    assert "preset, else the --arch's (bitcl list), else 3e-3" in text
    listed = cli("list")
    assert listed.returncode == 0
    assert "defaults: --optimizer sgd, --lr 0.05, --momentum 0.9 (a test)" in listed.stdout
    shown = [line for line in listed.stdout.splitlines() if "defaults: --optimizer" in line]
    assert len(shown) == 1 + sum(bool(training_defaults(a)) for a in ("mlp", "conv", "alexnet", "resnet18"))


def test_registered_defaults_are_the_committed_search_choice_and_learn_every_task():
    """Issue 22: AlexNet's and ResNet-18's defaults are the one default per backbone that
    benchmarks/search_backbones.py chose on validation data over both scenarios (with --bn auto), and
    under them finetune's diagonal is >= 0.98 on every task of the test split, task- and
    class-incremental (benchmarks/results/search_backbones.json, made from a clean tree)."""
    import json
    from pathlib import Path
    result = json.loads((Path(__file__).parents[2] / "benchmarks" / "results" / "search_backbones.json").read_text())
    assert not result["environment"]["git_commit"].endswith("+uncommitted")
    assert set(result["backbones"]) == {"alexnet", "resnet18"}
    for arch, entry in result["backbones"].items():
        assert set(entry["scenarios"]) == {"task", "class"}
        assert entry["default"]["chosen"] == {"bn": "auto", **training_defaults(arch)}, arch
        assert set(entry["default"]["test"]) == {"task", "class"}
        for scenario, figures in entry["default"]["test"].items():
            assert figures["evaluated_on"] == "test"
            assert min(figures["diagonal"]) >= 0.98, (arch, scenario, figures["diagonal"])
