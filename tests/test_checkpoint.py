"""Checkpoints: atomic writes never corrupt what was there; contract keys; no unpickling; every
malformed tensor or metadata value refused with one line naming the file and what is wrong."""
import copy
import json
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from bitcl.checkpoint import atomic_write, atomic_write_text, load_model_state, read_checkpoint, save_checkpoint
from bitcl.errors import CheckpointError
from bitcl.models import build_model
from bitcl.quant import bit_states
from tests.robustness import fixtures as fx

Q = fx.QUANTIZED


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
    save_checkpoint(path, model, {"fisher/x": torch.ones(3)}, None)
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["bitcl"])
        keys = set(f.keys())
    assert meta["backbone.layers.1.weight"]["bits"] == 12
    assert {"backbone.layers.1.weight.codes", "backbone.layers.1.weight.frozen", "strategy/fisher/x"} <= keys
    assert not any(k.endswith(("_codes", "_frozen")) for k in keys)
    tensors, decoded = read_checkpoint(path)
    other = build_model("mlp", (1, 28, 28), [2, 2], "task", "quant", 12, [16])
    load_model_state(other, tensors, meta=decoded)
    for (_, a), (_, b) in zip(bit_states(model), bit_states(other)):
        assert torch.equal(a.codes, b.codes) and torch.equal(a.frozen, b.frozen)
    wrong = build_model("mlp", (1, 28, 28), [2, 2], "task", "quant", 12, [17])
    with pytest.raises(CheckpointError, match="different architecture"):
        load_model_state(wrong, tensors)
    narrower = build_model("mlp", (1, 28, 28), [2, 2], "task", "quant", 10, [16])
    with pytest.raises(CheckpointError, match="has 12 bits in the checkpoint but 10 in the model"):
        load_model_state(narrower, tensors, str(path), decoded)


def _set(tensors, meta, key, value):
    tensors[key] = value


def _meta(path, value):
    return lambda tensors, meta: fx.set_path(meta, path, value) and None


# (name, change to the valid parts, message): each one thing wrong in an otherwise valid checkpoint
BAD_CHECKPOINTS = [
    ("code above the window", lambda t, m: t[f"{Q}.codes"].view(-1).__setitem__(0, 2 ** 5), "outside the 6-bit range"),
    ("code below the window", lambda t, m: t[f"{Q}.codes"].view(-1).__setitem__(3, -2 ** 5), "outside the 6-bit"),
    ("frozen above bits", lambda t, m: t[f"{Q}.frozen"].view(-1).__setitem__(5, 7), "frozen count 7 at flat index 5"),
    ("codes float", lambda t, m: _set(t, m, f"{Q}.codes", t[f"{Q}.codes"].float()), "codes must be torch.int32"),
    ("frozen int32", lambda t, m: _set(t, m, f"{Q}.frozen", t[f"{Q}.frozen"].int()), "frozen must be torch.uint8"),
    ("codes shape", lambda t, m: _set(t, m, f"{Q}.codes", t[f"{Q}.codes"][:3]), "shape of its codes"),
    ("codes missing", lambda t, m: t.pop(f"{Q}.codes"), "has no 'backbone.layers.1.weight.codes'"),
    ("orphan codes", lambda t, m: m["bitcl"].pop(Q), "has no entry in the 'bitcl' metadata"),
    ("latent NaN", lambda t, m: t["heads.0.weight"].view(-1).__setitem__(0, float("nan")), "NaN or infinite"),
    ("complex tensor", lambda t, m: _set(t, m, "heads.0.bias", torch.zeros(2, dtype=torch.complex64)), "complex"),
    ("bits 64", _meta(["bitcl", Q, "bits"], 64), "bits must lie in 2..24, got 64"),
    ("bits 1", _meta(["bitcl", Q, "bits"], 1), "bits must lie in 2..24"),
    ("bits string", _meta(["bitcl", Q, "bits"], "6"), "bits must be an integer"),
    ("bits float", _meta(["bitcl", Q, "bits"], 6.0), "bits must be an integer"),
    ("scale zero", _meta(["bitcl", Q, "scale"], 0.0), "scale must be > 0"),
    ("scale negative", _meta(["bitcl", Q, "scale"], -1e-3), "scale must be > 0"),
    ("scale string", _meta(["bitcl", Q, "scale"], "0.1"), "scale must be a number"),
    ("entry a list", _meta(["bitcl", Q], [6, 0.1]), "expected a JSON object, got a list"),
    ("bitcl a list", _meta(["bitcl"], []), "bitcl: expected a JSON object"),
    ("progress a list", _meta(["bitcl_progress"], [0, 1]), "bitcl_progress: expected a JSON object"),
    ("progress task string", _meta(["bitcl_progress", "task"], "0"), "task must be an integer"),
    ("progress task huge", _meta(["bitcl_progress", "task"], 10 ** 30), "task must lie in"),
    ("progress config list", _meta(["bitcl_progress", "config"], ["blip"]), "config: expected a JSON object"),
    ("progress rows", _meta(["bitcl_progress", "result", "accuracy_matrix"], [[0.5, 0.5], [0.5, 0.5]]),
     "accuracy_matrix has 2 rows, expected 1"),
    ("progress columns", _meta(["bitcl_progress", "result", "accuracy_matrix"], [[0.5]]), "has 1 entries, expected 2"),
    ("accuracy above 1", _meta(["bitcl_progress", "result", "accuracy_matrix"], [[0.5, 1.5]]), "must lie in [0, 1]"),
    ("accuracy list entries", _meta(["bitcl_progress", "result", "accuracy_matrix"], [[[0.5], 0.5]]),
     "must be a number, got a list"),
    ("timing too short", _meta(["bitcl_progress", "result", "timing", "train_seconds"], []), "has 0 entries"),
    ("timing negative", _meta(["bitcl_progress", "result", "timing", "eval_seconds"], [-1.0]), "must lie in"),
    ("state bytes negative", _meta(["bitcl_progress", "result", "state_bytes"], [-5]), "state_bytes[0] must lie"),
    ("capacity above 1", _meta(["bitcl_progress", "result", "capacity"], [2.0]), "capacity[0] must lie"),
    ("model bits 30", _meta(["bitcl_progress", "model", "bits"], 30), "model.bits must lie in 2..24"),
    ("model hidden 0", _meta(["bitcl_progress", "model", "hidden"], [0]), "model.hidden[0] must lie"),
    ("model setting", _meta(["bitcl_progress", "model", "setting"], "both"), "setting' must be one of"),
    ("heads vs tasks", _meta(["bitcl_progress", "model", "head_sizes"], [2]), "1 heads for 2 tasks"),
]


