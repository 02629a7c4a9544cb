"""Tensor files: the safetensors format (no pickle) with our checks and a digest on top.

Layout (safetensors): 8-byte little-endian header length n, n bytes of JSON header
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``,
then the raw little-endian tensor bytes. The ``safetensors`` package serialises and parses;
before it sees a byte, :func:`loads` checks, without allocating anything the file does not
hold:

- file size ≤ ``max_bytes``; header length ≤ file length − 8; header is UTF-8 JSON;
- every entry is a dict with exactly dtype ∈ :data:`DTYPES`, shape = list of ints ≥ 0,
  data_offsets = [begin, end] with end − begin = prod(shape)·itemsize; the entries tile
  the data section exactly (no overlap, no gap, no trailing bytes);
- metadata maps strings to strings and holds ``coarsegrad.sha256`` =
  SHA-256( meta ‖ for each name in sorted order: [name, dtype, shape] ‖ bytes ), every
  part length-prefixed, meta = the metadata without the digest as canonical JSON.

Any failure is a :class:`DataError` naming the file. A file without a digest was written
by an older coarsegrad (or another tool) and is rejected. Writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import deserialize as _untyped_deserialize
from safetensors.torch import save as st_save

from coarsegrad.errors import DataError
from coarsegrad.io.records import atomic_write_bytes

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
_NAMES = {v: k for k, v in DTYPES.items()}
_ITEMSIZE = {k: torch.empty((), dtype=v).element_size() for k, v in DTYPES.items()}
DIGEST_KEY = "coarsegrad.sha256"
MAX_BYTES = 1 << 30  # largest file load() reads (1 GiB); our models are a few MB
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors limit
deserialize: Callable[[bytes], list[tuple[str, dict[str, Any]]]] = _untyped_deserialize
_ENTRY_KEYS = {"dtype", "shape", "data_offsets"}
OLD_FILE = "has no integrity digest: written by an older coarsegrad or another tool; re-export/re-train"


def _framed(h: Any, part: bytes) -> None:
    h.update(struct.pack("<Q", len(part)))
    h.update(part)


def digest(metadata: Mapping[str, str], entries: list[tuple[str, str, list[int], bytes | memoryview]]) -> str:
    """SHA-256 hex of (metadata without the digest ‖ [name, dtype, shape] ‖ bytes per tensor, by name)."""
    h = hashlib.sha256()
    meta = {k: v for k, v in metadata.items() if k != DIGEST_KEY}
    _framed(h, json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    for name, dtype, shape, data in sorted(entries, key=lambda e: e[0]):
        _framed(h, json.dumps([name, dtype, shape], separators=(",", ":")).encode("utf-8"))
        _framed(h, bytes(data))
    return h.hexdigest()


def _cpu(name: str, t: torch.Tensor) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise DataError(name, f"must be a tensor, got {type(t).__name__}")
    if t.dtype not in _NAMES:
        raise DataError(name, f"dtype {t.dtype} is not supported by safetensors")
    return t.detach().to("cpu").clone(memory_format=torch.contiguous_format)  # own storage: no sharing


def _raw(t: torch.Tensor) -> bytes:
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def dumps(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """``tensors`` (copied to CPU) and string ``metadata`` as safetensors bytes, digest included."""
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    if DIGEST_KEY in meta:
        raise DataError("metadata", f"{DIGEST_KEY!r} is reserved for the digest")
    cpu = {str(name): _cpu(str(name), t) for name, t in tensors.items()}
    meta[DIGEST_KEY] = digest(meta, [(n, _NAMES[t.dtype], list(t.shape), _raw(t)) for n, t in cpu.items()])
    return _sorted_metadata(bytes(st_save(cpu, meta)))


def _sorted_metadata(blob: bytes) -> bytes:
    """The same file with its metadata keys sorted: safetensors writes them in hash-map order,
    which varies between processes, and equal runs must give byte-identical files."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    raw = json.dumps({"__metadata__": header.pop("__metadata__"), **header}, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data section stays 8-byte aligned, as safetensors writes it
    return struct.pack("<Q", len(raw)) + raw + blob[8 + n:]


