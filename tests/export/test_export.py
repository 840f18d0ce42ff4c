"""Edge export: packed round trips are exact, sizes as claimed, numpy and ONNX runtimes agree."""
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from bitcl.config import RunConfig
from bitcl.data import build_scenario, load_source
from bitcl.engine import run
from bitcl.export import NumpyRuntime, export_packed, load_checkpoint_model, load_packed
from bitcl.quant import bit_states
from tests.conftest import cli


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory, small_npz):
    out = tmp_path_factory.mktemp("mlp")
    run(RunConfig(method="blip", benchmark="permuted-mnist", tasks=2, data=small_npz, epochs=1, hidden=[64],
                  out=str(out), quiet=True))
    return out


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory, small_npz):
    out = tmp_path_factory.mktemp("conv")
    run(RunConfig(method="blip", benchmark="split-mnist", scenario="class", data=small_npz, epochs=1, arch="conv",
                  bits=8, out=str(out), quiet=True))
    return out


def raw_test_pixels(small_npz, n=64):
    with np.load(small_npz) as f:
        return f["x"][~f["train"]][:n].astype(np.float32)


@pytest.mark.slow
def test_packed_round_trip_is_exact(mlp_run, small_npz, tmp_path):
    """load_packed gives exactly the checkpoint model's outputs; planes are N bits per weight."""
    ckpt = mlp_run / "checkpoints" / "task-1.safetensors"
    summary = export_packed(ckpt, tmp_path / "p.safetensors", task=1)
    model, _ = load_checkpoint_model(ckpt)
    packed = load_packed(tmp_path / "p.safetensors")
    raw = torch.from_numpy(raw_test_pixels(small_npz))
    with torch.no_grad():
        assert torch.equal(packed.forward_raw(raw), model(packed.preprocess(raw), 1))
        assert torch.equal(packed(raw / 255), model(packed.preprocess(raw), 1))  # 0..1, as training
    for name, state in bit_states(model):
        assert torch.equal(dict(bit_states(packed.model))[name].codes, state.codes)
    n = sum(s.codes.numel() for _, s in bit_states(model))
    assert summary["plane_bytes"] == sum(20 * ((s.codes.numel() + 7) // 8) for _, s in bit_states(model))
    assert summary["plane_bytes_per_weight"] == pytest.approx(20 / 8, rel=1e-3) and summary["quantized_weights"] == n


def test_permutation_travels_with_the_file(mlp_run, small_npz, tmp_path):
    """The packed model of a permuted task, fed raw pixels, predicts as the engine does on that task."""
    ckpt = mlp_run / "checkpoints" / "task-1.safetensors"
    export_packed(ckpt, tmp_path / "p.safetensors", task=1)
    packed = load_packed(tmp_path / "p.safetensors")
    scenario = build_scenario("permuted-mnist", load_source(small_npz), "task", 2, 0)
    task = scenario.tasks[1]
    model, _ = load_checkpoint_model(ckpt)
    with torch.no_grad():  # 0..1 pixels as stored: the file permutes them itself
        assert torch.equal(packed(task.x_test[:50]).argmax(1), model(task.inputs(task.x_test[:50]), 1).argmax(1))


@pytest.mark.parametrize("keep", [20, 6, 1])
def test_numpy_runtime_matches_torch(mlp_run, small_npz, tmp_path, keep):
    """The numpy runtime, from the planes alone, predicts exactly what torch predicts."""
    path = tmp_path / "p.safetensors"
    summary = export_packed(mlp_run / "checkpoints" / "task-1.safetensors", path, task=0, bits=keep)
    assert summary["bits_per_weight"] == keep
    raw = raw_test_pixels(small_npz)
    got = NumpyRuntime(path)(raw)
    with torch.no_grad():
        want = load_packed(path).forward_raw(torch.from_numpy(raw)).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.array_equal(got.argmax(1), want.argmax(1))


@pytest.mark.slow
def test_conv_class_incremental_numpy_runtime(conv_run, small_npz, tmp_path):
    """Conv nets and masked class-incremental heads run in numpy too."""
    path = tmp_path / "c.safetensors"
    export_packed(conv_run / "checkpoints" / "task-4.safetensors", path)
    raw = raw_test_pixels(small_npz, 32)
    got = NumpyRuntime(path)(raw)
    with torch.no_grad():
        want = load_packed(path).forward_raw(torch.from_numpy(raw)).double().numpy()
    assert np.array_equal(got.argmax(1), want.argmax(1))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-4)


def test_conv_layer_list_in_the_file_and_files_without_it(conv_run, small_npz, tmp_path):
    """The conv net's packed file lists its layers (conv/ReLU/pool x2, linear/ReLU); without the list
    (a file written before it existed) the runtime derives it and gives the same logits."""
    from safetensors import safe_open
    path = tmp_path / "c.safetensors"
    export_packed(conv_run / "checkpoints" / "task-4.safetensors", path)
    with safe_open(str(path), "np") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["bitcl_packed"])
    assert [(e["name"], e["kind"], e["after"]) for e in meta["layers"]] == [
        ("backbone.layers.0", "conv", ["relu", "maxpool2"]), ("backbone.layers.3", "conv", ["relu", "maxpool2"]),
        ("backbone.layers.7", "linear", ["relu"])]
    assert meta["layers"][1]["shape"] == [64, 32, 3, 3] and meta["layers"][0]["padding"] == 1
    del meta["layers"]
    from safetensors.numpy import save_file as save_numpy
    save_numpy(tensors, str(tmp_path / "old.safetensors"), metadata={"bitcl_packed": json.dumps(meta)})
    raw = raw_test_pixels(small_npz, 16)
    assert np.array_equal(NumpyRuntime(tmp_path / "old.safetensors")(raw), NumpyRuntime(path)(raw))


