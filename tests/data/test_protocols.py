"""Benchmarks and paper protocols build the tasks they claim, on small fixture data in each
dataset's real format (no download): task count, classes per task, label mapping, head
layout, and the seed's effect on permutations, rotations and task orders."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bitcl.cli import config_from_args, main
from bitcl.config import RunConfig
from bitcl.data import benchmarks as bm
from bitcl.data.benchmarks import (BENCHMARKS, alternating_cifar_groups, as_rgb32, build_scenario, concatenate,
                                   dataset_sequence_order, load_benchmark_data, seeded_order)
from bitcl.data.scenarios import rotate_images, rotation_angles
from bitcl.data.sources import ArrayData, from_arrays
from bitcl.errors import ConfigError
from bitcl.models import build_model
from bitcl.presets import PROTOCOLS, protocol_settings, split_protocol


def fixture(classes, shape, per_class=4, name="fixture", seed=0):
    """uint8 images, ``per_class`` per label (3 train, 1 test), through the real reader path."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), per_class)
    x = rng.integers(0, 256, (len(y), *shape), dtype=np.uint8)
    train = np.tile([True] * (per_class - 1) + [False], classes)
    return from_arrays(name, x, y, train)


MNIST_LIKE = fixture(10, (28, 28), name="mnist")
CIFAR10 = fixture(10, (3, 32, 32), name="cifar10")
CIFAR100 = fixture(100, (3, 32, 32), per_class=2, name="cifar100")


def test_rotated_mnist_rotates_each_task_by_its_angle():
    s = build_scenario("rotated-mnist", MNIST_LIKE, "domain", 4, seed=0)
    assert rotation_angles(4) == [0.0, 45.0, 90.0, 135.0] and len(s) == 4 and s.head_sizes == [10]
    assert torch.equal(s.tasks[0].x_train, MNIST_LIKE.x_train)
    assert torch.allclose(s.tasks[2].x_train, torch.rot90(MNIST_LIKE.x_train, 1, (2, 3)), atol=1e-5)
    assert all(torch.equal(t.y_train, s.tasks[0].y_train) for t in s.tasks)
    again = build_scenario("rotated-mnist", MNIST_LIKE, "domain", 4, seed=7)  # the angles do not depend on the seed
    assert all(torch.equal(a.x_test, b.x_test) for a, b in zip(s.tasks, again.tasks))
    klass = build_scenario("rotated-mnist", MNIST_LIKE, "class", 3, seed=0)
    assert klass.head_sizes == [30] and int(klass.tasks[2].y_train.min()) == 20
    assert build_scenario("rotated-mnist", MNIST_LIKE, "task", 3, 0).head_sizes == [10, 10, 10]


def test_rotation_keeps_shape_and_zero_fills_the_corners():
    x = torch.ones(2, 1, 28, 28)
    r = rotate_images(x, 45.0)
    assert r.shape == x.shape and float(r[0, 0, 0, 0]) == 0.0 and float(r[0, 0, 14, 14]) == pytest.approx(1.0)


@pytest.mark.parametrize("benchmark", ["split-fashion-mnist", "split-kmnist", "split-svhn"])
def test_split_benchmarks_on_fetched_datasets(benchmark):
    spec = BENCHMARKS[benchmark]
    data = fixture(10, (28, 28) if spec.channels == 1 else (3, 32, 32), name=spec.dataset)
    bm.check_data_fits(spec, data)
    s = build_scenario(benchmark, data, "task", None, 0)
    assert len(s) == 5 and s.head_sizes == [2] * 5
    assert [t.classes for t in s.tasks] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert s.tasks[3].y_train.tolist() == [0, 0, 0, 1, 1, 1]  # classes 6, 7 -> outputs 0, 1


