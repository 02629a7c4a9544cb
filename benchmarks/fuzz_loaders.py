"""Long fuzz run of the storage loaders: tensor files, checkpoints, train states, integer models.

    python benchmarks/fuzz_loaders.py [--n 100000] [--seconds S] [--seed 0] [--loaders ...]

For each loader, a small valid file is written, then mutated ``--n`` times (or until
``--seconds`` per loader): bit flips, cuts, appended/overwritten bytes, header edits
(odd values, lists for dicts, removed keys, non-UTF-8, deep nesting) and *crafted* files
whose metadata was edited and then re-signed (valid digest, as an attacker could).
Outcomes per loader:

    ok-identical  loaded, equal to the original
    ok-crafted    a re-signed edit that passed every check and loaded (allowed)
    DataError     refused with the project's error
    BUG:<type>    anything else: another exception, or a byte-mutated file loading as
                  something other than the original (exit status 1)
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import coarsegrad as cg
from coarsegrad.config import ModelConfig
from coarsegrad.errors import DataError
from coarsegrad.export import to_integer
from coarsegrad.export.integer_io import INTEGER_KEY, load_integer, save_integer
from coarsegrad.io import tensorfile
from coarsegrad.io.checkpoint import HEADER_KEY, _digest, load_checkpoint, save_checkpoint
from coarsegrad.models.build import build_model
from coarsegrad.training.state import META_KEY, load_train_state, save_train_state

ODD = [-1, 0, 2**31, 2**63, 10**30, -(10**30), 1.5, float("inf"), float("nan"), None, True, "x", "", [], {},
       [1, 2], [[0]], {"a": 1}, [-3, 2**40]]


def mutate_bytes(blob: bytes, rng: random.Random) -> bytes:
    data = bytearray(blob)
    kind = rng.choice(("flip", "flip", "cut", "append", "overwrite"))
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            bit = rng.randrange(len(data) * 8)
            data[bit // 8] ^= 1 << (bit % 8)
    elif kind == "cut":
        del data[rng.randrange(len(data)):]
    elif kind == "append":
        data += rng.randbytes(rng.randint(1, 16))
    else:
        at = rng.randrange(len(data))
        data[at:at + 4] = rng.randbytes(rng.randint(1, 8))
    return bytes(data)


def edit_json(obj: Any, rng: random.Random) -> Any:
    obj = json.loads(json.dumps(obj))
    parent, key, node = None, None, obj
    while isinstance(node, (dict, list)) and node and rng.random() < 0.7:
        parent, key = node, rng.choice(sorted(node) if isinstance(node, dict) else range(len(node)))
        node = node[key]
    action = rng.choice(("replace", "remove", "listify", "add"))
    if parent is None:
        return rng.choice(ODD) if action == "replace" else [obj]
    if action == "remove" and isinstance(parent, dict):
        del parent[key]
    elif action == "listify":
        parent[key] = [node]
    elif action == "add" and isinstance(parent, dict):
        parent[rng.choice(("k", "dtype", "shape", ""))] = rng.choice(ODD)
    else:
        parent[key] = rng.choice(ODD)
    return obj


def mutate_header(blob: bytes, rng: random.Random) -> bytes:
    """The safetensors header edited in place (the digest is left as it was)."""
    (n,) = struct.unpack("<Q", blob[:8])
    header, body = json.loads(blob[8:8 + n]), blob[8 + n:]
    kind = rng.choice(("edit", "edit", "not_utf8", "deep"))
    if kind == "edit":
        raw = json.dumps(edit_json(header, rng)).encode()
    elif kind == "not_utf8":
        raw = json.dumps(header).encode()
        at = rng.randrange(len(raw))
        raw = raw[:at] + rng.choice((b"\xff", b"\xc3", b"\xed\xa0\x80")) + raw[at:]
    else:
        depth = rng.randint(100, 200_000)
        raw = b"[" * depth + b"]" * depth
    return struct.pack("<Q", len(raw)) + raw + body


class Target:
    """One loader: its valid file, how to load it, how to compare, how to craft a re-signed file."""

    def __init__(self, name: str, path: Path, load: Callable[[Path], Any], same: Callable[[Any], bool],
                 key: str | None, resign: Callable[[Any], Any] = lambda meta: meta) -> None:
        self.name, self.path, self.load, self.same, self.key, self.resign = name, path, load, same, key, resign
        self.blob = path.read_bytes()
        self.tensors, metadata = tensorfile.load(path)
        self.meta = json.loads(metadata[key]) if key else None


def targets(folder: Path) -> list[Target]:
    out = []
    tensors = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.arange(3), "e": torch.zeros(0, 2)}
    tensorfile.save(folder / "t.safetensors", tensors, {"note": "n"})
    out.append(Target("tensorfile", folder / "t.safetensors", tensorfile.load,
                      lambda r: r[1] == {"note": "n"} and r[0].keys() == tensors.keys()
                      and all(torch.equal(r[0][k], v) for k, v in tensors.items()), None))

    cfg = ModelConfig(model="mlp", hidden=6, batchnorm=True, bits=2)
    model = build_model(cfg, 5, 3, seed=1).eval()
    save_checkpoint(folder / "c.safetensors", model, config=cfg, normalization=(0.5, 0.25))
    state = model.state_dict()

    def resign_checkpoint(header: Any) -> Any:
        if isinstance(header, dict):
            header["sha256"] = _digest(header, tensorfile.load(folder / "c.safetensors")[0])
        return header
    out.append(Target("checkpoint", folder / "c.safetensors", load_checkpoint,
                      lambda r: all(torch.equal(r[0].state_dict()[k], v) for k, v in state.items()),
                      HEADER_KEY, resign_checkpoint))

    X, y = cg.orthogonal_subspaces(3, 6, 2, 8, generator=torch.Generator().manual_seed(0))
    net = cg.TwoLayerNet(6, 3, 2, bits=2, second_layer="trained", generator=torch.Generator().manual_seed(1))
    states: dict[int, Any] = {}
    cg.train(net, X, y, cg.TrainConfig(steps=12, optimizer="adam", lr=0.01, batch_size=5, stop_at_perfect=False),
             checkpoint_every=7, on_checkpoint=lambda s: states.__setitem__(s.step, s))
    save_train_state(folder / "s.safetensors", states[7])
    ref = states[7]
    out.append(Target("train_state", folder / "s.safetensors", load_train_state,
                      lambda s: (s.step, s.position, s.window, s.history) == (ref.step, ref.position, ref.window,
                                                                              ref.history)
                      and torch.equal(s.order, ref.order) and torch.equal(s.rng, ref.rng), META_KEY))

    mlp = build_model(ModelConfig(model="mlp", hidden=6, bits=2), 5, 3, seed=2).eval()
    integer = to_integer(mlp, weights="int8", input_range=(-2.0, 3.0))
    save_integer(folder / "i.safetensors", integer, {"architecture": "mlp"})
    out.append(Target("integer", folder / "i.safetensors", load_integer,
                      lambda r: all(torch.equal(torch.from_numpy(getattr(r[0], k)), torch.from_numpy(getattr(integer, k)))
                                    for k in ("w1", "b1", "w2", "b2", "w1_scale")), INTEGER_KEY))
    return out


def one(target: Target, rng: random.Random, scratch: Path) -> str:
    kind = rng.choice(("bytes", "header", "crafted") if target.key else ("bytes", "header"))
    if kind == "crafted":
        meta = target.resign(edit_json(target.meta, rng))
        tensorfile.save(scratch, target.tensors, {target.key: json.dumps(meta)})
    else:
        scratch.write_bytes(mutate_bytes(target.blob, rng) if kind == "bytes" else mutate_header(target.blob, rng))
    try:
        result = target.load(scratch)
    except DataError:
        return "DataError"
    except Exception as exc:  # noqa: BLE001 - the point: anything else is a bug
        return f"BUG:{type(exc).__name__}"
    if target.same(result):
        return "ok-identical"
    return "ok-crafted" if kind == "crafted" else "BUG:accepted-modified-file"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="mutated inputs per loader")
    parser.add_argument("--seconds", type=float, default=None, help="time limit per loader")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loaders", nargs="*", default=None, help="subset of tensorfile checkpoint train_state integer")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    bugs = 0
    with tempfile.TemporaryDirectory(prefix="coarsegrad-fuzz-") as tmp:
        folder = Path(tmp)
        for target in targets(folder):
            if args.loaders and target.name not in args.loaders:
                continue
            rng, counts, started = random.Random(f"{args.seed}-{target.name}"), Counter(), time.perf_counter()
            for _ in range(args.n):
                if args.seconds is not None and time.perf_counter() - started > args.seconds:
                    break
                counts[one(target, rng, folder / "mutated.safetensors")] += 1
            bugs += sum(v for k, v in counts.items() if k.startswith("BUG"))
            print(f"{target.name:12s} {sum(counts.values()):7d} inputs in {time.perf_counter() - started:6.1f}s  "
                  + "  ".join(f"{k}={v}" for k, v in sorted(counts.items())), flush=True)
    print(f"{'FAIL' if bugs else 'ok'}: {bugs} BUG outcome(s)")
    return 1 if bugs else 0


if __name__ == "__main__":
    sys.exit(main())
