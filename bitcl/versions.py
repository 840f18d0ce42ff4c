"""Which bitcl versions' results.json files this bitcl reads (``bitcl report``, ``rerun``, ``run --config``).

Semantic versioning: a different major version may change the results.json contract
(docs/contracts/results.md), and so, while bitcl is 0.x, may a different minor version (semver
gives no stability promise below 1.0). So a file is read only when it was written by the same
major version, and for 0.x by the same minor version; patch releases never change the contract.
Anything else is refused in one line naming both versions, rather than misread.
"""
from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

import bitcl
from bitcl.errors import DataError

_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:[.+-].*)?$")


def contract_series(version: str) -> tuple[int, ...]:
    """The part of a version that must match: ``(major,)``, or ``(0, minor)`` below 1.0."""
    match = _VERSION.match(version)
    if match is None:
        raise ValueError(f"not a MAJOR.MINOR.PATCH version: {version!r}")
    major, minor = int(match.group(1)), int(match.group(2))
    return (major,) if major > 0 else (0, minor)


def check_results_version(results: dict, where: str, current: str = bitcl.__version__) -> None:
    """DataError unless ``results`` (a parsed results.json) was written by a bitcl of this one's
    contract series (:func:`contract_series`)."""
    recorded = results.get("bitcl_version")
    if not isinstance(recorded, str):
        raise DataError(f"{where}: records no bitcl_version, so it cannot be read safely by bitcl {current}")
    try:
        series = contract_series(recorded)
    except ValueError:
        raise DataError(f"{where}: bitcl_version {recorded!r} is not a MAJOR.MINOR.PATCH version") from None
    if series != contract_series(current):
        wanted = ".".join(map(str, contract_series(current))) + ".x"
        raise DataError(f"{where}: written by bitcl {recorded}; this bitcl {current} reads results of {wanted} "
                        f"only (the results.json contract may differ); use bitcl {recorded} for it, or run it again")


__all__ = ["check_results_version", "contract_series"]


_CODE_SUFFIXES = (".py", ".c", ".h")


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 over the source that runs: every .py of the bitcl package and every .py/.c/.h of
    bitcl.kernels, by relative path and content. Recorded in results.json (``code_digest``) so a
    finished run can be told from one made by other code: the version number stays the same while
    the code changes between releases, and a git commit is not known to an installed copy."""
    import bitcl.kernels

    digest = hashlib.sha256()
    for root in (Path(bitcl.__file__).parent, Path(bitcl.kernels.__file__).parent):
        files = sorted(p for p in root.rglob("*") if p.suffix in _CODE_SUFFIXES and "__pycache__" not in p.parts
                       and p.is_file())
        for path in files:
            digest.update(f"{root.name}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