def test_permuted_mnist_20_and_50_tasks_are_fixed_by_the_seed():
    a = build_scenario("permuted-mnist", MNIST_LIKE, "task", 50, seed=3)
    b = build_scenario("permuted-mnist", MNIST_LIKE, "task", 50, seed=3)
    c = build_scenario("permuted-mnist", MNIST_LIKE, "task", 20, seed=4)
    assert len(a) == 50 and len(c) == 20 and a.tasks[0].permutation is None
    assert all(torch.equal(p.permutation, q.permutation) for p, q in zip(a.tasks[1:], b.tasks[1:]))
    assert not torch.equal(a.tasks[1].permutation, c.tasks[1].permutation)
    assert len({tuple(t.permutation.tolist()) for t in a.tasks[1:]}) == 49


def test_seeded_order_is_blips_sklearn_shuffle():
    """BLIP's loaders order tasks with sklearn.utils.shuffle(np.arange(n), random_state=seed)."""
    sklearn = pytest.importorskip("sklearn.utils")
    for seed in range(6):
        assert seeded_order(10, seed) == list(sklearn.shuffle(np.arange(10), random_state=seed))
    assert seeded_order(10, 0) == [2, 8, 4, 9, 1, 6, 7, 3, 0, 5]


def test_alternating_cifar_tasks_and_heads():
    data = concatenate([CIFAR10, CIFAR100], "cifar10+cifar100")
    bm.check_data_fits(BENCHMARKS["alternating-cifar"], data)
    s = build_scenario("alternating-cifar", data, "task", None, seed=0)
    order = seeded_order(10, 0)
    assert len(s) == 10 and s.head_sizes == [2 if i < 5 else 20 for i in order]
    first = s.tasks[0]  # piece 2 of CIFAR-10: classes 4, 5
    assert first.classes == [4, 5] and first.y_test.tolist() == [0, 1]
    c100 = s.tasks[1]   # piece 8: CIFAR-100 classes 60..79 (labels 70..89 here)
    assert c100.classes == list(range(70, 90)) and sorted(set(c100.y_train.tolist())) == list(range(20))
    assert sorted(c for g in alternating_cifar_groups(0) for c in g) == list(range(110))
    assert alternating_cifar_groups(1) != alternating_cifar_groups(0)
    klass = build_scenario("alternating-cifar", data, "class", None, seed=0)
    assert klass.head_sizes == [110] and klass.active_outputs[:2] == [2, 22]
    with pytest.raises(ConfigError, match="one domain-incremental head"):
        build_scenario("alternating-cifar", data, "domain", None, seed=0)
    with pytest.raises(ConfigError, match="exactly 10 tasks"):
        build_scenario("alternating-cifar", data, "task", 5, seed=0)


def test_split_cifar10_100_is_cifar10_then_five_cifar100_tasks():
    data = concatenate([CIFAR10, CIFAR100], "cifar10+cifar100")
    s = build_scenario("split-cifar10-100", data, "task", None, seed=0)
    assert len(s) == 6 and s.head_sizes == [10] * 6
    assert s.tasks[0].classes == list(range(10)) and s.tasks[5].classes == list(range(50, 60))
    assert s.tasks[1].y_test.tolist() == list(range(10))  # CIFAR-100 classes 0..9 -> outputs 0..9


def test_dataset_sequence_order_drops_notmnist_and_pads_grey_images():
    assert dataset_sequence_order(0) == ["mnist", "cifar10", "svhn", "fashion-mnist"]  # BLIP's [2, 0, 1, 3, 4]
    rgb = as_rgb32(MNIST_LIKE)
    assert rgb.input_shape == (3, 32, 32) and torch.equal(rgb.x_train[:, 0, 2:30, 2:30], MNIST_LIKE.x_train[:, 0])
    assert torch.equal(rgb.x_train[:, 0], rgb.x_train[:, 2]) and float(rgb.x_train[:, :, :2].abs().sum()) == 0
    parts = {"cifar10": CIFAR10, "mnist": MNIST_LIKE, "svhn": fixture(10, (3, 32, 32), name="svhn"),
             "fashion-mnist": fixture(10, (28, 28), name="fashion-mnist")}
    data = concatenate([as_rgb32(parts[d]) for d in bm.FETCHABLE_MIXTURE], "mixture")
    s = build_scenario("dataset-sequence", data, "task", None, seed=0)
    assert len(s) == 4 and s.head_sizes == [10] * 4
    assert s.tasks[0].classes == list(range(10, 20))  # MNIST is second in the fetchable list, first in the order


