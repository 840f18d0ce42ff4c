"""Nothing damaged gets through: digests, the one checkpoint validator (model and strategy parts),
strict metadata, error classes through the CLI, and no command writing over a run's files."""
from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from bitcl import checkpoint as ckpt
from bitcl.checkpoint import read_checkpoint
from bitcl.cli import main
from bitcl.errors import CheckpointError, EnvironmentFault, IntegrityError
from bitcl.export import load_checkpoint_model
from tests.robustness import fixtures as fx

Q = fx.QUANTIZED


def _parts(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def _legacy(path: Path, change) -> Path:
    """Rewrite a checkpoint without digests (as bitcl wrote them before), after ``change(tensors, meta)``
    on its tensors and decoded metadata: only the value checks stand between it and a reader."""
    tensors, raw = _parts(path)
    meta = {k: json.loads(v) for k, v in raw.items() if k != ckpt.DIGESTS}
    change(tensors, meta)
    return fx.write_parts(path, tensors, meta)


@pytest.fixture
def written(tmp_path) -> Path:
    path = tmp_path / "run" / "checkpoints" / "task-1.safetensors"
    fx.write_checkpoint(path, task=1)
    return path


def test_a_written_checkpoint_carries_a_digest_per_tensor_and_metadata_entry(written):
    tensors, raw = _parts(written)
    record = json.loads(raw[ckpt.DIGESTS])
    assert record["algorithm"] == "sha256"
    assert set(record["tensors"]) == set(tensors)
    assert set(record["metadata"]) == {"bitcl", "bitcl_progress"}
    assert read_checkpoint(written)[1][ckpt.DIGESTED] is True


def test_a_flipped_payload_byte_is_refused_naming_the_tensor(written):
    """One byte of a latent changed, in place (header untouched): the digest names the tensor."""
    tensors, _ = _parts(written)
    blob = bytearray(written.read_bytes())
    needle = tensors[Q].contiguous().view(torch.uint8).numpy().tobytes()[:64]
    at = bytes(blob).index(needle) + 5
    blob[at] ^= 0x01
    written.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match=rf"{written.name}: tensor '{Q}' does not match its recorded digest"):
        read_checkpoint(written)


def test_changed_metadata_is_refused_by_its_digest(written):
    tensors, raw = _parts(written)
    raw["bitcl_progress"] = raw["bitcl_progress"].replace('"seed": 0', '"seed": 1', 1)
    save_file(tensors, str(written), metadata=raw)
    with pytest.raises(IntegrityError, match="metadata entry 'bitcl_progress' does not match"):
        read_checkpoint(written)


def _fisher(tensors):
    return f"strategy/fisher/{Q}"


