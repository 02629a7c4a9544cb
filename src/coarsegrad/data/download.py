"""Download MNIST, Fashion-MNIST and KMNIST, and verify files against known checksums.

Checksums (:data:`CHECKSUMS`, one :class:`FileSum` per file):

- MNIST: md5 of the *decompressed* files, the canonical values of the original
  yann.lecun.com files (see /work/shared/data/mnist/README.md), and sha256 of the
  same bytes, computed here from files that match those md5s.
- Fashion-MNIST: md5 and sha256 of the *decompressed* files, computed from Debian's
  ``dataset-fashion-mnist`` (0.0~git20200523.55506a9-1); the md5s equal the
  decompressed md5s other loaders publish (torchvision's ``raw_data`` list). Debian
  re-stamps the gzip headers, so its .gz md5s differ from the upstream README's;
  the contents are the same.
- KMNIST: no checksum of the decompressed files is published. We check the md5 of the
  **.gz files as served** by codh.rois.ac.jp, as listed by torchvision
  (``torchvision.datasets.KMNIST.resources``); an uncompressed copy of KMNIST
  therefore reports "unverifiable", and a recompressed one "mismatch".

Decompressed checks read at most ``size + 1`` bytes. A download goes to a hidden
temporary file ``.<stem>.gz.*.part`` in the destination folder, is verified, fsynced and
only then renamed to its final name, so a partial or corrupt download never looks
complete; the ``.part`` file is removed on any failure, and ``.part`` files left by a
killed download are removed when the next download into that folder starts.

Limits of one transfer: ``stall_timeout`` seconds without a byte (the socket timeout),
``deadline`` seconds in all (checked after every read, so it is overrun by at most one
``stall_timeout``), at most the expected size + 1 MiB; the ``Content-Length`` must be a
non-negative integer; redirects are followed only to http:// or https:// URLs.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from coarsegrad.data.datasets import FILE_STEMS, cache_dir, check_name, dataset_file, find_dataset
from coarsegrad.data.idx import GZIP_MAGIC, is_gzip
from coarsegrad.errors import ConfigError
from coarsegrad.io.progress import Progress
from coarsegrad.validate import number

_CHUNK = 1 << 20


class DownloadError(OSError):
    """A download failed: network error, HTTP error, truncated transfer or bad checksum."""


@dataclass(frozen=True)
class FileSum:
    """Known facts of one file: ``size``, ``md5`` and ``sha256`` of the decompressed bytes
    (None if unpublished) and ``gz_md5`` of the .gz file as served (None if not used)."""

    size: int
    md5: str | None = None
    sha256: str | None = None
    gz_md5: str | None = None


@dataclass(frozen=True)
class FileCheck:
    """Result of checking one file: ``status`` ok | mismatch | unverifiable, and why."""

    path: Path
    status: Literal["ok", "mismatch", "unverifiable"]
    detail: str


SIZES = (47040016, 60008, 7840016, 10008)  # decompressed bytes, in FILE_STEMS order


def _table(md5: tuple[str, ...] | None = None, sha256: tuple[str, ...] | None = None,
           gz_md5: tuple[str, ...] | None = None) -> Mapping[str, FileSum]:
    """{stem: FileSum} from per-file tuples in FILE_STEMS order."""
    return MappingProxyType({
        stem: FileSum(SIZES[i], md5[i] if md5 else None, sha256[i] if sha256 else None,
                      gz_md5[i] if gz_md5 else None)
        for i, stem in enumerate(FILE_STEMS)})


# Published digests, per file in FILE_STEMS order (train-images, train-labels, t10k-images,
# t10k-labels), kept as data in checksums.json beside this module.
CHECKSUMS: Mapping[str, Mapping[str, FileSum]] = MappingProxyType({
    name: _table(**{kind: tuple(values) for kind, values in sums.items()})
    for name, sums in json.loads((Path(__file__).parent / "checksums.json").read_text(encoding="utf-8")).items()
    if not name.startswith("_")})
MIRRORS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
              "http://yann.lecun.com/exdb/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "kmnist": ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
})


def _hash_decompressed(path: Path, limit: int) -> tuple[int, str, str]:
    """(size, md5, sha256) of the decompressed bytes of ``path`` (plain or gzip), reading
    at most ``limit + 1`` bytes; raises OSError/EOFError/zlib.error on a bad gzip stream."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    size = 0
    with open(path, "rb") as raw:
        compressed = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        handle = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        while size <= limit:
            chunk = handle.read(min(_CHUNK, limit + 1 - size))
            if not chunk:
                break
            size += len(chunk)
            md5.update(chunk)
            sha.update(chunk)
    return size, md5.hexdigest(), sha.hexdigest()


