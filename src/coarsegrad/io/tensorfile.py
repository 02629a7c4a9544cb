"""Read and write the safetensors format, without pickle and without extra dependencies.

Layout: 8-byte little-endian header length n, n bytes of JSON header
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``,
then the raw little-endian tensor bytes. Reading checks every field against the file
size before touching data. Writes are atomic (temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import torch

from coarsegrad.errors import DataError
from coarsegrad.io.records import atomic_write_bytes

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
_NAMES = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


def dumps(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Serialise ``tensors`` (CPU copies, contiguous) and string ``metadata`` to bytes."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        if t.dtype not in _NAMES:
            raise DataError(name, f"dtype {t.dtype} is not supported by safetensors")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(blobs)


def save(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically write ``tensors`` and ``metadata`` to ``path`` in safetensors format."""
    atomic_write_bytes(Path(path), dumps(tensors, metadata))


def loads(blob: bytes, source: str = "<bytes>") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Parse safetensors bytes; raise :class:`DataError` naming ``source`` on any inconsistency."""
    if len(blob) < 8:
        raise DataError(source, "truncated safetensors file (no header length)")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > min(_MAX_HEADER, len(blob) - 8):
        raise DataError(source, f"header length {n} exceeds the file size {len(blob)}")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(source, f"corrupt safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise DataError(source, "safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise DataError(source, "__metadata__ must map strings to strings")
    data = memoryview(blob)[8 + n:]
    tensors, covered = {}, []
    for name, info in header.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = [int(s) for s in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise DataError(source, f"tensor {name!r} has a malformed header entry") from None
        itemsize = torch.empty((), dtype=dtype).element_size()
        if any(s < 0 for s in shape) or not 0 <= begin <= end <= len(data):
            raise DataError(source, f"tensor {name!r} lies outside the file (truncated?)")
        if (end - begin) != math.prod(shape) * itemsize:
            raise DataError(source, f"tensor {name!r}: {end - begin} bytes do not fit shape {shape}")
        buf = bytearray(data[begin:end])
        flat = torch.frombuffer(buf, dtype=torch.uint8) if buf else torch.empty(0, dtype=torch.uint8)
        tensors[name] = flat.view(dtype).reshape(shape).clone()
        covered.append((begin, end))
    covered.sort()
    position = 0
    for begin, end in covered:
        if begin != position:
            raise DataError(source, "tensor data overlaps or leaves gaps (tampered file?)")
        position = end
    if position != len(data):
        raise DataError(source, f"{len(data) - position} trailing bytes after the last tensor")
    return tensors, dict(metadata)


def load(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file; never unpickles. Raises :class:`DataError` on a bad file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "no such file")
    return loads(path.read_bytes(), str(path))