DAMAGES = {  # what the issue listed as accepted with exit 0; each now refused even without digests
    "fisher nan": (lambda t, m: t[_fisher(t)].view(-1).__setitem__(0, float("nan")), "NaN or infinite"),
    "fisher negative": (lambda t, m: t[_fisher(t)].view(-1).__setitem__(0, -1.0), "negative"),
    "fisher wrong shape": (lambda t, m: t.__setitem__(_fisher(t), torch.ones(3)), "must be torch.float32 of shape"),
    "fisher removed": (lambda t, m: t.pop(_fisher(t)), "is missing"),
    "tasks_seen removed": (lambda t, m: t.pop("strategy/tasks_seen"), "'tasks_seen' of method 'blip' is missing"),
    "tasks_seen negative": (lambda t, m: t.__setitem__("strategy/tasks_seen", torch.tensor(-1)), "must lie in 0..2"),
    "tasks_seen fractional": (lambda t, m: t.__setitem__("strategy/tasks_seen", torch.tensor(1.5)),
                              "must be torch.int64"),
    "undeclared state": (lambda t, m: t.__setitem__("strategy/extra", torch.ones(1)), "not part of method 'blip'"),
    "latent x1e6": (lambda t, m: t[Q].mul_(1e6), "outside the quantisation step"),
    "extra metadata key": (lambda t, m: m.__setitem__("other", {}), "unknown metadata entry 'other'"),
    "extra progress key": (lambda t, m: m["bitcl_progress"].__setitem__("note", 1), "unknown key 'note'"),
    "missing progress key": (lambda t, m: m["bitcl_progress"].pop("result"), "missing key 'result'"),
    "unknown result field": (lambda t, m: m["bitcl_progress"]["result"].__setitem__("bonus", 1),
                             "unknown key 'bonus'"),
    "unknown model key": (lambda t, m: m["bitcl_progress"]["model"].__setitem__("depth", 3), "unknown key 'depth'"),
    "unknown config key": (lambda t, m: m["bitcl_progress"]["config"].__setitem__("colour", 1), "unknown settings"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_legacy_checkpoints_are_refused_by_export_and_analysis(written, damage):
    """Without digests, the one validator still refuses every damage (export's and analyze's reader)."""
    change, message = DAMAGES[damage]
    _legacy(written, change)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint_model(written)


def test_an_undamaged_legacy_checkpoint_still_loads(written):
    _legacy(written, lambda t, m: None)
    model, spec = load_checkpoint_model(written)
    assert spec["arch"] == "mlp" and read_checkpoint(written)[1][ckpt.DIGESTED] is False


def test_a_legacy_model_description_without_later_keys_loads(written):
    def drop(t, m):
        for key in ("width", "bn", "dropout", "benchmark", "seed", "tasks", "permuted", "active_outputs",
                    "class_order"):
            m["bitcl_progress"]["model"].pop(key)
    _legacy(written, drop)
    assert load_checkpoint_model(written)[1]["bn"] == "first-task"


def test_the_export_cli_refuses_damage_in_one_line_exit_2(written, tmp_path, capsys):
    _legacy(written, DAMAGES["fisher nan"][0])
    assert main(["export", str(written), "--format", "packed", "--out", str(tmp_path / "p.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("bitcl export: error: ") and "fisher/" in err


# -- error classes through the CLI ----------------------------------------------------------------------
def test_disk_full_during_export_is_an_environment_fault_exit_1(written, tmp_path, monkeypatch, capsys):
    """A full disk: exit 1, one line naming the file and the OS reason, never 'internal error'."""
    import bitcl.export.packed as packed

    def full(tensors, filename, metadata=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(packed, "save_file", full)
    out = tmp_path / "p.safetensors"
    assert main(["export", str(written), "--format", "packed", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"bitcl export: error: {out}: file not written (No space left on device); nothing was written"
    assert not out.exists() and os.listdir(tmp_path) == ["run"]


def test_a_read_only_destination_is_an_environment_fault(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path))
    monkeypatch.setattr(ckpt.tempfile, "mkstemp", read_only)
    with pytest.raises(EnvironmentFault, match="Read-only file system"):
        ckpt.atomic_write_text(tmp_path / "x.txt", "x")


def test_a_missing_input_file_is_bad_input_exit_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "none.safetensors"), "--format", "packed", "--out",
                 str(tmp_path / "p")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_a_bug_is_reported_as_internal_error(monkeypatch, capsys):
    import bitcl.cli as cli

    def broken(argv):
        raise KeyError("oops")
    monkeypatch.setitem(cli.COMMANDS, "list", broken)
    assert main(["list"]) == 1
    assert "bitcl list: internal error: KeyError" in capsys.readouterr().err


@pytest.mark.parametrize("errno_name, code", [("ENOSPC", 1), ("EACCES", 1), ("EROFS", 1), ("ENOENT", 2),
                                              ("EISDIR", 2)])
def test_os_errors_reaching_main_are_classified(errno_name, code, monkeypatch, capsys):
    import bitcl.cli as cli
    number = getattr(errno, errno_name)

    def failing(argv):
        raise OSError(number, os.strerror(number), "/some/path")
    monkeypatch.setitem(cli.COMMANDS, "list", failing)
    assert main(["list"]) == code
    assert capsys.readouterr().err.strip() == f"bitcl list: error: /some/path: {os.strerror(number)}"


def test_no_command_lists_the_commands_on_stderr_exit_2():
    from tests.conftest import run_cli
    result = run_cli()
    assert result.returncode == 2 and result.stdout == ""
    for command in ("run", "rerun", "rl", "list", "report", "analyze", "export", "pretrain"):
        assert f"\n  {command} " in result.stderr


# -- no command writes over a run's files -----------------------------------------------------------------
def test_pretrain_report_and_analyze_refuse_an_out_inside_a_run(tmp_path, capsys):
    run = fx.write_run(tmp_path / "run")
    target = run / "checkpoints" / "task-1.safetensors"
    before = target.read_bytes()
    cases = [["pretrain", "--epochs", "1", "--out", str(target)],
             ["pretrain", "--epochs", "1", "--out", str(run / "sub" / "b.safetensors")],
             ["report", str(run), "--out", str(run / "report.md")],
             ["analyze", "importance", "--epochs", "1", "--out", str(run / "imp")]]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "run in" in err and err.count("\n") == 1, err
    assert target.read_bytes() == before


# -- --pretrained ----------------------------------------------------------------------------------------------
def _pretrained_file(tmp_path, change) -> Path:
    spec = fx.model_spec()
    model = fx.build(spec)
    state = {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}
    change(state)
    path = tmp_path / "pre.safetensors"
    save_file(state, str(path))
    return path


@pytest.mark.parametrize("change, message", [
    (lambda s: s[f"{Q}_codes"].fill_(2 ** 20), "outside the"),
    (lambda s: s.__setitem__(Q, s[Q].half()), "is torch.float16"),
    (lambda s: s[Q].view(-1).__setitem__(0, float("inf")), "NaN or infinite"),
])
def test_pretrained_refuses_codes_outside_the_window_and_other_dtypes(tmp_path, change, message):
    from bitcl.models.pretrained import load_pretrained
    path = _pretrained_file(tmp_path, change)
    with pytest.raises(CheckpointError, match=message):
        load_pretrained(fx.build(fx.model_spec()), path)


def test_python_api_refuses_bad_widths_ranges_and_inputs():
    from bitcl.quant import BitLinear, scale_for
    from bitcl.quant.codes import frozen_value, reduced_value, top_bits
    codes = torch.zeros(3, dtype=torch.int32)
    cases = [(lambda: scale_for(1.0, 1), "bits"), (lambda: scale_for(float("nan"), 8), "value_range"),
             (lambda: scale_for(-1.0, 8), "value_range"), (lambda: scale_for(1.0, 64), "bits"),
             (lambda: top_bits(codes, 64, 64), "bits"), (lambda: reduced_value(codes, float("nan"), 8, 4), "scale"),
             (lambda: frozen_value(codes, torch.full((3,), 30, dtype=torch.uint8), 0.1, 8), "frozen count"),
             (lambda: BitLinear(10, 4)(torch.zeros(2, 11)), r"BitLinear\(10, 4\): input has 11 features"),
             (lambda: BitLinear(10 ** 6, 10 ** 6), "bytes of state")]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_python_m_bitcl_is_the_same_entry(tmp_path):
    import subprocess
    result = subprocess.run([sys.executable, "-m", "bitcl"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert result.returncode == 2 and "commands:" in result.stderr


# -- every method's own checkpoints pass the validator (its declarations match what it writes) -------------
METHOD_CASES = [("af", {}), ("anpyc", {}), ("blip", {}), ("dlcft", {}), ("dlcft", {"curvature": "kfac"}),
                ("dlcft", {"curvature": "diagonal"}), ("ewc", {}), ("ewc", {"mode": "online"}), ("finetune", {}),
                ("ft-fix", {}), ("joint", {}), ("mas", {}), ("masx", {}), ("rewc", {}), ("si", {}), ("sib", {}),
                ("siu", {}), ("sos", {})]


@pytest.mark.slow
@pytest.mark.parametrize("method, options", METHOD_CASES)
def test_every_method_writes_state_its_declaration_accepts(method, options, small_npz, tmp_path):
    """Two tasks, then export's reader and --resume both read the last checkpoint back."""
    from bitcl.config import RunConfig
    from bitcl.engine import run
    from bitcl.strategies import get_strategy
    fields = get_strategy(method).Options.__dataclass_fields__
    options = {**options, **{k: 50 for k in ("samples", "fisher_samples") if k in fields}}
    settings = dict(method=method, benchmark="split-mnist", tasks=2, epochs=1, data=str(small_npz), hidden=[16],
                    out=str(tmp_path / "r"), quiet=True, method_options=options)
    run(RunConfig(**settings))
    load_checkpoint_model(tmp_path / "r" / "checkpoints" / "task-1.safetensors")
    run(RunConfig(**settings, resume=True))


# -- property: random damage to any byte is refused or changes nothing -----------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_SEED: dict = {}


def _seed_checkpoint(tmp: Path) -> tuple[bytes, dict, dict]:
    """A digested checkpoint's bytes, tensors and decoded metadata (built once)."""
    if not _SEED:
        path = tmp / "seed" / "task-1.safetensors"
        fx.write_checkpoint(path, task=1)
        tensors, meta = read_checkpoint(path)  # copies: safetensors may map the file it reads
        _SEED.update(blob=path.read_bytes(), tensors={k: v.clone() for k, v in tensors.items()}, meta=meta)
    return _SEED["blob"], _SEED["tensors"], _SEED["meta"]


DAMAGE_EXAMPLES = 300


@settings(max_examples=DAMAGE_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255), st.booleans()),
                      min_size=1, max_size=4))
def test_random_byte_damage_is_refused_or_changes_nothing(tmp_path_factory, edits):
    """Property: overwrite 1 to 4 bytes anywhere in a checkpoint (half of them in the JSON header, where
    a change may still parse): every reader refuses it in one line, or it reads back exactly the
    original tensors and metadata. Never accepted with other numbers."""
    tmp = tmp_path_factory.mktemp("d")
    blob, tensors, meta = _seed_checkpoint(tmp)
    header = 8 + int.from_bytes(blob[:8], "little")
    out = bytearray(blob)
    for where, value, in_header in edits:
        lo, hi = (0, header) if in_header else (header, len(out))
        out[lo + int(where * (hi - lo))] = value
    path = tmp / "task-1.safetensors"
    path.write_bytes(bytes(out))
    try:
        got, got_meta = read_checkpoint(path)
        load_checkpoint_model(path)
    except CheckpointError as error:
        assert str(error).startswith(str(path)) and "\n" not in str(error)
        return
    assert got_meta == meta and set(got) == set(tensors)
    assert all(torch.equal(got[k], tensors[k]) and got[k].dtype == tensors[k].dtype for k in tensors)


def test_a_fisher_prior_beyond_float32_is_bad_input(capsys):
    assert main(["run", "--method", "blip", "--fisher-prior=1e308", "--tasks", "2", "--epochs", "1"]) == 2
    assert "--fisher-prior must lie in (0.0, 3.4028234663852886e+38], got 1e+308" in capsys.readouterr().err


def test_idx_training_and_test_images_of_different_sizes_are_bad_input(tmp_path):
    import gzip

    import numpy as np

    from bitcl.data import load_source
    from bitcl.errors import DataError
    folder = fx.write_idx_dir(tmp_path / "idx")  # t10k: 8x8 images
    x = np.zeros((4, 9, 9), np.uint8)
    for kind, body in (("images-idx3", fx.idx_bytes(x)), ("labels-idx1", fx.idx_bytes(np.arange(4) % 4))):
        with gzip.open(folder / f"train-{kind}-ubyte.gz", "wb") as f:
            f.write(body)
    with pytest.raises(DataError, match="training images are 9x9 but test images 8x8"):
        load_source(str(folder))


@pytest.mark.parametrize("damage", ["fisher nan", "tasks_seen negative", "fisher wrong shape", "tasks_seen removed"])
def test_resume_refuses_damaged_strategy_state(written, damage):
    """`--resume` (resume_latest) goes through the same validator: no NaN Fisher is trained on."""
    from bitcl.strategies import RunInfo, get_strategy, make_options
    from bitcl.train.resume import resume_latest
    from bitcl.train.rundir import RunDirectory
    _legacy(written, DAMAGES[damage][0])
    model = fx.build(fx.model_spec())
    blip = get_strategy("blip")
    strategy = blip(make_options(blip), model, RunInfo(2, "task"))
    rundir = RunDirectory(str(written.parents[1]), False, True)
    with pytest.raises(CheckpointError, match=DAMAGES[damage][1]):
        resume_latest(rundir, fx.progress(1)["config"], model, strategy)
