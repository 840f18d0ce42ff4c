"""Download, verify and cache the files of :mod:`bitcl.data.registry`.

* One data root: ``--data-root`` > ``$BITCL_DATA_ROOT`` > the platform cache folder
  (``%LOCALAPPDATA%\\bitcl`` on Windows, else ``$XDG_CACHE_HOME/bitcl`` or ``~/.cache/bitcl``).
  A dataset's files live in ``ROOT/NAME/`` under their official names.
* A mirror (``--mirror URL`` or ``$BITCL_DATA_MIRROR``) replaces every official host:
  ``URL/NAME/FILE``, file names unchanged.
* Downloads go to ``FILE.part``; an interrupted one is resumed with an HTTP Range request.
  Only a complete file whose digest matches the pin is renamed into place (``os.replace``),
  so no half-written or corrupt file is ever read. A complete file with the wrong digest is
  deleted (resuming it would only append to bad bytes).
* Every failure that comes from the environment (offline, server error, corrupt download,
  read-only cache) is a :class:`FetchError`: one line naming the URL or path and the reason,
  exit status 1.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from .registry import RemoteDataset, RemoteFile

CHUNK = 1 << 20
TIMEOUT_S = 30


class FetchError(OSError):
    """An environment fault while fetching data (network, server, disk): the CLI exits with 1.

    ``final`` is True when trying another host would not help (an interrupted download whose
    ``.part`` is kept for a resume, or a cache that cannot be written)."""

    exit_status = 1

    def __init__(self, message: str, final: bool = False):
        super().__init__(message)
        self.final = final


def data_root(explicit: Optional[str | os.PathLike] = None) -> Path:
    """The data root: ``explicit`` (``--data-root``), else ``$BITCL_DATA_ROOT``, else the platform cache."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("BITCL_DATA_ROOT"):
        return Path(os.environ["BITCL_DATA_ROOT"]).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "bitcl"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "bitcl"


def mirror_base(explicit: Optional[str] = None) -> Optional[str]:
    """The mirror replacing the official hosts (``--mirror`` > ``$BITCL_DATA_MIRROR``), or None."""
    base = explicit or os.environ.get("BITCL_DATA_MIRROR") or None
    return base.rstrip("/") if base else None


