"""``coarsegrad export``: a trained run as ONNX or as an integer-model file.

    coarsegrad export RUN_DIR --format onnx|int [--int8] [--out PATH]

RUN_DIR is what ``coarsegrad train`` writes (or a checkpoint file). ``--int8`` also
quantizes the first layer's weights (int8) and inputs (uint8 on the data's range).
A run with quantized weights (MLP or LeNet-5) is exported integer-only
(:mod:`coarsegrad.export.qmodel`): ``--format int`` writes the packed file
``model.qint.safetensors``, ``--format onnx`` the graph of :mod:`coarsegrad.export.onnx_qmodel`;
the line printed gives the packed size against the float32 size.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from coarsegrad.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained run as ONNX or integer form")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory or checkpoint file")
    p.add_argument("--format", choices=("onnx", "int"), default="onnx", help="(default: onnx)")
    p.add_argument("--int8", action="store_true", help="int8 first-layer weights, uint8 inputs")
    p.add_argument("--input-range", nargs=2, type=float, metavar=("LO", "HI"), default=None,
                   help="input range for --int8 (default: from the run's data)")
    p.add_argument("--with-codes", action="store_true", help="ONNX: also output codes and pre-activations")
    p.add_argument("--out", default=None, help="output file (default: next to the model)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from coarsegrad.export.artifacts import HEADER_PROP, input_range, load_artifact, resolve_model_file
    from coarsegrad.export.integer import to_integer

    artifact = load_artifact(args.run_dir)
    if artifact.kind != "torch":
        raise ConfigError("RUN_DIR", f"{artifact.path} is already exported ({artifact.kind}); "
                          "give a run directory or checkpoint")
    header = {k: v for k, v in artifact.header.items() if k != "tensors"}
    assert artifact.model is not None  # a "torch" artifact holds its model
    from coarsegrad.quant.qlayers import weight_spec_of

    if weight_spec_of(artifact.model) is not None:
        return _export_quantized(args, artifact, header)
    if header.get("architecture") == "lenet5":
        return _export_lenet(args, artifact, header)
    if args.int8:
        lo_hi = tuple(args.input_range) if args.input_range else input_range(header)
        integer = to_integer(artifact.model, weights="int8", input_range=lo_hi)
    else:
        integer = to_integer(artifact.model)
    suffix = "-int8" if args.int8 else ""
    base = resolve_model_file(args.run_dir).parent
    if args.format == "onnx":
        from coarsegrad.export.onnx_graph import build_onnx
        from coarsegrad.io.records import atomic_write_bytes

        out = Path(args.out) if args.out else base / f"model{suffix}.onnx"
        proto = build_onnx(integer, with_codes=args.with_codes)
        entry = proto.metadata_props.add()
        entry.key, entry.value = HEADER_PROP, json.dumps(header, sort_keys=True)
        atomic_write_bytes(out, proto.SerializeToString())
    else:
        from coarsegrad.export.integer_io import save_integer

        out = save_integer(Path(args.out) if args.out else base / f"model{suffix}.int.safetensors",
                           integer, header)
    weights = "int8 (uint8 inputs)" if integer.int8 else "float32"
    print(f"{out}: {args.format}, {integer.source} {integer.in_features}-{integer.hidden}-"
          f"{integer.num_classes}, {integer.bits}-bit codes, first layer {weights}, "
          f"{out.stat().st_size} bytes")
    return 0


def _export_lenet(args: argparse.Namespace, artifact: Any, header: dict[str, Any]) -> int:
    """LeNet-5: ONNX only (batch-norm folded); the integer engine covers the two-layer models."""
    if args.format != "onnx" or args.int8:
        raise ConfigError("format", "the integer engine (--format int, --int8) supports the two-layer "
                          "models (two_layer, mlp) only; export lenet5 with --format onnx")
    from coarsegrad.export.artifacts import HEADER_PROP, resolve_model_file
    from coarsegrad.export.onnx_lenet import build_lenet_onnx
    from coarsegrad.io.records import atomic_write_bytes

    out = Path(args.out) if args.out else resolve_model_file(args.run_dir).parent / "model.onnx"
    proto = build_lenet_onnx(artifact.model, with_preact=args.with_codes)
    entry = proto.metadata_props.add()
    entry.key, entry.value = HEADER_PROP, json.dumps(header, sort_keys=True)
    atomic_write_bytes(out, proto.SerializeToString())
    quant = artifact.model.features[2].quant
    print(f"{out}: onnx, lenet5 (batch-norm folded), {quant.bits}-bit codes, float32 weights, "
          f"{out.stat().st_size} bytes")
    return 0


def _export_quantized(args: argparse.Namespace, artifact: Any, header: dict[str, Any]) -> int:
    """A fully quantized MLP/LeNet-5: the packed integer-only file or its ONNX graph."""
    if args.int8:
        raise ConfigError("int8", "is for float-weight models; a model with quantized weights is exported "
                          "integer-only without it")
    from coarsegrad.export.artifacts import HEADER_PROP, resolve_model_file, scalar_normalization
    from coarsegrad.export.qmodel import float32_bytes, to_quantized
    from coarsegrad.export.qmodel_io import packed_bytes, save_quantized
    from coarsegrad.io.records import atomic_write_bytes

    qm = to_quantized(artifact.model, scalar_normalization(header))
    packed = packed_bytes(qm)
    full = float32_bytes(artifact.model)
    header = {**header, "deployed_size": {"packed_bytes": packed, "float32_bytes": full}}
    base = resolve_model_file(args.run_dir).parent
    if args.format == "onnx":
        from coarsegrad.export.onnx_qmodel import build_qmodel_onnx

        out = Path(args.out) if args.out else base / "model.qint.onnx"
        proto = build_qmodel_onnx(qm, with_codes=args.with_codes)
        entry = proto.metadata_props.add()
        entry.key, entry.value = HEADER_PROP, json.dumps(header, sort_keys=True)
        atomic_write_bytes(out, proto.SerializeToString())
    else:
        out = save_quantized(Path(args.out) if args.out else base / "model.qint.safetensors", qm, header)
    kinds = ", ".join(sorted({f"{layer.weight_kind} {layer.weight_bits}-bit" for layer in qm.layers}))
    print(f"{out}: {args.format}, {qm.architecture} integer-only ({len(qm.layers)} layers, {kinds} weights), "
          f"{out.stat().st_size} bytes on disk; packed tensors {packed} bytes vs float32 {full} bytes "
          f"({full / packed:.1f}x smaller)")
    return 0