def test_multi_dataset_benchmarks_fetch_each_dataset(monkeypatch):
    loaded = []

    def fake_load(name, **kwargs):
        loaded.append(name)
        return {"cifar10": CIFAR10, "cifar100": CIFAR100}[name]
    monkeypatch.setattr("bitcl.data.readers.load_dataset", fake_load)
    data = load_benchmark_data(BENCHMARKS["alternating-cifar"], None, quiet=True)
    assert loaded == ["cifar10", "cifar100"] and data.num_classes == 110
    assert torch.equal(data.y_test[len(CIFAR10.y_test):], CIFAR100.y_test + 10)
    with pytest.raises(ConfigError, match="--data cannot replace them"):
        load_benchmark_data(BENCHMARKS["alternating-cifar"], "x.npz")


def _protocol_data(settings: dict) -> ArrayData:
    benchmark = settings["benchmark"]
    if benchmark in ("alternating-cifar", "split-cifar10-100"):
        return concatenate([CIFAR10, CIFAR100], "cifar10+cifar100")
    if benchmark == "dataset-sequence":
        return concatenate([as_rgb32(MNIST_LIKE if d in ("mnist", "fashion-mnist") else CIFAR10)
                            for d in bm.FETCHABLE_MIXTURE], "mixture")
    if benchmark == "split-cifar100":
        return CIFAR100
    return MNIST_LIKE


@pytest.mark.parametrize("name", [n for n, p in PROTOCOLS.items() if not p.refusal])
def test_each_protocol_builds_its_tasks_and_model(name):
    settings = protocol_settings(name)
    config = RunConfig(**settings).resolved()
    assert config.preset is False and config.method_options.items() >= settings.get("method_options", {}).items()
    data = _protocol_data(settings)
    bm.check_data_fits(BENCHMARKS[config.benchmark], data)
    s = build_scenario(config.benchmark, data, config.scenario, config.tasks, config.seed)
    expected_tasks = {"blip-mnist5": 5, "blip-pmnist": 10, "blip-alternating-cifar": 10, "blip-dataset-sequence": 4,
                      "benzing-permuted-mnist": 10, "benzing-split-cifar": 6, "anpyc-permuted-mnist-20": 20,
                      "anpyc-permuted-mnist-50": 50, "dlcft-class-split-cifar100": 10}[name]
    assert len(s) == expected_tasks
    assert s.multi_head == (config.scenario == "task") and len(s.head_sizes) == (len(s) if s.multi_head else 1)
    model = build_model(config.arch, s.input_shape, s.head_sizes, s.setting, config.backbone, config.bits,
                        [8] * len(config.hidden), 8 if config.width else 0, config.bn, config.dropout)
    x = s.tasks[-1].x_test[:2]
    assert model(x, len(s) - 1).shape[-1] == s.head_sizes[-1 if s.multi_head else 0]


def test_every_protocol_states_its_sources_differences_and_time():
    for p in PROTOCOLS.values():
        assert p.paper and p.sources and p.time_estimate["cpu_how"] and p.time_estimate["gpu_how"]
        for key in ("cpu_hours", "gpu_hours"):  # an estimate of each kind for every runnable one
            assert (p.time_estimate[key] is None) == bool(p.refusal)
        if p.time_estimate["cpu_hours"] is not None:
            assert "estimate" in p.time_estimate["cpu_how"]
            assert p.time_estimate["gpu_how"].startswith("estimate from FLOPs, not measured")
            assert p.time_estimate["gpu_name"]
        # the papers' numbers are quoted only where read in a citable source; otherwise the note says why not
        assert p.paper_figures is None or all(k for k in p.paper_figures)
        assert p.paper_figures or p.paper_figures_note.startswith("not quoted: could not be checked offline")
        assert "from memory" not in p.sources and "checked against" in p.sources or p.refusal
        assert p.settings["benchmark"] in BENCHMARKS


