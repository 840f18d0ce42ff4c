"""The datasets and weights ``bitcl data`` can fetch: official URLs, mirrors and pinned digests.

Every file carries the digest it is checked against before it is ever used. SHA-256 where a
public source pins it; otherwise the MD5 that torchvision and the dataset's own page publish
(still enough to catch a truncated or corrupt download, though not a deliberate forgery).
``digest_source`` names where each pin comes from. Nothing here was computed by bitcl: a
digest that no public source states is not pinned (and the dataset is then not listed).

Left out, and why:

* notMNIST (Bulatov 2011): the archive on the author's blog has no published checksum and is a
  tar of 500,000 PNGs; KMNIST is the third MNIST-like set instead.
* TrafficSigns (GTSRB, as HAT and BLIP use it: a course's pickle) and FaceScrub (taken down by
  its authors): no official host, and the copies in circulation are Python pickles.
* Tiny-ImageNet: no checksum published by its host (cs231n); not pinned, so not fetched.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RemoteFile:
    """One file as its host serves it. ``name`` is kept on every mirror."""

    name: str
    urls: tuple[str, ...]           # official host first, then the mirrors, tried in order
    sha256: str | None = None
    md5: str | None = None
    sha256_prefix: str | None = None  # only the first hex digits are known (torchvision's weights)
    size: int | None = None          # bytes, where a public source states it

    def __post_init__(self):
        if not (self.sha256 or self.md5 or self.sha256_prefix):
            raise ValueError(f"{self.name}: a remote file needs a pinned digest")

    @property
    def digest(self) -> tuple[str, str]:
        """(algorithm, hex digest) checked on download: SHA-256 when pinned, else MD5, else the prefix."""
        if self.sha256:
            return "sha256", self.sha256
        if self.md5:
            return "md5", self.md5
        return "sha256-prefix", self.sha256_prefix  # type: ignore[return-value]


@dataclass(frozen=True)
class RemoteDataset:
    """A fetchable dataset (or weights file): its files, how to read them, where the pins come from."""

    name: str
    description: str
    files: tuple[RemoteFile, ...]
    reader: str                 # idx | cifar10-binary | cifar100-binary | svhn-mat | weights
    homepage: str
    digest_source: str
    classes: int = 0
    aliases: tuple[str, ...] = field(default_factory=tuple)


def _mnist_like(hosts: tuple[str, ...], digests: dict[str, dict]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(name, tuple(h + name for h in hosts), **pin) for name, pin in digests.items())


MNIST = RemoteDataset(
    "mnist", "MNIST handwritten digits, 60,000 + 10,000 28x28 grey images (LeCun et al. 1998)",
    _mnist_like(("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/", "http://yann.lecun.com/exdb/mnist/"), {
        "train-images-idx3-ubyte.gz": {"sha256": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                                       "md5": "f68b3c2dcbeaaa9fbdd348bbdeb94873", "size": 9912422},
        "train-labels-idx1-ubyte.gz": {"sha256": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                                       "md5": "d53e105ee54ea40749a09fcbcd1e9432", "size": 28881},
        "t10k-images-idx3-ubyte.gz": {"sha256": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                                      "md5": "9fb629c4189551a2d022fa330f9573f3", "size": 1648877},
        "t10k-labels-idx1-ubyte.gz": {"sha256": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                                      "md5": "ec29112dd5afa0611ce80d1b7f02629c", "size": 4542},
    }),
    "idx", "http://yann.lecun.com/exdb/mnist/",
    "SHA-256 and sizes as TensorFlow Datasets pins them (the cvdf-datasets mirror); MD5 as torchvision's "
    "datasets/mnist.py", classes=10)

FASHION_MNIST = RemoteDataset(
    "fashion-mnist", "Fashion-MNIST, 60,000 + 10,000 28x28 grey images of clothing (Xiao et al. 2017)",
    _mnist_like(("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",), {
        "train-images-idx3-ubyte.gz": {"md5": "8d4fb7e6c68d591d4c3dfef9ec88bf0d"},
        "train-labels-idx1-ubyte.gz": {"md5": "25c81989df183df01b3e8a0aad5dffbe"},
        "t10k-images-idx3-ubyte.gz": {"md5": "bef4ecab320f06d8554ea6380940ec79"},
        "t10k-labels-idx1-ubyte.gz": {"md5": "bb300cfdad3c16e7a12a480ee83cd310"},
    }),
    "idx", "https://github.com/zalandoresearch/fashion-mnist",
    "MD5 as torchvision's datasets/mnist.py (FashionMNIST) and the dataset's README publish them", classes=10,
    aliases=("fashionmnist",))

KMNIST = RemoteDataset(
    "kmnist", "Kuzushiji-MNIST, 60,000 + 10,000 28x28 grey images of cursive Japanese (Clanuwat et al. 2018)",
    _mnist_like(("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",), {
        "train-images-idx3-ubyte.gz": {"md5": "bdb82020997e1d708af4cf47b453dcf7"},
        "train-labels-idx1-ubyte.gz": {"md5": "e144d726b3acfaa3e44228e80efcd344"},
        "t10k-images-idx3-ubyte.gz": {"md5": "5c965bf0a639b31b8f53240b1b52f4d7"},
        "t10k-labels-idx1-ubyte.gz": {"md5": "7320c461ea6c1c855c0b718fb2a4b134"},
    }),
    "idx", "https://github.com/rois-codh/kmnist", "MD5 as torchvision's datasets/mnist.py (KMNIST)", classes=10)

CIFAR10 = RemoteDataset(
    "cifar10", "CIFAR-10 binary version, 50,000 + 10,000 32x32 colour images in 10 classes (Krizhevsky 2009)",
    (RemoteFile("cifar-10-binary.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
                sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
                md5="c32a1d4ab5d03f1284b67883e8d87530", size=170052171),),
    "cifar10-binary", "https://www.cs.toronto.edu/~kriz/cifar.html",
    "MD5 from the CIFAR page; SHA-256 as TensorFlow Datasets and other public loaders pin it", classes=10,
    aliases=("cifar-10",))

CIFAR100 = RemoteDataset(
    "cifar100", "CIFAR-100 binary version, 50,000 + 10,000 32x32 colour images in 100 classes (Krizhevsky 2009)",
    (RemoteFile("cifar-100-binary.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",),
                sha256="58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
                md5="03b5dce01913d631647c71ecec9e9cb8", size=168513733),),
    "cifar100-binary", "https://www.cs.toronto.edu/~kriz/cifar.html",
    "MD5 from the CIFAR page; SHA-256 as public loaders (Go, Julia, Ruby) pin it", classes=100,
    aliases=("cifar-100",))

SVHN = RemoteDataset(
    "svhn", "SVHN cropped digits (format 2), 73,257 + 26,032 32x32 colour images (Netzer et al. 2011)",
    (RemoteFile("train_32x32.mat", ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",),
                md5="e26dedcc434d2e4c54c9b2d4a06d8373"),
     RemoteFile("test_32x32.mat", ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",),
                md5="eb5a983be6a315427106f1b164d9cef3")),
    "svhn-mat", "http://ufldl.stanford.edu/housenumbers/", "MD5 as torchvision's datasets/svhn.py", classes=10)

RESNET18_IMAGENET = RemoteDataset(
    "resnet18-imagenet", "torchvision's ImageNet-1k ResNet-18 weights (IMAGENET1K_V1), for DLCFT's protocol",
    (RemoteFile("resnet18-f37072fd.pth", ("https://download.pytorch.org/models/resnet18-f37072fd.pth",),
                sha256_prefix="f37072fd"),),
    "weights", "https://pytorch.org/vision/stable/models/generated/torchvision.models.resnet18.html",
    "only the first 8 hex digits of the SHA-256 are public (torchvision's file name, checked by torch.hub's "
    "check_hash); bitcl checks that prefix, a weaker check than a full digest")

DATASETS: dict[str, RemoteDataset] = {d.name: d for d in (MNIST, FASHION_MNIST, KMNIST, CIFAR10, CIFAR100, SVHN)}
WEIGHTS: dict[str, RemoteDataset] = {RESNET18_IMAGENET.name: RESNET18_IMAGENET}

NOT_FETCHABLE = {
    "notmnist": "no official checksum and no single-archive host (a tar of PNGs on the author's blog)",
    "trafficsigns": "GTSRB as HAT/BLIP use it is a course's pickle with no official host",
    "facescrub": "withdrawn by its authors; the copies in circulation are pickles",
    "tiny-imagenet": "its host publishes no checksum, so none can be pinned",
}


def find(name: str) -> RemoteDataset:
    """The dataset or weights entry called ``name`` (or one of its aliases)."""
    from bitcl.errors import ConfigError
    key = name.strip().lower()
    for entry in (*DATASETS.values(), *WEIGHTS.values()):
        if key == entry.name or key in entry.aliases:
            return entry
    if key in NOT_FETCHABLE:
        raise ConfigError(f"{name}: bitcl cannot fetch it ({NOT_FETCHABLE[key]})")
    raise ConfigError(f"unknown dataset {name!r}; choose from {', '.join([*DATASETS, *WEIGHTS])}")
