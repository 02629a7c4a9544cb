"""Reader for the IDX format of MNIST-like datasets, plain or gzip-compressed.

Format (all integers big-endian)::

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 = uint8 (the only type accepted here)
    byte  3     number of dimensions d: 1 (labels, magic 2049) or 3 (images, magic 2051)
    4·d bytes   the d sizes as uint32: (N,) or (N, rows, cols)
    then        exactly N·rows·cols uint8 values, row-major, and nothing after them

A file is gzip-compressed when it starts with the gzip magic bytes 0x1f 0x8b,
whatever its name. Checks, each a :class:`~coarsegrad.errors.DataError` whose field
is the file path: the file exists, is a regular file, is not empty; the gzip stream is
complete and uncorrupted; the magic number; the header's promise (header + payload)
equals the (decompressed) size exactly: no truncation, no trailing bytes. Nothing is
allocated from the header before it is checked: plain files are compared with their
size on disk; gzip streams are decompressed in bounded chunks and stop as soon as
they exceed the promise, and a promise above ``max_bytes`` (default 256 MiB) or of
more than :data:`MAX_COUNT` (262,144) images or labels is refused outright, before
anything is allocated or decompressed (a gzip bomb or a lying header cannot exhaust
memory: decompression stops at the promise, and the promise is bounded).

Reference: Y. LeCun et al., THE MNIST DATABASE, http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from coarsegrad.errors import DataError

LABELS_MAGIC = 2049  # 0x00000801: uint8, 1 dimension
IMAGES_MAGIC = 2051  # 0x00000803: uint8, 3 dimensions
GZIP_MAGIC = b"\x1f\x8b"
MAX_BYTES = 1 << 28  # largest payload accepted by default (256 MiB; MNIST train images: 47 MB)
MAX_COUNT = 1 << 18  # most images (or labels) a header may declare: 262,144, 4.4× MNIST's 60,000
_CHUNK = 1 << 20


def _fail(path: Path, message: str) -> DataError:
    return DataError(str(path), message)


def is_gzip(path: str | os.PathLike) -> bool:
    """True if the file starts with the gzip magic bytes 0x1f 0x8b."""
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def _open_checked(path: Path) -> tuple[int, bool]:
    """(size on disk, is gzip) of an existing, non-empty regular file."""
    if not path.exists():
        raise _fail(path, "no such file")
    if path.is_dir():
        raise _fail(path, "is a directory, expected an IDX file")
    try:
        size = path.stat().st_size
        compressed = size >= 2 and is_gzip(path)
    except OSError as exc:
        raise _fail(path, f"cannot read: {exc.strerror or exc}") from None
    if size == 0:
        raise _fail(path, "empty file (0 bytes), expected an IDX file")
    return size, compressed


def _parse_header(path: Path, head: bytes, magic: int) -> tuple[int, ...]:
    """The dims promised by the first 4 + 4·d bytes ``head`` (d from ``magic``)."""
    ndim = magic & 0xFF
    kind = "labels" if magic == LABELS_MAGIC else "images"
    if len(head) < 4:
        raise _fail(path, f"truncated: {len(head)} bytes, shorter than the 4-byte IDX magic number")
    got = struct.unpack(">I", head[:4])[0]
    if head[:2] != b"\x00\x00" or head[2] != 0x08:
        raise _fail(path, f"wrong magic number 0x{got:08x}: expected {magic} (0x{magic:08x}, "
                          f"uint8 {kind}); not a uint8 IDX file")
    if head[3] != ndim:
        raise _fail(path, f"wrong number of dimensions {head[3]} (magic {got}): expected {ndim} "
                          f"for {kind} (magic {magic})")
    if len(head) < 4 + 4 * ndim:
        raise _fail(path, f"truncated: {len(head)} bytes, shorter than the "
                          f"{4 + 4 * ndim}-byte header")
    dims = struct.unpack(f">{ndim}I", head[4:4 + 4 * ndim])
    if dims[0] == 0:
        raise _fail(path, f"header promises 0 {kind}")
    if dims[0] > MAX_COUNT:
        raise _fail(path, f"header promises {dims[0]} {kind}, more than the limit of {MAX_COUNT} per file")
    return dims


Read = tuple[tuple[int, ...], bytearray]  # (dims, payload)


def _read_plain(path: Path, size: int, magic: int, max_bytes: int) -> Read:
    header_len = 4 + 4 * (magic & 0xFF)
    with open(path, "rb") as handle:
        dims = _parse_header(path, handle.read(header_len), magic)
        payload = math.prod(dims)
        _check_promise(path, dims, payload, max_bytes)
        if size != header_len + payload:
            raise _fail(path, _size_message(dims, header_len + payload, size, "file"))
        data = bytearray(payload)  # checked against the size on disk above
        got = handle.readinto(data)
    if got != payload:  # the file changed under us
        raise _fail(path, f"truncated: read {got} of {payload} data bytes")
    return dims, data


def _read_gzip(path: Path, magic: int, max_bytes: int) -> Read:
    header_len = 4 + 4 * (magic & 0xFF)
    try:
        with gzip.open(path, "rb") as handle:
            head = handle.read(header_len)
            if not head:
                raise _fail(path, "empty: the gzip stream decompresses to 0 bytes")
            dims = _parse_header(path, head, magic)
            payload = math.prod(dims)
            _check_promise(path, dims, payload, max_bytes)
            data = bytearray()
            while len(data) <= payload:  # grow with the real data, never from the header
                chunk = handle.read(min(_CHUNK, payload + 1 - len(data)))
                if not chunk:
                    break
                data += chunk
    except (EOFError, OSError, zlib.error) as exc:
        raise _fail(path, f"corrupt or truncated gzip stream ({exc})") from None
    if len(data) != payload:
        if len(data) > payload:
            raise _fail(path, f"trailing bytes: decompressed data is longer than the "
                              f"{header_len + payload} bytes the header {dims} promises")
        raise _fail(path, _size_message(dims, header_len + payload, header_len + len(data),
                                        "decompressed data"))
    return dims, data


def _check_promise(path: Path, dims: tuple[int, ...], payload: int, max_bytes: int) -> None:
    if payload > max_bytes:
        raise _fail(path, f"header dims {dims} promise {payload} data bytes, more than the "
                          f"limit of {max_bytes}; corrupt header?")


def _size_message(dims: tuple[int, ...], promised: int, actual: int, what: str) -> str:
    problem = "truncated" if actual < promised else "trailing bytes"
    return f"{problem}: header dims {dims} promise {promised} bytes, the {what} has {actual}"


def read_idx(path: str | os.PathLike, magic: int, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """The uint8 array of an IDX file whose magic number must be ``magic`` (2049 or 2051).

    Shape is the header's dims. Raises :class:`DataError` (field: the path) on any
    problem listed in the module docstring.
    """
    if magic not in (LABELS_MAGIC, IMAGES_MAGIC):
        raise ValueError(f"magic must be {LABELS_MAGIC} or {IMAGES_MAGIC}, got {magic}")
    path = Path(path)
    size, compressed = _open_checked(path)
    if compressed:
        dims, data = _read_gzip(path, magic, max_bytes)
    else:
        dims, data = _read_plain(path, size, magic, max_bytes)
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def read_idx_images(path: str | os.PathLike, image_shape: tuple[int, int] | None = (28, 28),
                    max_bytes: int = MAX_BYTES) -> torch.Tensor:
    """Images of an IDX file (magic 2051) as uint8 [N, rows, cols]; (rows, cols) must
    equal ``image_shape`` unless it is None."""
    array = read_idx(path, IMAGES_MAGIC, max_bytes)
    if image_shape is not None and tuple(array.shape[1:]) != tuple(image_shape):
        raise _fail(Path(path), f"images are {array.shape[1]}×{array.shape[2]}, "
                                f"expected {image_shape[0]}×{image_shape[1]}")
    return torch.from_numpy(array)


def read_idx_labels(path: str | os.PathLike, num_classes: int = 10) -> torch.Tensor:
    """Labels of an IDX file (magic 2049) as int64 [N], each in 0..num_classes−1."""
    array = read_idx(path, LABELS_MAGIC)
    bad = np.flatnonzero(array >= num_classes)
    if bad.size:
        raise _fail(Path(path), f"label {int(array[bad[0]])} at index {int(bad[0])} is outside "
                                f"0..{num_classes - 1} ({bad.size} labels out of range)")
    return torch.from_numpy(array.astype(np.int64))


def read_idx_pair(images_path: str | os.PathLike, labels_path: str | os.PathLike,
                  num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 [N, 28, 28], labels int64 [N]) from two IDX files of equal count N."""
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path, num_classes)
    if images.shape[0] != labels.shape[0]:
        raise _fail(Path(images_path), f"count mismatch: {images.shape[0]} images but "
                                       f"{labels.shape[0]} labels in {labels_path}")
    return images, labels
