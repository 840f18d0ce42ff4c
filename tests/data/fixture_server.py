"""A local HTTP server of real-format fixture archives, for the download tests (no internet).

``FixtureServer.files`` maps URL paths to bytes; ``broken`` makes a path misbehave:
``"500"`` (server error), ``"truncate"`` (a short file with a consistent Content-Length),
``"drop-once"`` (announce the whole length, send half, close; later requests work and
honour ``Range``). ``requests`` records (path, Range header) for each request.
"""
from __future__ import annotations

import gzip
import io
import struct
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


class _Handler(BaseHTTPRequestHandler):
    server: "FixtureServer"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        body = srv.files.get(self.path)
        mode = srv.broken.get(self.path)
        if body is None:
            self.send_error(404)
            return
        if mode == "500":
            self.send_error(500, "Internal Server Error")
            return
        if mode == "truncate":
            body = body[: len(body) // 2]
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and mode != "drop-once":
            start = int(rng[6:].split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if mode == "drop-once":
            srv.broken.pop(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])


class FixtureServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.broken: dict[str, str] = {}
        self.requests: list[tuple[str, str | None]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


def idx_gz(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file, gzipped, as the MNIST family distributes them."""
    head = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(head + np.ascontiguousarray(array, dtype=np.uint8).tobytes(), mtime=0)


def mnist_like_files(x: np.ndarray, y: np.ndarray, n_train: int) -> dict[str, bytes]:
    """The four MNIST file names holding ``x[:n_train]`` / ``x[n_train:]`` (uint8 (n, 28, 28))."""
    return {"train-images-idx3-ubyte.gz": idx_gz(x[:n_train]), "train-labels-idx1-ubyte.gz": idx_gz(y[:n_train]),
            "t10k-images-idx3-ubyte.gz": idx_gz(x[n_train:]), "t10k-labels-idx1-ubyte.gz": idx_gz(y[n_train:])}


def cifar_binary_tar_gz(images: np.ndarray, labels: np.ndarray, n_train: int, classes: int) -> bytes:
    """A CIFAR-10 (``classes`` 10) or CIFAR-100 binary archive of uint8 images (n, 3, 32, 32):
    CIFAR-10 spreads the training records over data_batch_1..5; CIFAR-100 writes coarse label
    ``fine // 5`` then the fine label."""
    def records(x, y):
        flat = x.reshape(len(x), -1)
        if classes == 10:
            return b"".join(bytes([int(c)]) + row.tobytes() for c, row in zip(y, flat))
        return b"".join(bytes([int(c) // 5, int(c)]) + row.tobytes() for c, row in zip(y, flat))

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        xtr, ytr, xte, yte = images[:n_train], labels[:n_train], images[n_train:], labels[n_train:]
        if classes == 10:
            for i, chunk in enumerate(np.array_split(np.arange(n_train), 5), start=1):
                add(f"cifar-10-batches-bin/data_batch_{i}.bin", records(xtr[chunk], ytr[chunk]))
            add("cifar-10-batches-bin/test_batch.bin", records(xte, yte))
        else:
            add("cifar-100-binary/train.bin", records(xtr, ytr))
            add("cifar-100-binary/test.bin", records(xte, yte))
    return buffer.getvalue()
