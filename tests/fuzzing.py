"""Hypothesis strategies shared by the loader fuzz tests: byte mutations of a valid file and
edits of its JSON header, and the one property every loader must have."""

from __future__ import annotations

import json
import resource
import struct
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from coarsegrad.errors import DataError

RSS_BOUND_MB = 256  # no single load may raise the process's peak memory by more than this

# values a fuzzer puts where the schema wants something else
ODD_VALUES = st.one_of(
    st.integers(-(2**70), 2**70), st.sampled_from([-1, 0, 2**31, 2**63, 10**30, 1.5, -0.0]),
    st.floats(allow_nan=True, allow_infinity=True), st.none(), st.booleans(), st.text(max_size=8),
    st.lists(st.integers(-3, 10**12), max_size=4), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.recursive(st.integers(0, 3), lambda inner: st.lists(inner, min_size=1, max_size=2), max_leaves=40),
)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


@st.composite
def byte_mutation(draw: st.DrawFn, blob: bytes) -> bytes:
    """One of: flip 1–4 bits, cut the file, append bytes, overwrite a few bytes."""
    data = bytearray(blob)
    kind = draw(st.sampled_from(["flip", "cut", "append", "overwrite"]))
    if kind == "flip":
        for bit in draw(st.lists(st.integers(0, len(data) * 8 - 1), min_size=1, max_size=4)):
            data[bit // 8] ^= 1 << (bit % 8)
    elif kind == "cut":
        del data[draw(st.integers(0, len(data) - 1)):]
    elif kind == "append":
        data += draw(st.binary(min_size=1, max_size=16))
    else:
        at = draw(st.integers(0, len(data) - 1))
        patch = draw(st.binary(min_size=1, max_size=8))
        data[at:at + len(patch)] = patch
    return bytes(data)


def split(blob: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def join(header_bytes: bytes, body: bytes) -> bytes:
    return struct.pack("<Q", len(header_bytes)) + header_bytes + body


@st.composite
def json_edit(draw: st.DrawFn, obj: Any) -> Any:
    """``obj`` (a JSON value) with one value somewhere inside replaced, removed, or turned
    into a list/nested structure; paths are drawn from what is there."""
    obj = json.loads(json.dumps(obj))
    parent, key = None, None
    node = obj
    while isinstance(node, (dict, list)) and node and draw(st.booleans()):
        keys = sorted(node) if isinstance(node, dict) else list(range(len(node)))
        parent, key = node, draw(st.sampled_from(keys))
        node = node[key]
    action = draw(st.sampled_from(["replace", "remove", "listify", "add"]))
    if parent is None:
        return draw(ODD_VALUES) if action == "replace" else [obj]
    if action == "remove" and isinstance(parent, dict):
        del parent[key]
    elif action == "listify":
        parent[key] = [node]
    elif action == "add" and isinstance(parent, dict):
        parent[draw(st.text(max_size=5))] = draw(ODD_VALUES)
    else:
        parent[key] = draw(ODD_VALUES)
    return obj


@st.composite
def raw_header_bytes(draw: st.DrawFn, header: dict[str, Any]) -> bytes:
    """The header re-encoded after an edit: JSON (Infinity/NaN allowed), invalid UTF-8, or deep nesting."""
    kind = draw(st.sampled_from(["edit", "edit", "edit", "not_utf8", "deep"]))
    if kind == "edit":
        return json.dumps(draw(json_edit(header))).encode()
    if kind == "not_utf8":
        raw = json.dumps(header).encode()
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"])) + raw[at:]
    depth = draw(st.integers(100, 100_000))
    return b"[" * depth + b"]" * depth


def identical_or_data_error(load: Callable[[], Any], same: Callable[[Any], bool]) -> str:
    """Run ``load``: it must raise DataError or return something ``same`` accepts; peak memory bounded."""
    before = peak_rss_mb()
    try:
        result = load()
    except DataError:
        outcome = "DataError"
    else:
        assert same(result), "a mutated file loaded as something other than the original"
        outcome = "identical"
    assert peak_rss_mb() - before < RSS_BOUND_MB, "a small mutated file made the loader allocate a lot"
    return outcome