def test_refused_protocol_and_unknown_name_are_bad_input(capsys, monkeypatch):
    import dataclasses
    refused = dataclasses.replace(PROTOCOLS["blip-mnist5"], refusal="needs a network no bitcl backbone has")
    monkeypatch.setitem(PROTOCOLS, "blip-mnist5", refused)
    assert main(["run", "--preset", "blip-mnist5"]) == 2
    assert "cannot run: needs a network no bitcl backbone has" in capsys.readouterr().err
    assert main(["run", "--preset", "blip-mnist6"]) == 2
    assert "unknown; choose from blip-mnist5" in capsys.readouterr().err


def test_preset_name_is_split_from_the_boolean_flag():
    assert split_protocol(["--preset", "blip-mnist5", "--epochs", "1"]) == (["--epochs", "1"], "blip-mnist5")
    assert split_protocol(["--preset=blip-pmnist"]) == ([], "blip-pmnist")
    assert split_protocol(["--preset", "--epochs", "1"]) == (["--preset", "--epochs", "1"], None)
    assert config_from_args(["--no-preset"]).preset is False


@pytest.mark.slow
def test_bitcl_run_preset_records_the_papers_settings(tmp_path, small_npz, capsys):
    """One command; flags typed after it override the protocol (here: smaller, for the test)."""
    out = tmp_path / "r"
    code = main(["run", "--preset", "blip-mnist5", "--data", small_npz, "--epochs", "1", "--hidden", "16",
                 "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "results.json").read_text())["config"]
    assert (config["benchmark"], config["optimizer"], config["lr"], config["batch_size"]) == ("split-mnist", "sgd",
                                                                                              0.01, 64)
    assert config["method_options"]["fisher_prior"] == 1e-15 and config["lr_schedule"] == "none"
    assert config["epochs"] == 1 and config["hidden"] == [16] and config["preset"] is False


@settings(max_examples=25, deadline=None)
@given(st.permutations(list(range(12))), st.lists(st.integers(1, 5), min_size=1, max_size=6))
def test_grouped_scenario_maps_every_label_to_its_group_position(order, sizes):
    """Any partition of the labels into groups: each task holds exactly its group's samples, with
    targets = position within the group (task setting) or in the concatenated order (class)."""
    from bitcl.data.scenarios import grouped_scenario
    groups, start = [], 0
    for size in sizes:
        if start + size > len(order):
            break
        groups.append(list(order[start:start + size]))
        start += size
    if not groups:
        return
    data = fixture(12, (4, 4), per_class=2)
    flat = [c for g in groups for c in g]
    for setting in ("task", "class"):
        s = grouped_scenario(data, groups, setting, "g")
        for t, group in zip(s.tasks, groups):
            original = [group[int(y)] if setting == "task" else flat[int(y)] for y in t.y_train]
            assert sorted(original) == sorted(c for c in data.y_train.tolist() if c in group)
        assert s.head_sizes == ([len(g) for g in groups] if setting == "task" else [len(flat)])


def test_grouped_scenario_refuses_overlapping_or_empty_groups():
    from bitcl.data.scenarios import grouped_scenario
    with pytest.raises(ConfigError, match="non-empty and disjoint"):
        grouped_scenario(MNIST_LIKE, [[0, 1], [1, 2]], "task", "g")
    with pytest.raises(ConfigError, match="non-empty and disjoint"):
        grouped_scenario(MNIST_LIKE, [[0], []], "task", "g")