@pytest.mark.parametrize("name, change, message", BAD_CHECKPOINTS, ids=[c[0] for c in BAD_CHECKPOINTS])
def test_malformed_checkpoint_is_refused(tmp_path, name, change, message):
    """Each single defect (tensor dtype/shape/values, metadata type/range, progress consistency) is a
    CheckpointError naming the file, never a traceback or a silently used value."""
    tensors, meta = fx.checkpoint_parts()
    change(tensors, meta)
    path = fx.write_parts(tmp_path / "task-0.safetensors", tensors, meta)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    text = str(caught.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "not a readable safetensors checkpoint"),
    (lambda b: b[:7], "not a readable safetensors checkpoint"),
    (lambda b: b"", "not a readable safetensors checkpoint"),
    (lambda b: (10 ** 12).to_bytes(8, "little") + b[8:], "not a readable safetensors checkpoint"),
    (lambda b: b"PK\x03\x04" + b[4:], "not a readable safetensors checkpoint"),
])
def test_truncated_or_garbled_file_is_refused(tmp_path, damage, message):
    """Truncated files, a header length of 10^12 and foreign bytes: one-line CheckpointError."""
    path = tmp_path / "task-0.safetensors"
    fx.write_checkpoint(path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)


def test_metadata_that_is_not_json_is_refused(tmp_path):
    """A 'bitcl' metadata string that is not JSON names the metadata key."""
    tensors, meta = fx.checkpoint_parts()
    path = fx.write_parts(tmp_path / "c.safetensors", tensors, {}, raw={"bitcl": "{not json"})
    with pytest.raises(CheckpointError, match="metadata 'bitcl' is not valid JSON"):
        read_checkpoint(path)


def test_load_refuses_a_scale_other_than_the_models(tmp_path):
    """A recorded scale that differs from the model's would silently rescale every weight: refused."""
    tensors, meta = fx.checkpoint_parts()
    meta["bitcl"][Q]["scale"] *= 2
    path = fx.write_parts(tmp_path / "c.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match="outside the quantisation step of its code"):
        read_checkpoint(path)  # the latents no longer lie at scale * codes
    tensors, meta = fx.checkpoint_parts()
    with pytest.raises(CheckpointError, match="scale .* in the checkpoint but"):
        load_model_state(fx.build(fx.model_spec()), tensors, "c", {"bitcl": {**meta["bitcl"], Q: {
            "bits": meta["bitcl"][Q]["bits"], "scale": meta["bitcl"][Q]["scale"] * 2}}})


JSON = fx.json_values()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_metadata_value_is_accepted_or_refused_cleanly(tmp_path_factory, data):
    """Property: replacing any node of valid metadata with arbitrary JSON gives either a checkpoint that
    passes validation or a CheckpointError, never another exception."""
    tensors, meta = fx.checkpoint_parts()
    spots = [p for p in fx.json_paths(meta) if p]
    fx.set_path(meta, data.draw(st.sampled_from(spots)), data.draw(JSON))
    path = fx.write_parts(tmp_path_factory.mktemp("c") / "task-0.safetensors", tensors, copy.deepcopy(meta))
    try:
        read_checkpoint(path)
    except CheckpointError as error:
        assert "\n" not in str(error) and str(error).startswith(str(path))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(codes=st.lists(st.integers(-2 ** 31, 2 ** 31 - 1), min_size=12, max_size=12),
       frozen=st.lists(st.integers(0, 255), min_size=12, max_size=12), bits=st.integers(2, 24))
def test_accepted_exactly_when_codes_and_frozen_counts_fit_the_window(tmp_path_factory, codes, frozen, bits):
    """Property: a checkpoint's bias codes/frozen counts are accepted if and only if every code lies in
    [-(2^(N-1) - 1), 2^(N-1) - 1] and every frozen count is <= N."""
    tensors, meta = fx.checkpoint_parts()
    name = "backbone.layers.1.bias"
    tensors[f"{name}.codes"] = torch.tensor(codes, dtype=torch.int32)
    tensors[f"{name}.frozen"] = torch.tensor(frozen, dtype=torch.uint8)
    meta["bitcl"][name]["bits"] = bits
    scale = meta["bitcl"][name]["scale"]  # the latents follow the codes (else they are refused on their own)
    tensors[name] = (torch.tensor(codes, dtype=torch.float64) * scale).to(torch.float32)
    path = fx.write_parts(tmp_path_factory.mktemp("w") / "c.safetensors", tensors, meta)
    m = 2 ** (bits - 1) - 1
    fits = all(-m <= c <= m for c in codes) and all(k <= bits for k in frozen)
    try:
        read_checkpoint(path)
        accepted = True
    except CheckpointError as error:
        accepted = False
        assert name in str(error)
    assert accepted == fits
