"""IDX reader: round trips, and one test per malformed file (each built here in tmp_path)."""

from __future__ import annotations

import gzip
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from coarsegrad.data.idx import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    read_idx_images,
    read_idx_labels,
    read_idx_pair,
)
from coarsegrad.errors import DataError


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    """Header (magic, dims as big-endian uint32) followed by ``payload``."""
    return struct.pack(f">I{len(dims)}I", magic, *dims) + payload


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def images_file(tmp_path: Path, n: int = 5, gz: bool = False, name: str = "img") -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    return write(tmp_path / name, idx_bytes(IMAGES_MAGIC, (n, 28, 28), pixels.tobytes()), gz), pixels


def labels_file(tmp_path: Path, labels: list[int], gz: bool = False, name: str = "lab") -> Path:
    return write(tmp_path / name, idx_bytes(LABELS_MAGIC, (len(labels),), bytes(labels)), gz)


def expect_error(path: Path, match: str, read=read_idx_images) -> DataError:
    with pytest.raises(DataError, match=match) as info:
        read(path)
    assert info.value.field == str(path) and str(path) in str(info.value)
    return info.value


@pytest.mark.parametrize("gz", [False, True])
def test_round_trip(tmp_path, gz):
    path, pixels = images_file(tmp_path, 7, gz)
    images = read_idx_images(path)
    assert images.dtype == torch.uint8 and images.shape == (7, 28, 28)
    assert np.array_equal(images.numpy(), pixels)
    labels = read_idx_labels(labels_file(tmp_path, [3, 0, 9, 1], gz))
    assert labels.dtype == torch.int64 and labels.tolist() == [3, 0, 9, 1]


def test_gzip_is_detected_by_content_not_name(tmp_path):
    gz_named_plain = labels_file(tmp_path, [1, 2], gz=False, name="plain.gz")
    plain_named_gz = labels_file(tmp_path, [3, 4], gz=True, name="compressed-idx1-ubyte")
    assert read_idx_labels(gz_named_plain).tolist() == [1, 2]
    assert read_idx_labels(plain_named_gz).tolist() == [3, 4]


@pytest.mark.parametrize("magic", [0x00000903, 0x00000B03, 0x12340803, 0x0100_0803])
def test_wrong_magic(tmp_path, magic):
    path = write(tmp_path / "bad", idx_bytes(magic, (1, 28, 28), bytes(784)))
    expect_error(path, "wrong magic number")


def test_wrong_dimension_count(tmp_path):
    labels_as_images = labels_file(tmp_path, [1, 2, 3])
    expect_error(labels_as_images, "wrong number of dimensions 1")
    images, _ = images_file(tmp_path, 2)
    expect_error(images, "wrong number of dimensions 3", read_idx_labels)


def test_wrong_image_shape_and_zero_count(tmp_path):
    path = write(tmp_path / "big", idx_bytes(IMAGES_MAGIC, (2, 32, 32), bytes(2 * 32 * 32)))
    expect_error(path, "32×32, expected 28×28")
    assert read_idx_images(path, image_shape=None).shape == (2, 32, 32)
    empty = write(tmp_path / "zero", idx_bytes(LABELS_MAGIC, (0,), b""))
    expect_error(empty, "promises 0 labels", read_idx_labels)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_data(tmp_path, gz):
    data = idx_bytes(IMAGES_MAGIC, (3, 28, 28), bytes(3 * 784 - 1))
    expect_error(write(tmp_path / "short", data, gz), "truncated")


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_header(tmp_path, gz):
    expect_error(write(tmp_path / "h1", b"\x00\x00\x08", gz), "shorter than the 4-byte")
    expect_error(write(tmp_path / "h2", struct.pack(">II", IMAGES_MAGIC, 3), gz), "16-byte header")


