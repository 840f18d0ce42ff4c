"""--resume's shared path (bitcl.train.resume), used by `bitcl run`, `bitcl rl` and `bitcl.fit`:
what is refused before anything loads, and what a resume restores."""
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import bitcl
from bitcl import checkpoint as ckpt
from bitcl.errors import CheckpointError, ConfigError
from bitcl.strategies import RunInfo, get_strategy, make_options
from bitcl.train.resume import changed_settings, resume_latest
from bitcl.train.rundir import RunDirectory


def _tasks(n=2):
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(40, 6, generator=generator), torch.randint(0, 2, (40,), generator=generator))
    return [(data, data)] * n


def _model(bits=8):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 2))
    bitcl.quantize_(model, bitcl.BitConfig(bits=bits, range="fixed"))
    return model


def _blip(model):
    cls = get_strategy("blip")
    return cls(make_options(cls, {}), model, RunInfo(2, "domain"))


@pytest.fixture
def run_dir(tmp_path):
    """A finished two-task bitcl.fit run (BLIP, 8 bits) and the config it recorded."""
    result = bitcl.fit(_model(), _tasks(), "blip", out=str(tmp_path / "run"), batch_size=20)
    return tmp_path / "run", result.config.to_dict()


def test_no_checkpoint_means_nothing_to_resume(tmp_path):
    """A run directory without checkpoints resumes nothing and leaves the model as it was."""
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert resume_latest(RunDirectory(tmp_path / "empty"), {}, model, _blip(model)) is None
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_resume_loads_the_last_task_and_its_progress(run_dir):
    """The newest checkpoint (task 1) loads into the model exactly, with the recorded progress."""
    out, config = run_dir
    model = _model()
    resumed = resume_latest(RunDirectory(out, resume=True), config, model, _blip(model))
    assert resumed.task == 1 and resumed.path.name == "task-1.safetensors"
    assert len(resumed.progress["result"]["accuracy_matrix"]) == 2
    saved, _ = ckpt.read_checkpoint(resumed.path)
    assert torch.equal(model[0].weight_codes, saved["0.weight.codes"])


def test_other_settings_are_refused_naming_them(run_dir):
    """Settings that differ (changed, added or dropped) are named; those declared free may differ."""
    out, config = run_dir
    model = _model()
    changed = {**config, "lr": 1.0, "extra": 1}
    with pytest.raises(ConfigError, match=r"^resume: the run in .* other settings \(extra, lr\)$"):
        resume_latest(RunDirectory(out, resume=True), changed, model, _blip(model), flag="resume")
    assert resume_latest(RunDirectory(out, resume=True), {**config, "lr": 1.0}, model, _blip(model),
                         free={"lr"}) is not None
    assert changed_settings({"a": 1, "b": 2}, {"b": 3, "c": 4}, free={"c"}) == ["a", "b"]


def test_checkpoint_without_progress_is_refused(tmp_path):
    """A checkpoint that records no run progress cannot be resumed from (CheckpointError)."""
    model = _model()
    ckpt.save_checkpoint(tmp_path / "run" / "checkpoints" / "task-0.safetensors", model)
    with pytest.raises(CheckpointError, match="no run progress"):
        resume_latest(RunDirectory(tmp_path / "run", resume=True), {}, model, _blip(model))


def test_fit_resume_refuses_a_model_of_other_bit_width(run_dir):
    """bitcl.fit --resume with a model quantised to other bits is refused: codes mean nothing at another width."""
    out, _ = run_dir
    (out / "results.json").unlink()  # an interrupted run
    with pytest.raises(CheckpointError, match="8 bits in the checkpoint but 12 in the model"):
        bitcl.fit(_model(bits=12), _tasks(), "blip", out=str(out), resume=True, batch_size=20)


def _unseeded_max_range_model(seed):
    """A user's model quantised with the weight-dependent range (scales follow the initial weights)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 2))
    bitcl.quantize_(model, bitcl.BitConfig(bits=8, range="max"))
    return model


def test_fit_resume_takes_weights_and_scales_from_the_checkpoint(tmp_path):
    """fit(resume=True) with a freshly built model of another seed (so other scales) restores the checkpoint's
    weights and scales and continues: the result equals the uninterrupted run's, scales included."""
    whole = bitcl.fit(_unseeded_max_range_model(0), _tasks(3), "blip", out=str(tmp_path / "whole"), batch_size=20)
    bitcl.fit(_unseeded_max_range_model(0), _tasks(3), "blip", out=str(tmp_path / "cut"), batch_size=20)
    (tmp_path / "cut" / "results.json").unlink()  # as if interrupted during task 2
    (tmp_path / "cut" / "checkpoints" / "task-2.safetensors").unlink()
    fresh = _unseeded_max_range_model(1)
    assert fresh[0].scales != _unseeded_max_range_model(0)[0].scales  # the case that used to be refused
    resumed = bitcl.fit(fresh, _tasks(3), "blip", out=str(tmp_path / "cut"), resume=True, batch_size=20)
    assert resumed.accuracy_matrix == whole.accuracy_matrix and resumed.capacity == whole.capacity
    assert fresh[0].scales == _unseeded_max_range_model(0)[0].scales
    saved, _ = ckpt.read_checkpoint(tmp_path / "whole" / "checkpoints" / "task-2.safetensors")
    assert torch.equal(fresh[0].weight_codes, saved["0.weight.codes"])


def test_fit_resume_still_refuses_another_architecture(run_dir):
    """Only the architecture is checked, but it is: a layer of another size is refused."""
    out, _ = run_dir
    (out / "results.json").unlink()
    other = nn.Sequential(nn.Linear(6, 3))
    bitcl.quantize_(other, bitcl.BitConfig(bits=8, range="fixed"))
    with pytest.raises(CheckpointError, match="different architecture"):
        bitcl.fit(other, [(d, d) for d, _ in _tasks()], "blip", out=str(out), resume=True, batch_size=20)


def test_how_a_run_is_invoked_never_counts_as_another_setting(run_dir):
    """out, overwrite, resume, quiet and debug may change between a run and its resumption (a CLI run's
    config records them, a fit run's does not): never listed as mismatches."""
    out, config = run_dir
    invoked = {**config, "out": "elsewhere", "overwrite": False, "resume": True, "quiet": True, "debug": False}
    assert changed_settings(config, invoked) == []
    model = _model()
    assert resume_latest(RunDirectory(out, resume=True), invoked, model, _blip(model)) is not None


def test_resume_of_a_folder_that_does_not_exist_is_an_error(tmp_path):
    """A typo in --resume's folder stops with an error naming it, instead of starting a whole fresh run."""
    missing = tmp_path / "rnus" / "blip"
    with pytest.raises(ConfigError, match=rf"^--resume: {missing} does not exist"):
        bitcl.fit(_model(), _tasks(), "blip", out=str(missing), resume=True, batch_size=20)
    assert not missing.exists()
    with pytest.raises(ConfigError, match="--resume needs --out"):
        bitcl.fit(_model(), _tasks(), "blip", resume=True, batch_size=20)