def test_reduced_bits_shrink_the_file(mlp_run, tmp_path):
    """--bits B stores exactly B planes: plane bytes scale with B."""
    ckpt = mlp_run / "checkpoints" / "task-1.safetensors"
    full = export_packed(ckpt, tmp_path / "a.safetensors", task=0)
    four = export_packed(ckpt, tmp_path / "b.safetensors", task=0, bits=4)
    assert four["plane_bytes"] * 5 == full["plane_bytes"]


@pytest.mark.slow
def test_onnx_export_matches_torch_with_dynamic_batch(conv_run, mlp_run, small_npz, tmp_path):
    """ONNX (brevitas QCDQ) outputs equal torch's to 1e-5 on real digits, for batch 1 and 13."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    from bitcl.export.onnx import brevitas_model, export_onnx
    raw = torch.from_numpy(raw_test_pixels(small_npz, 13))
    for ckpt, task, bits in [(conv_run / "checkpoints" / "task-4.safetensors", None, None),
                             (mlp_run / "checkpoints" / "task-1.safetensors", 1, 7)]:
        path = tmp_path / f"m{bits}.onnx"
        summary = export_onnx(ckpt, path, task=task, bits=bits, check_inputs=raw)
        assert summary["max_abs_diff_vs_torch"] <= 1e-5
        session = ort.InferenceSession(str(path))
        module, _ = brevitas_model(ckpt, task, bits)
        for batch in (raw[:1], raw):
            got = session.run(None, {"pixels": batch.reshape(len(batch), -1).numpy()})[0]
            with torch.no_grad():
                want = module(batch.reshape(len(batch), -1)).numpy()
            np.testing.assert_allclose(got, want, atol=1e-5)
        packed = tmp_path / f"p{bits}.safetensors"
        export_packed(ckpt, packed, task=task, bits=bits)
        assert np.array_equal(got.argmax(1), load_packed(packed).forward_raw(raw).argmax(1).numpy())


@pytest.mark.slow
def test_bits_analysis_writes_curves(mlp_run):
    """analyze bits: accuracy for B = 1..N per task; full precision equals the run's final row."""
    done = cli("analyze", "bits", mlp_run)
    assert done.returncode == 0, done.stderr
    result = json.loads((mlp_run / "bits.json").read_text())
    final = json.loads((mlp_run / "results.json").read_text())["accuracy_matrix"][-1]
    assert result["accuracy_full"] == pytest.approx(final)
    assert len(result["accuracy_by_bits"]) == 20 and len(result["accuracy_frozen_bits_only"]) == 2


def test_bad_export_inputs_are_one_line_exit_2(mlp_run, tmp_path, capsys):
    """Truncated, foreign or mismatched checkpoints, bad task ids and bit counts, outputs that would
    overwrite the run: one line, exit 2 (in-process; one case also as a real subprocess)."""
    from bitcl.cli import main
    ckpt = mlp_run / "checkpoints" / "task-1.safetensors"
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(ckpt.read_bytes()[:1000])
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    other = tmp_path / "other.safetensors"
    shutil.copy(ckpt, other)
    from safetensors import safe_open
    with safe_open(str(ckpt), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata())
    progress = json.loads(meta["bitcl_progress"])
    progress["model"]["hidden"] = [65]
    meta["bitcl_progress"] = json.dumps(progress)
    meta.pop("bitcl_digests")  # a file without digests (older bitcl): the value checks must still catch it
    save_file(tensors, str(other), metadata=meta)
    cases = [([truncated, "--format", "packed"], "not a readable"),
             ([foreign, "--format", "packed"], "not a bitcl checkpoint"),
             ([other, "--format", "packed"], "different architecture"),
             ([ckpt, "--format", "packed", "--task", "7"], "does not exist"),
             ([ckpt, "--format", "packed", "--task", "0", "--bits", "0"], "--bits must lie in 1..20"),
             ([ckpt, "--format", "packed", "--task", "0", "--bits", "21"], "--bits must lie in 1..20"),
             ([ckpt, "--format", "packed"], "needs --task"),
             ([ckpt, "--format", "onnx", "--task", "0"], "at most 8-bit"),
             ([tmp_path / "missing.safetensors", "--format", "packed"], "no such checkpoint")]
    before = ckpt.read_bytes()
    for out in (ckpt, mlp_run / "checkpoints" / "task-9.safetensors", mlp_run / "results.json"):
        cases.append(([ckpt, "--format", "packed", "--task", "0", "--out", out], "write it elsewhere"))
    for args, needle in cases:
        out = [] if "--out" in args else ["--out", tmp_path / "x.bin"]
        code = main(["export", *map(str, args), *map(str, out)])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and needle in lines[0], (args, lines)
    assert ckpt.read_bytes() == before and not (mlp_run / "checkpoints" / "task-9.safetensors").exists()
    done = cli("export", truncated, "--format", "packed", "--out", tmp_path / "x.bin")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "not a readable" in done.stderr


