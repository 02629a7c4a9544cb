"""``coarsegrad data``: where the real datasets are, whether they verify, and download.

    coarsegrad data list [--data-dir DIR] [--no-verify]
    coarsegrad data download NAME [--dest DIR] [--base-url URL] [--quiet]

Exit codes: 0 success; 1 a download failed or a found dataset fails its checksums;
2 bad input (unknown name, bad URL, missing --data-dir).
"""

from __future__ import annotations

import argparse
import sys

from coarsegrad.data.datasets import DATASET_NAMES, find_dataset
from coarsegrad.data.download import DownloadError, download, verify_dataset


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="list, verify and download MNIST, Fashion-MNIST, KMNIST")
    actions = p.add_subparsers(dest="data_command", required=True, parser_class=type(p))
    lst = actions.add_parser("list", help="where each dataset was found and whether it verifies")
    lst.add_argument("--data-dir", default=None, help="folder holding the files or <name>/ folders")
    lst.add_argument("--no-verify", dest="verify", action="store_false",
                     help="skip the checksums (faster)")
    lst.set_defaults(run=run_list)
    get = actions.add_parser("download", help="download and verify one dataset")
    get.add_argument("name", help=f"one of: {', '.join(DATASET_NAMES)}")
    get.add_argument("--dest", default=None,
                     help="target folder (default: ~/.cache/coarsegrad/NAME)")
    get.add_argument("--base-url", default=None, help="fetch from this URL instead of the mirrors")
    get.add_argument("--quiet", action="store_true", help="no progress output")
    get.set_defaults(run=run_download)


def run_list(args: argparse.Namespace) -> int:
    failed = False
    width = max(len(n) for n in DATASET_NAMES)
    for name in DATASET_NAMES:
        folder = find_dataset(name, args.data_dir)
        if folder is None:
            print(f"{name:<{width}}  not found")
            continue
        status = "found (not verified)"
        if args.verify:
            checks = verify_dataset(name, folder=folder)
            bad = [c for c in checks if c.status == "mismatch"]
            unknown = [c for c in checks if c.status == "unverifiable"]
            if bad:
                failed = True
                status = "CHECKSUM MISMATCH: " + "; ".join(f"{c.path.name}: {c.detail}"
                                                            for c in bad)
            elif unknown:
                names = ", ".join(c.path.name for c in unknown)
                status = f"unverifiable (no published checksum of {names})"
            else:
                status = "verified"
        print(f"{name:<{width}}  {folder}  {status}")
    return 1 if failed else 0


def run_download(args: argparse.Namespace) -> int:
    try:
        folder = download(args.name, args.dest, args.base_url, progress=not args.quiet)
    except DownloadError as exc:
        sys.stderr.write(f"coarsegrad data: download failed: {exc}\n")
        return 1
    print(f"{args.name}: {folder}")
    return 0