def file_urls(dataset: RemoteDataset, remote: RemoteFile, mirror: Optional[str]) -> list[str]:
    """Where to look for ``remote``, in order: the mirror alone if one is set, else the official hosts."""
    return [f"{mirror}/{dataset.name}/{remote.name}"] if mirror else list(remote.urls)


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file (``sha256-prefix`` is checked as a full SHA-256)."""
    h = hashlib.new("sha256" if algorithm.startswith("sha256") else algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def digest_matches(path: Path, remote: RemoteFile) -> bool:
    algorithm, expected = remote.digest
    got = file_digest(path, algorithm)
    return got.startswith(expected) if algorithm == "sha256-prefix" else got == expected


def _describe(remote: RemoteFile) -> str:
    algorithm, expected = remote.digest
    return f"{algorithm} {expected}"


class _Progress:
    """A tqdm bar on stderr when it is a terminal and not ``quiet``; else nothing."""

    def __init__(self, total: Optional[int], initial: int, name: str, quiet: bool):
        self.bar = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                            leave=False)

    def __enter__(self) -> Callable[[int], None]:
        return self.bar.update if self.bar else (lambda n: None)

    def __exit__(self, *exc) -> None:
        if self.bar:
            self.bar.close()


def _write_error(path: Path, error: OSError) -> FetchError:
    return FetchError(f"{path}: cannot write ({error.strerror or error})", final=True)


def _download(url: str, part: Path, remote: RemoteFile, quiet: bool) -> None:
    """Fetch ``url`` into ``part``, resuming what ``part`` already holds (HTTP Range)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "bitcl"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the part is already whole (or longer than the file): start over
            part.unlink()
            return _download(url, part, remote, quiet)
        raise FetchError(f"{url}: server answered {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise FetchError(f"{url}: cannot connect ({reason})") from None
    with response:
        resumed = have and response.status == 206
        if have and not resumed:
            have = 0  # the server ignored the Range request: the body is the whole file
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else remote.size
        got = have
        try:
            with _Progress(total, have, remote.name, quiet) as update, open(part, "ab" if resumed else "wb") as out:
                while True:
                    try:
                        block = response.read(CHUNK)
                    except (http.client.IncompleteRead, ConnectionError, TimeoutError, OSError) as error:
                        expected = f"{total:,}" if total else "?"
                        raise FetchError(f"{url}: download interrupted after {got:,} of {expected} bytes "
                                         f"({type(error).__name__}); {part} is kept: run the command again to resume",
                                         final=True) from None
                    if not block:
                        break
                    out.write(block)
                    got += len(block)
                    update(len(block))
        except FetchError:
            raise
        except OSError as error:
            raise _write_error(part, error) from None
    if total is not None and got < total:
        raise FetchError(f"{url}: download interrupted after {got:,} of {total:,} bytes; {part} is kept: "
                         "run the command again to resume", final=True)


def fetch_file(dataset: RemoteDataset, remote: RemoteFile, root: Path, mirror: Optional[str] = None,
               quiet: bool = False, download: bool = True) -> Path:
    """The verified local copy of ``remote``: already in the cache, or downloaded now.

    Tries each URL in turn (the mirror alone when one is set); a file is renamed into place
    only after its digest matched. Raises :class:`FetchError` naming the URL, the expected
    file and the folder to put it in by hand when no URL works.
    """
    folder = root / dataset.name
    final = folder / remote.name
    if final.is_file():
        if digest_matches(final, remote):
            return final
        raise FetchError(f"{final}: does not match its pinned {_describe(remote)}; delete it and run "
                         f"`bitcl data get {dataset.name}` again")
    manual = (f"put {remote.name} ({_describe(remote)}) in {folder} by hand, or set --mirror / "
              "BITCL_DATA_MIRROR")
    urls = file_urls(dataset, remote, mirror)
    if not download:
        raise FetchError(f"{final}: missing; download it from {urls[0]} (`bitcl data get {dataset.name}`) or {manual}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".{remote.name}.write-test"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise _write_error(folder, error) from None
    part = folder / (remote.name + ".part")
    failures = []
    for url in urls:
        try:
            _download(url, part, remote, quiet)
        except FetchError as error:
            if error.final:
                raise  # keep the part for a resume; a full disk is no reason to try the next host
            failures.append(str(error))
            continue
        if not digest_matches(part, remote):
            part.unlink()
            raise FetchError(f"{url}: the downloaded {remote.name} does not match its pinned {_describe(remote)} "
                             "(corrupt or truncated download, or a wrong mirror); it was deleted")
        try:
            os.replace(part, final)
        except OSError as error:
            raise _write_error(final, error) from None
        return final
    raise FetchError(f"{failures[-1]}; {manual}")


def fetch(dataset: RemoteDataset, root: Optional[str | os.PathLike] = None, mirror: Optional[str] = None,
          quiet: bool = False, download: bool = True) -> list[Path]:
    """Every file of ``dataset``, verified, in ``data_root(root)/NAME/`` (downloaded if missing)."""
    base, host = data_root(root), mirror_base(mirror)
    return [fetch_file(dataset, f, base, host, quiet, download) for f in dataset.files]


def verify(dataset: RemoteDataset, root: Optional[str | os.PathLike] = None) -> list[tuple[str, str]]:
    """(file, status) for each file of ``dataset`` in the cache: ok, missing, partial or MISMATCH."""
    folder = data_root(root) / dataset.name
    out = []
    for remote in dataset.files:
        path = folder / remote.name
        if path.is_file():
            out.append((remote.name, "ok" if digest_matches(path, remote) else "MISMATCH"))
        elif (folder / (remote.name + ".part")).is_file():
            out.append((remote.name, "partial (resumable)"))
        else:
            out.append((remote.name, "missing"))
    return out
