"""benchmarks/protocol_time.py's GPU estimate (from counted FLOPs and kernel launches): the counter, the
pricing, and that each preset's `gpu_hours` is what the script derives; its `cpu_hours` is the committed
measurement."""
import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks import protocol_time as pt
from bitcl.presets import PROTOCOLS

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def test_op_counter_counts_kernels_not_views():
    x = torch.ones(4, 4)
    with pt.OpCounter() as counter:
        y = x.view(16)  # a view: no kernel
        z = y + 1  # one kernel
        z.mul_(2)  # in place: one kernel
        torch.empty(3)  # an allocation: no kernel
    assert counter.ops == 2


def fake_counts(flops_per_step, ops_per_step, batch):
    """count_one's stand-in: one epoch of ``samples`` costs these per step; evaluation adds nothing."""
    def count_one(settings, epochs, samples):
        steps = math.ceil(samples / batch)
        return flops_per_step * steps * epochs, int(ops_per_step * steps * epochs)
    return count_one


def test_a_step_costs_the_longer_of_its_flops_and_its_launches(monkeypatch):
    name = "benzing-split-cifar"
    settings = pt.protocol_settings(name)
    steps = (pt._tasks(settings) * settings["epochs"]) * math.ceil(pt.per_task_samples(settings)
                                                                     / settings["batch_size"])
    monkeypatch.setattr(pt, "count_one", fake_counts(6e12, 10, settings["batch_size"]))  # FLOP-bound at 30 TFLOP/s
    slow = pt.gpu_estimate(name, 256, tflops=30.0, launch_us=10.0)
    assert slow["step_bound"] == "flops" and slow["estimated_hours"] == pytest.approx(steps * 0.2 / 3600)
    assert pt.gpu_estimate(name, 256, tflops=60.0, launch_us=10.0)["estimated_hours"] == pytest.approx(
        slow["estimated_hours"] / 2)
    monkeypatch.setattr(pt, "count_one", fake_counts(1e6, 100, settings["batch_size"]))  # launch-bound
    fast = pt.gpu_estimate(name, 256, tflops=30.0, launch_us=10.0)
    assert fast["step_bound"] == "launches" and fast["estimated_hours"] == pytest.approx(steps * 1e-3 / 3600)


def test_unknown_protocol_is_refused():
    with pytest.raises(SystemExit) as stop:
        pt.main(["--what", "gpu", "--protocols", "blip-mnist6", "--print-only"])
    assert stop.value.code == 2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["blip-mnist5", "anpyc-permuted-mnist-20", "dlcft-class-split-cifar100"])
def test_preset_gpu_hours_are_what_the_script_derives(name):
    """Counts are deterministic, so the figure in the preset can be checked on any machine."""
    estimate = pt.gpu_estimate(name, 256)["estimated_hours"]
    assert float(f"{estimate:.2g}") == PROTOCOLS[name].time_estimate["gpu_hours"]


# Two runs of protocol_time.py on this 2-core machine, minutes apart (023d25d and 546b21e), gave estimates
# within 7 % of each other for six of the nine protocols, 0.79x for blip-pmnist and 1.4-1.6x for ANPyC's
# small MLP (short timed runs, fixed costs): a preset may hold either run's figure. The figures the
# presets held before (from no recorded run) were 1.1-3.2x the committed ones, four of them over 2x.
CPU_RUN_TO_RUN = 2.0


@pytest.mark.parametrize("name", [n for n, p in PROTOCOLS.items() if p.time_estimate["cpu_hours"] is not None])
def test_preset_cpu_hours_are_the_committed_measurement(name):
    """A preset's cpu_hours (printed by `bitcl list`) is the estimate of benchmarks/results/protocol_time.json,
    rounded, up to the run-to-run spread of CPU timing: not a figure from an unrecorded run."""
    committed = json.loads((RESULTS / "protocol_time.json").read_text())["protocols"][name]["estimated_hours"]
    stated = PROTOCOLS[name].time_estimate["cpu_hours"]
    assert 1 / CPU_RUN_TO_RUN <= stated / committed <= CPU_RUN_TO_RUN, (stated, committed)
