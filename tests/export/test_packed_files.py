"""Packed files: load_packed and NumpyRuntime refuse every malformed file with one line, never half-use one."""
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from bitcl.errors import CheckpointError, DataError
from bitcl.export import NumpyRuntime, export_packed, load_packed
from tests.robustness import fixtures as fx

Q = fx.QUANTIZED


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A valid packed file of the fixture model (task 1 of a task-incremental run), 4 of 6 bits kept."""
    folder = tmp_path_factory.mktemp("packed")
    fx.write_checkpoint(folder / "task-1.safetensors", task=1)
    export_packed(folder / "task-1.safetensors", folder / "model.safetensors", task=1, bits=4)
    return folder / "model.safetensors"


def parts(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["bitcl_packed"])


def write(path, tensors, meta):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"bitcl_packed": json.dumps(meta)})
    return path


def _q(meta, key, value):
    meta["quantized"][Q][key] = value


BAD_PACKED = [
    ("format version", lambda t, m: m.__setitem__("format_version", 2), "format_version must lie in 1..1"),
    ("bits stored 0", lambda t, m: _q(m, "bits_stored", 0), "bits_stored must lie in 1..6"),
    ("bits stored above trained", lambda t, m: _q(m, "bits_stored", 7), "bits_stored must lie in 1..6"),
    ("bits trained 64", lambda t, m: _q(m, "bits_trained", 64), "bits_trained must lie in 2..24"),
    ("scale NaN", lambda t, m: _q(m, "scale", float("nan")), "scale must be finite"),
    ("scale negative", lambda t, m: _q(m, "scale", -0.5), "scale must be > 0"),
    ("shape negative", lambda t, m: _q(m, "shape", [-12, 64]), "shape must be a list of positive sizes"),
    ("shape huge", lambda t, m: _q(m, "shape", [10 ** 6, 10 ** 6]), "must be uint8 (4, 125000000000)"),
    ("planes shape", lambda t, m: t.__setitem__(f"{Q}.planes", t[f"{Q}.planes"][:, :-1]), ".planes' must be uint8"),
    ("planes dtype", lambda t, m: t.__setitem__(f"{Q}.planes", t[f"{Q}.planes"].int()), ".planes' must be uint8"),
    ("planes missing", lambda t, m: t.pop(f"{Q}.planes"), "has no 'backbone.layers.1.weight.planes'"),
    ("orphan planes", lambda t, m: m["quantized"].pop(Q), "has no entry in the metadata"),
    ("head NaN", lambda t, m: t["heads.1.weight"].view(-1).__setitem__(0, float("inf")), "NaN or infinite"),
    ("head float64", lambda t, m: t.__setitem__("heads.1.weight", t["heads.1.weight"].double()), "must be float32"),
    ("task out of range", lambda t, m: m.__setitem__("task", 5), "task must lie in 0..1"),
    ("active outputs", lambda t, m: m.__setitem__("active_outputs", 99), "active_outputs must lie in"),
    ("pixel scale zero", lambda t, m: m["preprocessing"].__setitem__("pixel_scale", 0), "pixel_scale must be > 0"),
    ("permutation claimed", lambda t, m: m["preprocessing"].__setitem__("permutation", True), "has no 'input.perm"),
    ("not a permutation", lambda t, m: t.__setitem__("input.permutation", torch.zeros(64, dtype=torch.int64))
     or m["preprocessing"].__setitem__("permutation", True), "is not a permutation"),
    ("model bits", lambda t, m: m["model"].__setitem__("bits", 25), "model.bits must lie in 2..24"),
    ("model hidden huge", lambda t, m: m["model"].__setitem__("hidden", [10 ** 7]), "asks for a layer of 10,000,000"),
    ("metadata a list", lambda t, m: m.clear() or m.update({"x": []}), "format_version"),
    ("layer list empty", lambda t, m: m.__setitem__("layers", []), "layers must be a non-empty list"),
    ("layer missing", lambda t, m: m["layers"][0].__setitem__("name", "backbone.layers.3"),
     "backbone.layers.3.weight must exist with the stated linear shape [12, 64], the file has none"),
    ("layer shape", lambda t, m: m["layers"][0].__setitem__("shape", [12, 63]), "the file has [12, 64]"),
    ("layer kind", lambda t, m: m["layers"][0].__setitem__("kind", "lstm"), "'kind' must be one of linear, conv"),
    ("layer op", lambda t, m: m["layers"][0].__setitem__("after", ["gelu"]), "unknown op 'gelu'"),
    ("layer pool on features", lambda t, m: m["layers"][0].__setitem__("after", ["maxpool2"]), "maxpool2 after"),
    ("layer twice", lambda t, m: m["layers"].append(dict(m["layers"][0])), "appears twice"),
    ("layer chain", lambda t, m: m["layers"].insert(0, {"name": "heads.1", "kind": "linear", "shape": [2, 12],
                                                        "after": []}), "heads.1 takes 12 inputs, the layer before gives 64"),
    ("layer not listed", lambda t, m: t.__setitem__("backbone.extra.weight", torch.zeros(2, 2)),
     "does not use tensor 'backbone.extra.weight'"),
]


@pytest.mark.parametrize("name, change, message", BAD_PACKED, ids=[c[0] for c in BAD_PACKED])
def test_malformed_packed_file_is_refused_by_both_readers(packed, tmp_path, name, change, message):
    """load_packed (torch) and NumpyRuntime (numpy) refuse the same defect with the same one line."""
    tensors, meta = parts(packed)
    change(tensors, meta)
    bad = write(tmp_path / "bad.safetensors", tensors, meta)
    for reader in (load_packed, NumpyRuntime):
        with pytest.raises(CheckpointError) as caught:
            reader(bad)
        assert message in str(caught.value) and str(caught.value).startswith(str(bad)), (reader, caught.value)


def test_missing_or_extra_layer_is_refused_not_left_at_random_init(packed, tmp_path):
    """A file without a head the model needs, or with a tensor the model lacks, is refused by load_packed."""
    tensors, meta = parts(packed)
    del tensors["heads.1.bias"]
    with pytest.raises(CheckpointError, match="missing tensor 'heads.1.bias'"):
        load_packed(write(tmp_path / "a.safetensors", tensors, meta))
    tensors, meta = parts(packed)
    tensors["heads.7.weight"] = torch.zeros(2, 12)
    with pytest.raises(CheckpointError, match="'heads.7.weight' is not a parameter"):
        load_packed(write(tmp_path / "b.safetensors", tensors, meta))


def test_layer_list_is_followed_and_files_without_it_still_run(packed, tmp_path):
    """The runtime runs the file's layer list (a list without the ReLU changes the logits); a file
    written before the list existed runs through the derived MLP list with the same logits."""
    tensors, meta = parts(packed)
    assert meta["layers"] == [{"name": Q[:-len(".weight")], "kind": "linear", "shape": [12, 64], "after": ["relu"]}]
    pixels = np.random.default_rng(1).integers(0, 256, (5, 64))
    want = NumpyRuntime(packed)(pixels)
    with torch.no_grad():
        np.testing.assert_allclose(want, load_packed(packed).forward_raw(torch.tensor(pixels, dtype=torch.float32)).numpy(),
                                   rtol=1e-5, atol=1e-5)
    old = dict(meta)
    del old["layers"]
    assert np.array_equal(NumpyRuntime(write(tmp_path / "old.safetensors", tensors, old))(pixels), want)
    meta["layers"][0]["after"] = []
    linear = NumpyRuntime(write(tmp_path / "linear.safetensors", tensors, meta))(pixels)
    assert not np.allclose(linear, want)


def test_runtime_refuses_pixels_of_the_wrong_size(packed):
    """NumpyRuntime refuses inputs that are not n x pixels integers in 0..255 (DataError, a ValueError)."""
    runtime = NumpyRuntime(packed)
    assert runtime(np.zeros((2, 64))).shape == (2, 2)
    for bad in (np.zeros((2, 63)), np.full((2, 64), 256.0), np.full((1, 64), 0.5), np.zeros((2, 64), complex)):
        with pytest.raises(DataError):
            runtime(bad)


def test_truncated_packed_file_and_foreign_files(packed, tmp_path):
    """Truncated bytes, a checkpoint instead of a packed file, and a missing file: one-line CheckpointError."""
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(packed.read_bytes()[:-50])
    other = fx.write_checkpoint(tmp_path / "task-0.safetensors") and tmp_path / "task-0.safetensors"
    for path, message in ((cut, "not a readable"), (other, "no 'bitcl_packed' metadata"),
                          (tmp_path / "none.safetensors", "no such packed file")):
        for reader in (load_packed, NumpyRuntime):
            with pytest.raises(CheckpointError, match=message):
                reader(path)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_packed_files_load_or_are_refused_cleanly(packed, tmp_path_factory, data):
    """Property: a packed file with bytes changed or cut loads in both readers (which then agree) or is
    refused with CheckpointError, never another exception."""
    blob = bytearray(packed.read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("m") / "p.safetensors"
    path.write_bytes(bytes(blob[: data.draw(st.integers(len(blob) // 2, len(blob)))]))
    try:
        model, runtime = load_packed(path), NumpyRuntime(path)
    except CheckpointError as error:
        assert "\n" not in str(error)
        return
    pixels = np.random.default_rng(0).integers(0, 256, (3, 64))
    want = model.forward_raw(torch.tensor(pixels, dtype=torch.float32)).detach().numpy()
    assert np.allclose(runtime(pixels), want, atol=1e-4, equal_nan=True)
