"""The BLIP prior search on the conv backbones (benchmarks/search_blip_prior.py) claims the backbone
table's protocol, so that its test-split figures stand beside the table's BLIP rows."""
from pathlib import Path

import pytest

from bitcl.strategies.blip import BlipOptions
from bitcl.sweep import load_spec

ROOT = Path(__file__).parents[2]
SPEC = ROOT / "benchmarks" / "sweeps" / "search_blip_prior_backbones.toml"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_backbones
    import search_blip_prior
    return bench_backbones, search_blip_prior


def table_protocol_differences(spec, protocol: dict, archs, seeds) -> list[str]:
    """Where a sweep spec's fixed settings differ from the backbone table's protocol."""
    grid = spec.grid
    found = []
    for key, value in protocol.items():
        mine = [Path(v).name for v in grid[key]] if key == "data" else grid[key]
        want = [Path(value).name] if key == "data" else [value]
        if mine != want:
            found.append(f"{key}: {mine} != {want}")
    if sorted(grid["arch"]) != sorted(archs):
        found.append(f"arch: {grid['arch']}")
    if grid["seed"] != list(seeds):
        found.append(f"seed: {grid['seed']}")
    return found


def test_the_spec_runs_the_backbone_tables_protocol_on_both_backbones_and_its_seeds(bench):
    bench_backbones, _ = bench
    spec = load_spec(SPEC)
    assert table_protocol_differences(spec, bench_backbones.PROTOCOL, bench_backbones.ARCHS, (0, 1, 2)) == []
    assert spec.grid["method"] == ["blip"] and spec.grid["scenario"] == ["task"]
    assert spec.select.fraction == 0.1 and spec.select.option == "fisher_prior"  # validation hold-out
    assert BlipOptions.fisher_prior in spec.select.values  # the registered prior is a candidate


def test_the_protocol_check_fails_on_a_different_protocol(bench):
    bench_backbones, _ = bench
    spec = load_spec(SPEC)
    spec.grid["epochs"] = [1]
    spec.grid["seed"] = [0]
    assert table_protocol_differences(spec, bench_backbones.PROTOCOL, bench_backbones.ARCHS, (0, 1, 2)) == [
        "epochs: [1] != [2]", "seed: [0]"]


def test_a_groups_backbone_is_read_from_its_label(bench):
    _, search = bench
    assert search.arch_of("split-mnist/blip/scenario=task/arch=resnet18") == "resnet18"
    assert search.arch_of("split-mnist/blip/arch=alexnet") == "alexnet"
    assert search.build_parser().parse_args([]).quick is False