def _file_md5(path: Path) -> str:
    md5 = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            md5.update(chunk)
    return md5.hexdigest()


def check_file(path: Path, expected: FileSum) -> FileCheck:
    """Check one file against ``expected``: decompressed size/md5/sha256 if known, else the
    md5 of the file itself if it is gzip (starts with 0x1f 0x8b), else ``unverifiable``."""
    path = Path(path)
    if expected.md5 is None and expected.sha256 is None:
        try:
            if expected.gz_md5 is None or not is_gzip(path):
                return FileCheck(path, "unverifiable", "no published checksum of this form of the file")
            got = _file_md5(path)
        except OSError as exc:
            return FileCheck(path, "mismatch", f"unreadable: {exc.strerror or exc}")
        ok = got == expected.gz_md5
        return FileCheck(path, "ok" if ok else "mismatch",
                         f"md5 of .gz {got}" + ("" if ok else f", expected {expected.gz_md5}"))
    try:
        size, md5, sha = _hash_decompressed(path, expected.size)
    except (OSError, EOFError, zlib.error) as exc:
        return FileCheck(path, "mismatch", f"unreadable: {exc}")
    if size != expected.size:
        have = f"{size} bytes" if size < expected.size else "longer"
        return FileCheck(path, "mismatch", f"decompressed {have}, expected {expected.size} bytes")
    for algo, got, want in (("md5", md5, expected.md5), ("sha256", sha, expected.sha256)):
        if want is not None and got != want:
            return FileCheck(path, "mismatch", f"decompressed {algo} {got}, expected {want}")
    return FileCheck(path, "ok", f"decompressed md5 {md5}")


