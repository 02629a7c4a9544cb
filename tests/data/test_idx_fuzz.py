"""Property tests of the IDX reader: any bytes, plain or gzip, give an array that matches the
header exactly or a DataError naming the file; never another exception."""

from __future__ import annotations

import gzip
import struct
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coarsegrad.data.idx import IMAGES_MAGIC, LABELS_MAGIC, MAX_COUNT, read_idx
from coarsegrad.errors import DataError

SETTINGS = settings(max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _read(blob: bytes, magic: int) -> np.ndarray | DataError:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f"
        path.write_bytes(blob)
        try:
            return read_idx(path, magic)
        except DataError as exc:
            assert exc.field == str(path)
            return exc


@st.composite
def idx_files(draw: st.DrawFn) -> tuple[bytes, int, tuple[int, ...] | None]:
    """(bytes, magic, dims if the bytes are a valid file else None)."""
    magic = draw(st.sampled_from((LABELS_MAGIC, IMAGES_MAGIC)))
    dims = (draw(st.integers(1, 6)),) + ((draw(st.integers(0, 5)), draw(st.integers(0, 5))) if magic == IMAGES_MAGIC else ())
    payload = draw(st.binary(min_size=int(np.prod(dims)), max_size=int(np.prod(dims))))
    blob = struct.pack(f">I{len(dims)}I", magic, *dims) + payload
    valid = True
    mutation = draw(st.sampled_from(("none", "cut", "extend", "flip", "count", "random")))
    if mutation == "cut":
        blob = blob[:draw(st.integers(0, len(blob) - 1))]
        valid = False
    elif mutation == "extend":
        blob += draw(st.binary(min_size=1, max_size=8))
        valid = False
    elif mutation == "flip":
        i = draw(st.integers(0, len(blob) - 1))
        blob = blob[:i] + bytes([blob[i] ^ (1 << draw(st.integers(0, 7)))]) + blob[i + 1:]
        valid = None  # may or may not still be valid
    elif mutation == "count":
        blob = blob[:4] + struct.pack(">I", draw(st.sampled_from((0, MAX_COUNT + 1, 2**32 - 1)))) + blob[8:]
        valid = False
    elif mutation == "random":
        blob = draw(st.binary(max_size=64))
        valid = None
    if draw(st.booleans()):
        blob = gzip.compress(blob, mtime=0)
    return blob, magic, (dims if valid else None) if valid is not None else ()


@SETTINGS
@given(idx_files())
def test_idx_reader_returns_the_header_shape_or_a_data_error(case):
    blob, magic, dims = case
    result = _read(blob, magic)
    if dims is None:
        assert isinstance(result, DataError)
    elif dims:
        assert isinstance(result, np.ndarray) and result.shape == dims and result.dtype == np.uint8
        assert result.tobytes() == gzip.decompress(blob)[4 + 4 * len(dims):] if blob[:2] == b"\x1f\x8b" \
            else result.tobytes() == blob[4 + 4 * len(dims):]
    else:
        assert isinstance(result, (np.ndarray, DataError))


@SETTINGS
@given(st.binary(max_size=200), st.integers(0, 3))
def test_corrupt_gzip_streams_are_data_errors(raw, cut):
    blob = gzip.compress(struct.pack(">II", LABELS_MAGIC, max(1, len(raw))) + raw.ljust(1, b"\0"), mtime=0)
    result = _read(blob[:len(blob) - cut] if cut else blob, LABELS_MAGIC)
    assert isinstance(result, DataError) if cut else isinstance(result, np.ndarray)
