"""torchvision's ResNet-18 weights load into ``--arch resnet18-imagenet`` (issue 26): every tensor
lands on the module torchvision's forward uses it in, checked by the features, and DLCFT's
protocol runs end to end from a registered weights file served by a local fixture server."""
import hashlib
import io
import json

import numpy as np
import pytest
import torch

from bitcl.cli import main
from bitcl.data import registry
from bitcl.data.registry import RemoteDataset, RemoteFile
from bitcl.errors import CheckpointError
from bitcl.interop.torchvision_ops import ensure_torchvision_importable
from bitcl.models.continual import ContinualModel
from bitcl.models.factory import LayerFactory
from bitcl.models.pretrained import load_pretrained
from bitcl.models.resnet import ResNet18
from tests.data.fixture_server import FixtureServer, cifar_binary_tar_gz

UNREACHABLE = "http://127.0.0.1:9/"


def torchvision_resnet18(seed=0):
    """torchvision's ResNet-18 (random weights) with non-trivial batch-norm statistics and affines."""
    ensure_torchvision_importable()
    import torchvision
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()
                m.num_batches_tracked.fill_(10)
    return net


def torchvision_features(net, x):
    out = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    out = net.layer4(net.layer3(net.layer2(net.layer1(out))))
    return torch.flatten(net.avgpool(out), 1)


def bitcl_resnet(kind="float", heads=(10,), setting="class"):
    return ContinualModel(ResNet18((3, 32, 32), LayerFactory(kind), 64, imagenet_stem=True), list(heads), setting, kind)


def test_torchvision_state_dict_loads_and_gives_torchvisions_features(tmp_path):
    net = torchvision_resnet18()
    torch.save(net.state_dict(), tmp_path / "tv.pth")
    model = bitcl_resnet().eval()
    load_pretrained(model, tmp_path / "tv.pth")
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(x), torchvision_features(net, x))
    assert model.backbone.out_features == 512


def test_old_torchvision_file_without_batch_counts_loads_and_a_foreign_file_is_refused(tmp_path):
    state = {k: v for k, v in torchvision_resnet18().state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    model = bitcl_resnet()
    load_pretrained(model, tmp_path / "old.pth")
    assert int(model.backbone.stem[1].norms[0].num_batches_tracked) == 1  # ImageNet's statistics, calibrated
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_pretrained(bitcl_resnet(), tmp_path / "bad.pth")


@pytest.mark.slow
def test_dlcft_preset_runs_from_registered_torchvision_weights(tmp_path, monkeypatch, capsys):
    """`bitcl run --preset dlcft-class-split-cifar100` (overrides: 2 tasks, 1 epoch) fetches the
    weights by name from the mirror, checks their SHA-256 prefix, loads them with weights_only and
    trains the linearised network on fixture CIFAR-100 data; the run records where θ0 came from."""
    net = torchvision_resnet18(seed=1)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    weights = buffer.getvalue()
    name = "resnet18-f37072fd.pth"
    monkeypatch.setitem(registry.WEIGHTS, "resnet18-imagenet", RemoteDataset(
        "resnet18-imagenet", "fixture", (RemoteFile(name, (UNREACHABLE + name,),
                                                    sha256_prefix=hashlib.sha256(weights).hexdigest()[:8]),),
        "weights", "", "test fixture"))
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.repeat(np.arange(100), 2), np.arange(100)])  # 2 train + 1 test per class
    images = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
    archive = cifar_binary_tar_gz(images, labels, 200, 100)
    monkeypatch.setitem(registry.DATASETS, "cifar100", RemoteDataset(
        "cifar100", "fixture", (RemoteFile("cifar-100-binary.tar.gz", (UNREACHABLE + "cifar-100-binary.tar.gz",),
                                           sha256=hashlib.sha256(archive).hexdigest()),),
        "cifar100-binary", "", "test fixture", classes=100))
    with FixtureServer() as server:
        server.files[f"/resnet18-imagenet/{name}"] = weights
        server.files["/cifar100/cifar-100-binary.tar.gz"] = archive
        monkeypatch.setenv("BITCL_DATA_ROOT", str(tmp_path / "cache"))
        monkeypatch.setenv("BITCL_DATA_MIRROR", server.url)
        out = tmp_path / "run"
        code = main(["run", "--preset", "dlcft-class-split-cifar100", "--tasks", "2", "--epochs", "1",
                     "--batch-size", "20", "--quiet", "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        assert any(path.endswith(name) for path, _ in server.requests)
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["pretrained"] == "resnet18-imagenet"
    assert results["config"]["arch"] == "resnet18-imagenet" and results["config"]["method"] == "dlcft"
    assert results["linearisation_point"]["pretrained"] is True
    assert results["linearisation_point"]["warmup"] == "none"
    assert len(results["accuracy_matrix"]) == 2
