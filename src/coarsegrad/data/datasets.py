"""MNIST, Fashion-MNIST and KMNIST from their standard IDX files, found on disk.

Each dataset is four files (IDX, see :mod:`coarsegrad.data.idx`), gzip-compressed
(``<stem>.gz``) or not (``<stem>``)::

    train-images-idx3-ubyte   train-labels-idx1-ubyte     60,000 images 28×28, labels 0..9
    t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte      10,000 images 28×28, labels 0..9

A folder *holds* a dataset when all four files are in it. The folders searched, in
order (the first that holds the dataset wins):

1. ``data_dir`` (argument or ``--data-dir``): the folder itself, then ``data_dir/<name>/``;
2. ``$COARSEGRAD_DATA/<name>/``;
3. ``~/.cache/coarsegrad/<name>/`` (``$XDG_CACHE_HOME/coarsegrad/<name>/`` if that is set),
   where ``coarsegrad data download NAME`` puts it;
4. ``/usr/share/datasets/<name>/``, where Debian's ``dataset-fashion-mnist`` package
   installs Fashion-MNIST (``apt-get install dataset-fashion-mnist``).

``<name>`` is ``mnist``, ``fashion-mnist`` or ``kmnist``; torchvision's layout
(``MNIST/raw``, ``FashionMNIST/raw``, ``KMNIST/raw``) is accepted too.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType

import torch

from coarsegrad.data.idx import read_idx_pair
from coarsegrad.errors import ConfigError, DataError

DATASET_NAMES = ("mnist", "fashion-mnist", "kmnist")
SPLITS = ("train", "test")
NUM_CLASSES = 10
ENV_VAR = "COARSEGRAD_DATA"
SYSTEM_DIR = Path("/usr/share/datasets")
# Sub-folder names a parent folder may hold each dataset under (ours, then torchvision's).
SUBDIRS = MappingProxyType({
    "mnist": ("mnist", "MNIST/raw"),
    "fashion-mnist": ("fashion-mnist", "FashionMNIST/raw"),
    "kmnist": ("kmnist", "KMNIST/raw"),
})
# split -> (images stem, labels stem)
STEMS = MappingProxyType({
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
})
FILE_STEMS = STEMS["train"] + STEMS["test"]


def check_name(name: str) -> str:
    """``name`` if it is a known dataset, else :class:`ConfigError` listing the valid names."""
    if name not in DATASET_NAMES:
        raise ConfigError("dataset", f"unknown dataset {name!r}; valid: {', '.join(DATASET_NAMES)}")
    return name


def check_split(split: str) -> str:
    """``split`` if it is ``train`` or ``test``, else :class:`ConfigError`."""
    if split not in SPLITS:
        raise ConfigError("split", f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return split


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/coarsegrad`` if set, else ``~/.cache/coarsegrad`` (download target)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "coarsegrad"


def candidate_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for dataset ``name``, in lookup order (module docstring)."""
    check_name(name)
    subdirs = SUBDIRS[name]
    dirs: list[Path] = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        try:
            is_dir = root.is_dir()
        except (OSError, ValueError) as exc:
            raise DataError(str(root), f"cannot be used as a data directory ({exc})") from None
        if not is_dir:
            raise DataError(str(root), "data directory does not exist or is not a directory")
        dirs += [root] + [root / sub for sub in subdirs]
    env = os.environ.get(ENV_VAR)
    if env:
        dirs += [Path(env).expanduser() / sub for sub in subdirs]
    dirs += [cache_dir() / name, SYSTEM_DIR / name]
    return dirs


def dataset_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem.gz`` (preferred: the form downloads verify) or ``folder/stem``, if a file."""
    for path in (folder / f"{stem}.gz", folder / stem):
        try:
            if path.is_file():
                return path
        except OSError as exc:  # a folder that cannot be searched, a name too long
            raise DataError(str(folder), f"cannot be searched ({exc.strerror or exc})") from None
    return None


def holds_dataset(folder: Path) -> bool:
    """True if ``folder`` has all four IDX files (each plain or .gz)."""
    return all(dataset_file(folder, stem) is not None for stem in FILE_STEMS)


def find_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first folder in :func:`candidate_dirs` order that holds ``name``, or None."""
    for folder in candidate_dirs(name, data_dir):
        if holds_dataset(folder):
            return folder
    return None


def not_found_message(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """Where ``name`` was looked for and how to make it findable."""
    looked = ", ".join(str(d) for d in candidate_dirs(name, data_dir))
    env = "" if os.environ.get(ENV_VAR) else f" (${ENV_VAR} is not set)"
    return (f"{name} not found; looked for {FILE_STEMS[0]}[.gz] and its 3 companion files in: "
            f"{looked}{env}. Fix: run `coarsegrad data download {name}`, or set {ENV_VAR} to a "
            f"folder holding {name}/, or pass --data-dir (data_dir=) a folder holding the files")


def require_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Like :func:`find_dataset`, but a :class:`DataError` saying where it looked if absent."""
    folder = find_dataset(name, data_dir)
    if folder is None:
        raise DataError("dataset", not_found_message(name, data_dir))
    return folder


def load_dataset(name: str, split: str,
                 data_dir: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 [N, 28, 28], labels int64 [N]) of one split, in the files' order.

    N = 60,000 for ``train`` and 10,000 for ``test``; pixels 0..255 (0 = background);
    labels 0..9. ``name``: ``mnist``, ``fashion-mnist`` or ``kmnist``; the files are
    looked up as in the module docstring. Bad name or split: :class:`ConfigError`;
    not found or malformed: :class:`DataError` (what and where).
    """
    check_name(name)
    check_split(split)
    folder = require_dataset(name, data_dir)
    images_stem, labels_stem = STEMS[split]
    images, labels = dataset_file(folder, images_stem), dataset_file(folder, labels_stem)
    assert images is not None and labels is not None  # holds_dataset checked them
    return read_idx_pair(images, labels, NUM_CLASSES)