def verify_dataset(name: str, data_dir: str | os.PathLike[str] | None = None,
                   folder: str | os.PathLike[str] | None = None) -> list[FileCheck]:
    """Check the four files of ``name`` (in ``folder``, or where it is found) against
    :data:`CHECKSUMS`; one :class:`FileCheck` per file, empty if not found."""
    check_name(name)
    where = Path(folder) if folder is not None else find_dataset(name, data_dir)
    if where is None:
        return []
    results = []
    for stem in FILE_STEMS:
        path = dataset_file(where, stem)
        if path is None:
            results.append(FileCheck(where / stem, "mismatch", "missing"))
        else:
            results.append(check_file(path, CHECKSUMS[name][stem]))
    return results


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to an http:// or https:// URL."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not newurl.lower().startswith(("http://", "https://")):
            raise DownloadError(f"{req.full_url}: redirect to {newurl!r} refused (only http:// and https://)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def _content_length(url: str, header: str | None, limit: int) -> int:
    """The announced size (0 if none); DownloadError unless a non-negative integer <= limit."""
    if header is None or not header.strip():
        return 0
    text = header.strip()
    if not text.isdigit() or not text.isascii():
        raise DownloadError(f"{url}: invalid Content-Length {header[:40]!r}")
    total = int(text[:30]) if len(text) <= 30 else limit + 1
    if total > limit:
        raise DownloadError(f"{url}: server announces {text[:30]} bytes, more than {limit}")
    return total


def _fetch(url: str, tmp: Path, limit: int, progress: bool, stall_timeout: float, deadline: float) -> None:
    """Stream ``url`` into ``tmp`` (at most ``limit`` bytes, ``deadline`` seconds in all,
    ``stall_timeout`` seconds per read); DownloadError on failure."""
    bar: Progress | None = None
    end = time.monotonic() + deadline
    try:
        with _OPENER.open(url, timeout=stall_timeout) as response, open(tmp, "wb") as out:
            total = _content_length(url, response.headers.get("Content-Length"), limit)
            bar = Progress(total, url.rsplit("/", 1)[-1], enabled=progress and total > 0)
            received = 0
            while chunk := response.read1(_CHUNK):
                received += len(chunk)
                if received > limit:
                    raise DownloadError(f"{url}: more than {limit} bytes received; aborted")
                if time.monotonic() > end:
                    raise DownloadError(f"{url}: not finished within the deadline of {deadline:g} s "
                                        f"({received} bytes received)")
                out.write(chunk)
                bar.update(len(chunk))
            if total and received != total:
                raise DownloadError(f"{url}: transfer cut short, {received} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
    except DownloadError:
        raise
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DownloadError(f"{url}: {exc.reason}") from None
    except (http.client.HTTPException, OSError, ValueError) as exc:  # cut connection, timeout, disk full, bad URL
        raise DownloadError(f"{url}: transfer failed ({type(exc).__name__}: {exc})") from None
    finally:
        if bar is not None:
            bar.close()


def _download_file(bases: tuple[str, ...], stem: str, dest: Path, expected: FileSum,
                   progress: bool, stall_timeout: float, deadline: float) -> Path:
    """Fetch ``stem.gz`` from the first base URL whose copy verifies; temp file, rename."""
    final = dest / f"{stem}.gz"
    errors = []
    for base in bases:
        url = base + f"{stem}.gz"
        tmp: Path | None = None
        try:
            fd, name = tempfile.mkstemp(prefix=f".{stem}.gz.", suffix=".part", dir=dest)
            os.close(fd)
            tmp = Path(name)
            _fetch(url, tmp, expected.size + (1 << 20), progress, stall_timeout, deadline)
            check = check_file(tmp, expected)
            if check.status != "ok":
                raise DownloadError(f"{url}: checksum mismatch ({check.detail}); file discarded")
            os.replace(tmp, final)
            return final
        except DownloadError as exc:
            errors.append(str(exc))
        except OSError as exc:  # mkstemp or rename in dest
            errors.append(f"{dest}: {exc.strerror or exc}")
        finally:
            if tmp is not None and tmp.exists():
                tmp.unlink()
    raise DownloadError("; ".join(errors))


def remove_stale_parts(folder: Path) -> list[Path]:
    """Remove the ``.<stem>.gz.*.part`` files a killed download left in ``folder``."""
    removed = []
    for stem in FILE_STEMS:
        for part in folder.glob(f".{stem}.gz.*.part"):
            try:
                part.unlink()
                removed.append(part)
            except OSError:
                pass
    return removed


def download(name: str, dest: str | os.PathLike[str] | None = None, base_url: str | None = None,
             progress: bool = True, timeout: float = 60.0, deadline: float = 1800.0) -> Path:
    """Download the four .gz files of ``name`` into ``dest`` (default
    ``~/.cache/coarsegrad/<name>/``), verify each, and return the folder.

    ``timeout``: the stall timeout, seconds without a byte; ``deadline``: seconds for one
    file's transfer in all (see the module docstring).

    ``base_url`` replaces the official mirrors (:data:`MIRRORS`; tried in order). Files
    already present and verified are kept. Raises :class:`DownloadError` (network, HTTP,
    truncated transfer, checksum mismatch; nothing is left behind) and
    :class:`ConfigError` for a bad name or URL.
    """
    check_name(name)
    number("timeout", timeout, lo=0.0, lo_open=True)
    number("deadline", deadline, lo=0.0, lo_open=True)
    if base_url is not None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError("base_url", f"must start with http:// or https://, got {base_url!r}")
        bases: tuple[str, ...] = (base_url if base_url.endswith("/") else base_url + "/",)
    else:
        bases = MIRRORS[name]
    folder = Path(dest).expanduser() if dest is not None else cache_dir() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"{folder}: cannot create ({exc.strerror or exc})") from None
    remove_stale_parts(folder)
    for stem in FILE_STEMS:
        expected = CHECKSUMS[name][stem]
        present = folder / f"{stem}.gz"
        if present.is_file() and check_file(present, expected).status == "ok":
            continue
        path = _download_file(bases, stem, folder, expected, progress, timeout, deadline)
        if progress:
            sys.stderr.write(f"{path}: verified\n")
    return folder