def test_onnx_states_every_requirement_at_once(mlp_run, tmp_path):
    """A 20-bit task-incremental checkpoint exported to ONNX with neither --task nor --bits: one line (exit 2)
    naming both requirements, not one per attempt; with both given it exports."""
    ckpt = mlp_run / "checkpoints" / "task-1.safetensors"
    done = cli("export", ckpt, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("bitcl export: error: ONNX export of this checkpoint needs --task T "
                                  "(a task-incremental model has one head per task: 0..1); and --bits 7 or fewer")
    ok = cli("export", ckpt, "--format", "onnx", "--task", "1", "--bits", "7", "--out", tmp_path / "m.onnx")
    assert ok.returncode == 0, ok.stderr


def test_packed_model_takes_0_to_1_pixels_like_the_checkpoint_model(mlp_run, small_npz, tmp_path):
    """load_packed's model and load_checkpoint_model's take the same 0..1 floats (training's convention) and
    agree exactly; 0..255 pixels given to the packed model are refused with a pointer to forward_raw."""
    from bitcl.errors import DataError
    ckpt = mlp_run / "checkpoints" / "task-1.safetensors"
    export_packed(ckpt, tmp_path / "p.safetensors", task=0)  # task 0 of permuted-mnist is unpermuted
    packed, (model, _) = load_packed(tmp_path / "p.safetensors"), load_checkpoint_model(ckpt)
    pixels = torch.from_numpy(raw_test_pixels(small_npz)) / 255
    with torch.no_grad():
        assert torch.equal(packed(pixels), model(pixels.view(-1, 1, 28, 28), 0))
        assert torch.equal(packed.forward_raw(pixels * 255).argmax(1), packed(pixels).argmax(1))
        with pytest.raises(DataError, match=r"takes pixels as 0\.\.1 floats.*got values up to 255.*forward_raw"):
            packed(pixels * 255)


def test_running_a_head_the_file_does_not_hold_names_the_heads_present(mlp_run, small_npz, tmp_path):
    """A file exported for task 1 holds head 1 only: task=0 is refused by both readers in one line naming the
    heads present (was a bare KeyError: 'heads.0.weight'), before any work; task=1 and the default run."""
    from bitcl.errors import DataError
    path = tmp_path / "p.safetensors"
    export_packed(mlp_run / "checkpoints" / "task-1.safetensors", path, task=1)
    raw = raw_test_pixels(small_npz, 8)
    runtime, packed = NumpyRuntime(path), load_packed(path)
    expected = ("task 0: this file holds no head for it (heads present: tasks 1); call with task=1, or export that "
                "task's head with bitcl export --task 0")
    with pytest.raises(DataError) as numpy_error:
        runtime(raw, task=0)
    with pytest.raises(DataError) as torch_error:
        packed.forward_raw(torch.from_numpy(raw), task=0)
    assert str(numpy_error.value) == str(torch_error.value) == expected
    assert np.array_equal(runtime(raw).argmax(1), runtime(raw, task=1).argmax(1))
    with torch.no_grad():
        assert np.array_equal(runtime(raw).argmax(1), packed.forward_raw(torch.from_numpy(raw)).argmax(1).numpy())


def test_numpy_runtime_docstring_example_flow(mlp_run, small_npz, tmp_path):
    """NumpyRuntime's docstring example, on this module's run: export a task, feed raw uint8 test images
    (n, 28, 28) as stored, get (n, classes) logits whose argmax is the checkpoint model's prediction."""
    ckpt = mlp_run / "checkpoints" / "task-1.safetensors"
    export_packed(ckpt, tmp_path / "blip.safetensors", task=0)
    rt = NumpyRuntime(tmp_path / "blip.safetensors")
    with np.load(small_npz) as f:
        images = f["x"][~f["train"]][:100]
    assert images.dtype == np.uint8 and images.shape == (100, 28, 28)
    logits = rt(images)
    model, _ = load_checkpoint_model(ckpt)
    with torch.no_grad():
        want = model(torch.from_numpy(images).float().div(255).view(-1, 1, 28, 28), 0).argmax(1).numpy()
    assert logits.shape == (100, 10) and np.array_equal(logits.argmax(1), want)
