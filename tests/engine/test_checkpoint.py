"""Checkpoints: atomic writes never corrupt what was there; contract keys; no unpickling."""
import json
import os

import pytest
import torch
from safetensors import safe_open

from bitcl.checkpoint import atomic_write, atomic_write_text, load_model_state, read_checkpoint, save_checkpoint
from bitcl.errors import CheckpointError
from bitcl.models import build_model
from bitcl.quant import bit_states


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    """A write that dies half-way leaves the previous file byte-identical and no stray temp file."""
    target = tmp_path / "results.json"
    atomic_write_text(target, "old")

    def broken(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError("disk full")
    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["results.json"]
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # usual permissions, not mkstemp's


def test_checkpoint_contract_and_round_trip(tmp_path):
    """codes/frozen under '<name>.codes/.frozen', 'bitcl' metadata with bits and scale; exact reload."""
    torch.manual_seed(0)
    model = build_model("mlp", (1, 28, 28), [2, 2], "task", "quant", 12, [16])
    for _, s in bit_states(model):
        s.freeze(torch.randint(0, 13, s.codes.shape))
    path = tmp_path / "task-0.safetensors"
    save_checkpoint(path, model, {"fisher/x": torch.ones(3)}, {"task": 0})
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["bitcl"])
        keys = set(f.keys())
    assert meta["backbone.layers.1.weight"]["bits"] == 12
    assert {"backbone.layers.1.weight.codes", "backbone.layers.1.weight.frozen", "strategy/fisher/x"} <= keys
    assert not any(k.endswith(("_codes", "_frozen")) for k in keys)
    tensors, _ = read_checkpoint(path)
    other = build_model("mlp", (1, 28, 28), [2, 2], "task", "quant", 12, [16])
    load_model_state(other, tensors)
    for (_, a), (_, b) in zip(bit_states(model), bit_states(other)):
        assert torch.equal(a.codes, b.codes) and torch.equal(a.frozen, b.frozen)
    wrong = build_model("mlp", (1, 28, 28), [2, 2], "task", "quant", 12, [17])
    with pytest.raises(CheckpointError, match="different architecture"):
        load_model_state(wrong, tensors)
