"""BLIP on real data: frozen bits never change across checkpoints; state stays constant."""
import json
from itertools import combinations

import pytest
import torch
from safetensors import safe_open

from bitcl.config import RunConfig
from bitcl.engine import run


def load_bits(path):
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["bitcl"])
        return {name: (f.get_tensor(name + ".codes"), f.get_tensor(name + ".frozen"), info["bits"])
                for name, info in meta.items()}


def frozen_prefix(codes, frozen, bits):
    u = codes + (1 << (bits - 1))
    return u >> (bits - frozen.to(torch.int32))  # the top k bits (0 where k = 0)


@pytest.fixture(scope="module")
def blip_run(tmp_path_factory, small_npz):
    out = tmp_path_factory.mktemp("blip")
    # a 100-unit net on 1,600 digits has a larger per-sample Fisher than BLIP's 1200-unit
    # default setting, so a looser prior keeps it plastic over 4 tasks
    cfg = RunConfig(method="blip", benchmark="permuted-mnist", tasks=4, data=small_npz, epochs=2, hidden=[100],
                    out=str(out), quiet=True, method_options={"fisher_prior": 1e-6})
    return run(cfg), out


@pytest.mark.slow
def test_frozen_bits_identical_in_every_later_checkpoint(blip_run):
    """For checkpoints t < s, every bit frozen at t is identical at s and no count decreases."""
    _, out = blip_run
    snaps = [load_bits(out / "checkpoints" / f"task-{t}.safetensors") for t in range(4)]
    assert any(int(f.sum()) > 0 for _, f, _ in snaps[0].values())
    for t, s in combinations(range(4), 2):
        for name, (codes_t, frozen_t, bits) in snaps[t].items():
            codes_s, frozen_s, _ = snaps[s][name]
            assert (frozen_s >= frozen_t).all(), name
            shift = bits - frozen_t.to(torch.int32)
            u_t, u_s = codes_t + (1 << (bits - 1)), codes_s + (1 << (bits - 1))
            assert torch.equal(u_t >> shift, u_s >> shift), f"{name}: frozen bits changed between {t} and {s}"
            full = frozen_t == bits
            assert torch.equal(codes_t[full], codes_s[full])


@pytest.mark.slow
def test_capacity_grows_and_state_is_constant(blip_run):
    """Capacity never decreases; state bytes are identical after every task (9 B per weight)."""
    result, _ = blip_run
    assert all(b >= a for a, b in zip(result.capacity, result.capacity[1:]))
    assert len(set(result.state_bytes)) == 1
    # task-incremental heads are float, not quantised; 8 bytes count the tasks seen
    assert result.state_bytes[0] == 9 * (784 * 100 + 100) + 8
    assert set(result.capacity_per_layer[-1]) == {"backbone.layers.1.weight", "backbone.layers.1.bias"}


@pytest.mark.slow
def test_blip_learns_and_remembers(blip_run):
    """Every task is learned well above chance and barely forgotten."""
    result, _ = blip_run
    diag = [result.accuracy_matrix[i][i] for i in range(4)]
    assert min(diag) > 0.7 and result.bwt > -0.05


@pytest.mark.parametrize("scenario", ["domain", "class"])
@pytest.mark.slow
def test_blip_runs_in_shared_head_scenarios(scenario, small_npz):
    """In domain and class settings the shared head is quantised and frozen too."""
    cfg = RunConfig(method="blip", benchmark="split-mnist", scenario=scenario, data=small_npz, epochs=1, hidden=[64],
                    quiet=True, method_options={"fisher_prior": 1e-12})
    result = run(cfg)
    assert "heads.0.weight" in result.capacity_per_layer[-1]
    assert result.capacity_per_layer[-1]["heads.0.weight"] > 0
    if scenario == "class":  # no task id: future tasks' classes are masked, so they score 0
        assert result.accuracy_matrix[0][4] == 0.0
