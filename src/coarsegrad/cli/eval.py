"""``coarsegrad eval``: accuracy, confusion matrix and throughput of a trained or exported model.

    coarsegrad eval RUN_DIR_OR_FILE [--data mnist|synthetic|...] [--engine ...] [--json]

RUN_DIR_OR_FILE: a run directory, a checkpoint, an integer-model file or an ``.onnx``
file. ``--data`` defaults to the dataset the model was trained on (from its run config);
evaluating on another dataset needs ``--data`` and the result says so. ``--engine``
converts a PyTorch model on the fly (``int``, ``int8``, ``onnx``, ``onnx-int8``); the
default runs the file as it is. Throughput is the median over ``--repeats`` timed passes
over the whole set, after one warm-up pass.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np

from coarsegrad.config import DATASETS
from coarsegrad.errors import ConfigError

ENGINES = ("auto", "torch", "int", "int8", "onnx", "onnx-int8")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="accuracy, confusion matrix and throughput of a model")
    p.add_argument("path", metavar="RUN_DIR_OR_FILE", help="run directory, checkpoint, integer or .onnx file")
    p.add_argument("--data", default=None, metavar="|".join(DATASETS),
                   help="the data to evaluate on (default: the dataset the model was trained on)")
    p.add_argument("--split", choices=("train", "test"), default="test", help="image data split (default: test)")
    p.add_argument("--data-dir", default=None, help="folder holding the image data set")
    p.add_argument("--engine", choices=ENGINES, default="auto", help="(default: the file's own)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes (default: 3)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run)


def confusion_matrix(y: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """M[i, j] = #{n : y_n = i, pred_n = j}."""
    return np.bincount(y * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, -1)


def _convert(artifact: Any, engine: str) -> Any:
    from coarsegrad.export.artifacts import Artifact, input_range
    from coarsegrad.export.integer import to_integer

    own = {"torch": "torch", "integer": "int", "onnx": "onnx"}[artifact.kind]
    if engine in ("auto", own):
        return artifact
    if artifact.kind != "torch":
        raise ConfigError("engine", f"--engine {engine} needs a PyTorch model, got a {artifact.kind} file")
    from coarsegrad.models.networks import LeNet5
    from coarsegrad.quant.qlayers import weight_spec_of

    if weight_spec_of(artifact.model) is not None:  # quantized weights: the integer-only form
        if engine not in ("int", "onnx"):
            raise ConfigError("engine", f"--engine {engine} is for float-weight models; a model with quantized "
                              "weights runs as --engine int or onnx (integer-only)")
        from coarsegrad.export.artifacts import scalar_normalization
        from coarsegrad.export.qmodel import to_quantized

        qm = to_quantized(artifact.model, scalar_normalization(artifact.header))
        if engine == "int":
            return Artifact("integer", artifact.path, artifact.header, integer=qm)
        from coarsegrad.export.onnx_graph import onnx_session
        from coarsegrad.export.onnx_qmodel import build_qmodel_onnx

        return Artifact("onnx", artifact.path, artifact.header, session=onnx_session(build_qmodel_onnx(qm)))
    if engine == "onnx" and isinstance(artifact.model, LeNet5):  # no integer form: its own float ONNX graph
        from coarsegrad.export.onnx_graph import onnx_session
        from coarsegrad.export.onnx_lenet import build_lenet_onnx

        return Artifact("onnx", artifact.path, artifact.header, session=onnx_session(build_lenet_onnx(artifact.model)))
    int8 = engine.endswith("int8")
    integer = (to_integer(artifact.model, weights="int8", input_range=input_range(artifact.header))
               if int8 else to_integer(artifact.model))
    if engine.startswith("onnx"):
        from coarsegrad.export.onnx_graph import build_onnx, onnx_session

        return Artifact("onnx", artifact.path, artifact.header, session=onnx_session(build_onnx(integer)))
    return Artifact("integer", artifact.path, artifact.header, integer=integer)


def trained_dataset(header: dict) -> str | None:
    """The dataset named in the model's run config, or None if the file does not record it."""
    run_config = header.get("run_config") or {}
    data = run_config.get("data") if isinstance(run_config, dict) else None
    name = data.get("data") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def run(args: argparse.Namespace) -> int:
    from coarsegrad.export.artifacts import load_artifact, load_eval_data

    if args.repeats < 1:
        raise ConfigError("repeats", f"must be >= 1, got {args.repeats}")
    artifact = _convert(load_artifact(args.path), args.engine)
    trained_on = trained_dataset(artifact.header)
    data = args.data or trained_on
    if data is None:
        raise ConfigError("data", f"{args.path} does not record the dataset it was trained on; name it with --data")
    x, y, description = load_eval_data(artifact.header, data, args.split, args.data_dir)
    if trained_on is None:
        description += " (the model does not record its training dataset)"
    elif data != trained_on:
        description += f" (NOT the dataset the model was trained on: {trained_on})"
    if artifact.in_features is not None and x.shape[1] != artifact.in_features:
        from coarsegrad.errors import DataError

        raise DataError("data", f"{data} has {x.shape[1]} features, the model takes {artifact.in_features}")
    logits = artifact.logits(x)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        artifact.logits(x)
        times.append(time.perf_counter() - start)
    pred = logits.argmax(axis=1)
    classes = int(max(logits.shape[1], y.max() + 1))
    matrix = confusion_matrix(y.astype(np.int64), pred.astype(np.int64), classes)
    result = {
        "path": str(artifact.path), "engine": artifact.kind, "data": description, "trained_on": trained_on,
        "samples": int(len(y)),
        "accuracy": float((pred == y).mean()), "correct": int((pred == y).sum()),
        "confusion_matrix": matrix.tolist(), "samples_per_s": len(y) / statistics.median(times),
        "repeats": args.repeats,
    }
    size = artifact.header.get("deployed_size")
    if isinstance(size, dict) and {"packed_bytes", "float32_bytes"} <= set(size):
        result["deployed_size"] = {"packed_bytes": size["packed_bytes"], "float32_bytes": size["float32_bytes"]}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['path']} [{result['engine']}] on {description}")
    print(f"accuracy {result['accuracy']:.4%} ({result['correct']}/{result['samples']}), "
          f"throughput {result['samples_per_s']:,.0f} samples/s (median of {args.repeats})")
    if "deployed_size" in result:
        size = result["deployed_size"]
        print(f"model size: packed {size['packed_bytes']:,} bytes vs float32 {size['float32_bytes']:,} bytes")
    width = max(5, len(str(int(matrix.max()))))
    print("confusion matrix (rows: true, columns: predicted)")
    print(" " * 4 + "".join(f"{j:>{width + 1}}" for j in range(classes)))
    for i, row in enumerate(matrix):
        print(f"{i:>4}" + "".join(f"{v:>{width + 1}}" for v in row))
    return 0
