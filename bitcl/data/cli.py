"""``bitcl data list | get NAME... | verify [NAME...] | path``: fetch and check the datasets.

Bad input (an unknown name, a bad flag) exits with 2; a fault of the environment (offline,
server error, corrupt download, read-only cache) with 1, as one line naming the URL or path.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from bitcl.errors import BitclError
from bitcl.parsing import Parser

from .fetch import FetchError, data_root, fetch, mirror_base, verify
from .registry import DATASETS, NOT_FETCHABLE, WEIGHTS, find


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="bitcl data", description="Download, verify and list the datasets bitcl can fetch.")
    sub = p.add_subparsers(dest="action", required=True, parser_class=Parser)
    common = Parser(add_help=False)
    common.add_argument("--data-root", default=None, metavar="DIR",
                        help="cache folder (default: $BITCL_DATA_ROOT, else the platform cache, e.g. ~/.cache/bitcl)")
    sub.add_parser("list", parents=[common], help="the datasets and weights, with their digests and cache state")
    get = sub.add_parser("get", parents=[common], help="download and verify datasets (resumes partial downloads)")
    get.add_argument("names", nargs="+", metavar="NAME")
    get.add_argument("--mirror", default=None, metavar="URL",
                     help="fetch URL/NAME/FILE instead of the official hosts (default: $BITCL_DATA_MIRROR)")
    get.add_argument("--quiet", action="store_true", help="no progress bar")
    check = sub.add_parser("verify", parents=[common], help="check the cached files against their pinned digests")
    check.add_argument("names", nargs="*", metavar="NAME", help="default: every registered dataset")
    sub.add_parser("path", parents=[common], help="print the data root")
    return p


def _list(root) -> int:
    print(f"data root: {data_root(root)}")
    for title, entries in (("datasets:", DATASETS), ("weights:", WEIGHTS)):
        print(title)
        for name, entry in entries.items():
            states = {status for _, status in verify(entry, root)}
            state = ("cached" if states == {"ok"} else "not cached" if states == {"missing"}
                     else ", ".join(sorted(states)))
            print(f"  {name:<18} {entry.description} [{state}]")
            for remote in entry.files:
                algorithm, digest = remote.digest
                print(f"  {'':<18}   {remote.name}  {algorithm} {digest}")
            print(f"  {'':<18}   pins: {entry.digest_source}")
    print("not fetchable:")
    for name, why in NOT_FETCHABLE.items():
        print(f"  {name:<18} {why}")
    return 0


def _verify(names: Sequence[str], root) -> int:
    entries = [find(n) for n in names] if names else [*DATASETS.values(), *WEIGHTS.values()]
    bad = ok = missing = 0
    for entry in entries:
        for file, status in verify(entry, root):
            if names or status != "missing":
                print(f"{entry.name}/{file}: {status}")
            bad += status == "MISMATCH" or (bool(names) and status != "ok")
            ok += status == "ok"
            missing += status != "ok" and status != "MISMATCH"
    if not names:
        print(f"{data_root(root)}: {ok} cached file(s) match their pinned digests, {bad} do not; "
              f"{missing} not (fully) downloaded")
    return 1 if bad else 0


def cmd_data(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if args.action == "list":
        return _list(args.data_root)
    if args.action == "path":
        print(data_root(args.data_root))
        return 0
    if args.action == "verify":
        return _verify(args.names, args.data_root)
    entries = [find(n) for n in args.names]  # every name checked before any download
    try:
        for entry in entries:
            files = fetch(entry, args.data_root, args.mirror, args.quiet)
            print(f"{entry.name}: {len(files)} file(s) verified in {files[0].parent}")
    except FetchError as error:
        print(f"bitcl data: error: {error}", file=sys.stderr)
        return FetchError.exit_status
    if mirror_base(args.mirror) and not args.quiet:
        print(f"(from the mirror {mirror_base(args.mirror)})")
    return 0