def save(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """Atomically write ``tensors`` and ``metadata`` to ``path`` (temporary file, fsync, rename)."""
    atomic_write_bytes(Path(path), dumps(tensors, metadata))


def _int(value: object) -> bool:
    return type(value) is int  # not bool, not float


def _check_header(header: object, data_len: int, source: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(tensor entries, metadata) after checking the schema and the layout against ``data_len``."""
    if not isinstance(header, dict):
        raise DataError(source, "safetensors header is not a JSON object")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise DataError(source, "__metadata__ must map strings to strings")
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    spans = []
    for name, info in entries.items():
        if not isinstance(info, dict) or set(info) != _ENTRY_KEYS:
            raise DataError(source, f"tensor {name!r}: header entry must be a dict with keys {sorted(_ENTRY_KEYS)}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise DataError(source, f"tensor {name!r}: dtype {dtype!r} is not one of {sorted(DTYPES)}")
        if not isinstance(shape, list) or len(shape) > 16 or not all(_int(s) and s >= 0 for s in shape):
            raise DataError(source, f"tensor {name!r}: shape must be a list of ≤ 16 non-negative ints")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_int(o) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_len):
            raise DataError(source, f"tensor {name!r} lies outside the file (truncated?)")
        if offsets[1] - offsets[0] != math.prod(shape) * _ITEMSIZE[dtype]:
            raise DataError(source, f"tensor {name!r}: {offsets[1] - offsets[0]} bytes do not fit {dtype} {shape}")
        spans.append((offsets[0], offsets[1]))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise DataError(source, "tensor data overlaps or leaves gaps (tampered file?)")
        position = end
    if position != data_len:
        raise DataError(source, f"{data_len - position} trailing bytes after the last tensor")
    return entries, metadata


def loads(blob: bytes, source: str = "<bytes>") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata without the digest) from safetensors bytes; DataError naming ``source``."""
    if len(blob) < 8:
        raise DataError(source, "truncated safetensors file (no header length)")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > min(_MAX_HEADER, len(blob) - 8):
        raise DataError(source, f"header length {n} exceeds the file size {len(blob)}")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise DataError(source, f"corrupt safetensors header ({type(exc).__name__})") from None
    data = memoryview(blob)[8 + n:]
    entries, metadata = _check_header(header, len(data), source)
    if DIGEST_KEY not in metadata:
        raise DataError(source, OLD_FILE)
    expected = digest(metadata, [(k, v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]])
                                 for k, v in entries.items()])
    if metadata[DIGEST_KEY] != expected:
        raise DataError(source, "SHA-256 digest mismatch: the file was modified or corrupted")
    try:
        parsed = deserialize(bytes(blob))
    except Exception as exc:  # noqa: BLE001 - SafetensorError and friends: the parser refused the file
        raise DataError(source, f"safetensors refused the file ({exc})") from None
    if {k: (v["dtype"], v["shape"]) for k, v in parsed} != {k: (v["dtype"], v["shape"]) for k, v in entries.items()}:
        raise DataError(source, "safetensors read other tensors than the header lists (duplicate keys?)")
    tensors = {}
    for name, view in parsed:
        dtype, shape, raw = DTYPES[view["dtype"]], view["shape"], view["data"]
        flat = torch.frombuffer(raw, dtype=torch.uint8) if len(raw) else torch.empty(0, dtype=torch.uint8)
        tensors[name] = flat.view(dtype).reshape(shape)
    return tensors, {k: v for k, v in metadata.items() if k != DIGEST_KEY}


def load(path: str | Path, max_bytes: int = MAX_BYTES) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read and verify a file written by :func:`save`; never unpickles. DataError on a bad file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "no such file")
    size = path.stat().st_size
    if size > max_bytes:
        raise DataError(str(path), f"file is {size} bytes, more than the {max_bytes} allowed")
    with open(path, "rb") as handle:
        blob = handle.read(max_bytes + 1)
    if len(blob) > max_bytes:
        raise DataError(str(path), f"file grew past the {max_bytes} bytes allowed while reading")
    return loads(blob, str(path))
