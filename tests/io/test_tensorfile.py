import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file  # independent implementation as oracle

from coarsegrad import DataError
from coarsegrad.io.tensorfile import dumps, load, loads, save


def sample():
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(3, 4, generator=g), "b": torch.arange(5, dtype=torch.int64),
            "m": torch.tensor([True, False]), "h": torch.randn(2, generator=g).to(torch.bfloat16),
            "e": torch.zeros(0, 3)}


def test_round_trip_and_interop(tmp_path):
    tensors = sample()
    save(tmp_path / "ours.safetensors", tensors, {"config": "{}"})
    theirs = load_file(tmp_path / "ours.safetensors")
    back, meta = load(tmp_path / "ours.safetensors")
    assert meta == {"config": "{}"}
    for name, t in tensors.items():
        assert torch.equal(theirs[name], t) and torch.equal(back[name], t) and back[name].dtype == t.dtype
    save_file(tensors, tmp_path / "theirs.safetensors")  # no digest: rejected, with the reason
    with pytest.raises(DataError, match="older coarsegrad"):
        load(tmp_path / "theirs.safetensors")


def test_atomic_write_leaves_no_temporary(tmp_path):
    save(tmp_path / "x.safetensors", sample())
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]


@pytest.mark.parametrize("cut", [0, 4, 8, 20, -1, -7])
def test_truncated(cut):
    blob = dumps(sample())
    with pytest.raises(DataError):
        loads(blob[:cut] if cut >= 0 else blob[:cut], "f")


def tamper(blob, edit):
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + blob[8 + n:]


@pytest.mark.parametrize("edit", [
    lambda h: h["w"].update(shape=[4, 4]),
    lambda h: h["w"].update(data_offsets=[0, 10**9]),
    lambda h: h["w"].update(dtype="F64"),
    lambda h: h["w"].update(dtype="Q7"),
    lambda h: h["b"].update(data_offsets=h["w"]["data_offsets"]),
    lambda h: h.pop("b"),
    lambda h: h.update(__metadata__={"a": 1}),
])
def test_tampered_headers(edit):
    blob = tamper(dumps(sample(), {"k": "v"}), edit)
    with pytest.raises(DataError):
        loads(blob, "f")


def test_garbage_and_missing(tmp_path):
    with pytest.raises(DataError):
        loads(struct.pack("<Q", 5) + b"\xff\xfe{{{", "f")
    with pytest.raises(DataError):
        loads(struct.pack("<Q", 2**62) + b"{}", "f")
    with pytest.raises(DataError, match="no such file"):
        load(tmp_path / "nope.safetensors")


def test_bytes_are_the_same_in_another_process(tmp_path):
    """safetensors writes metadata in hash-map order; ours sorts it, so equal saves are equal bytes."""
    import subprocess
    import sys

    code = ("import torch; from coarsegrad.io.tensorfile import save; "
            "save(__import__('sys').argv[1], {'w': torch.arange(6.0)}, {'b': '2', 'a': '1', 'c': '3'})")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "there.st")], check=True)  # 4 keys: 1/24 by chance
    save(tmp_path / "here.st", {"w": torch.arange(6.0)}, {"c": "3", "a": "1", "b": "2"})
    assert (tmp_path / "there.st").read_bytes() == (tmp_path / "here.st").read_bytes()
