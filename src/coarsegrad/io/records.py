"""Run records: atomic file writes and the environment a run came from.

Every run directory holds ``config.json`` (the resolved config), ``env.json``
(package version, git commit, torch version, device, host), ``metrics.jsonl`` (one
JSON object per logged step) and its artefacts.
"""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from coarsegrad.errors import ConfigError


def make_dir(path: str | os.PathLike[str], field: str = "out") -> Path:
    """Create the folder ``path`` (and its parents) if needed and return it; any OS
    problem (a file in the way, no permission, a read-only or special file system, a
    name too long) is a ``ConfigError(field)`` naming the path."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied", str(folder))
    except (OSError, ValueError) as exc:
        what = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(field, f"cannot use {str(folder)[:200]} as a folder ({what})") from None
    return folder


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temporary file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; records are ordinary readable files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(folder: str | Path, name: str | None = None) -> list[Path]:
    """Delete the temporaries an interrupted :func:`atomic_write_bytes` left in ``folder``:
    ``.<name>.*.tmp`` for the file ``name``, or every ``.*.tmp`` if ``name`` is None.

    Call it where one writer owns the folder or the file (a run directory at the start of
    a run; a checkpoint path before writing it): a write in progress by another process
    would lose its temporary. Returns the removed paths.
    """
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for tmp in sorted(folder.glob(".*.tmp" if name is None else f".{glob.escape(name)}.*.tmp")):
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def atomic_write_text(path: Path, text: str) -> None:
    """Atomic UTF-8 text write (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: object) -> None:
    """Atomic, indented JSON write."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def append_jsonl(path: Path, obj: object) -> None:
    """Append one JSON line and fsync (a line is either wholly there or, after a crash, cut)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(obj, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def git_commit(cwd: Path | None = None) -> str | None:
    """The git commit of the source tree (with ``-dirty`` if modified), or None outside git."""
    here = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def package_version() -> str:
    """The installed distribution's version (from its metadata, not from the package face)."""
    try:
        return importlib.metadata.version("coarsegrad")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def environment(device: str = "cpu") -> dict[str, object]:
    """Versions and machine facts for a run record or a bug report."""
    info: dict[str, object] = {
        "coarsegrad": package_version(),
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "cuda_available": torch.cuda.is_available(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info