@pytest.mark.parametrize("gz", [False, True])
def test_trailing_bytes(tmp_path, gz):
    data = idx_bytes(LABELS_MAGIC, (3,), bytes([1, 2, 3, 4]))
    expect_error(write(tmp_path / "long", data, gz), "trailing bytes", read_idx_labels)


@pytest.mark.parametrize("gz", [False, True])
def test_huge_promise_is_refused_without_allocating(tmp_path, gz):
    over_limit = write(tmp_path / "huge", idx_bytes(IMAGES_MAGIC, (2**32 - 1, 28, 28), bytes(784)), gz)
    within_limit = write(tmp_path / "lying", idx_bytes(IMAGES_MAGIC, (60000, 28, 28), bytes(784)), gz)
    tracemalloc.start()
    try:
        expect_error(over_limit, "more than the limit")
        expect_error(within_limit, "truncated")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"peak {peak} bytes: allocated from the header"


def test_gzip_bomb_stops_after_the_promise(tmp_path):
    """A 256 KiB promise (the most labels a header may declare) whose gzip stream inflates
    to 64 MB: stops at promise + 1 byte."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)
    head = idx_bytes(LABELS_MAGIC, (1 << 18,), b"")
    parts = [packer.compress(head)] + [packer.compress(bytes(1 << 20)) for _ in range(64)]
    path = write(tmp_path / "bomb.gz", b"".join(parts) + packer.flush())
    tracemalloc.start()
    started = time.perf_counter()
    try:
        expect_error(path, "trailing bytes", read_idx_labels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20 and time.perf_counter() - started < 5


def test_truncated_gzip(tmp_path):
    full = gzip.compress(idx_bytes(LABELS_MAGIC, (4000,), bytes(range(10)) * 400), mtime=0)
    expect_error(write(tmp_path / "cut.gz", full[: len(full) // 2]), "gzip", read_idx_labels)
    expect_error(write(tmp_path / "no-trailer.gz", full[:-4]), "gzip", read_idx_labels)


def test_corrupt_gzip(tmp_path):
    full = gzip.compress(idx_bytes(LABELS_MAGIC, (4000,), bytes(range(10)) * 400), mtime=0)
    bad_method = bytearray(full)
    bad_method[2] = 0x07  # unknown compression method
    expect_error(write(tmp_path / "method.gz", bytes(bad_method)), "gzip", read_idx_labels)
    bad_crc = bytearray(full)
    bad_crc[-8] ^= 0xFF  # CRC32 in the trailer
    expect_error(write(tmp_path / "crc.gz", bytes(bad_crc)), "CRC check failed", read_idx_labels)
    for pos in range(10, len(full)):  # every byte after the 10-byte gzip header matters
        corrupt = bytearray(full)
        corrupt[pos] ^= 0x55
        expect_error(write(tmp_path / f"flip{pos}.gz", bytes(corrupt)), ".", read_idx_labels)


def test_empty_file_and_empty_gzip(tmp_path):
    expect_error(write(tmp_path / "empty", b""), "empty file")
    expect_error(write(tmp_path / "empty.gz", b"", gz=True), "decompresses to 0 bytes")


def test_directory_and_missing_file(tmp_path):
    expect_error(tmp_path, "is a directory")
    expect_error(tmp_path / "nope-idx3-ubyte.gz", "no such file")


def test_count_mismatch(tmp_path):
    images, _ = images_file(tmp_path, 5)
    labels = labels_file(tmp_path, [1, 2, 3, 4])
    with pytest.raises(DataError, match="5 images but 4 labels") as info:
        read_idx_pair(images, labels)
    assert str(images) in str(info.value) and str(labels) in str(info.value)


def test_label_out_of_range(tmp_path):
    path = labels_file(tmp_path, [0, 9, 10, 255])
    error = expect_error(path, r"label 10 at index 2 is outside 0..9 \(2 labels", read_idx_labels)
    assert isinstance(error, ValueError)
    assert read_idx_labels(path, num_classes=256).tolist() == [0, 9, 10, 255]
