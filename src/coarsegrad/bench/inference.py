"""Inference throughput, side by side in one process: PyTorch fp32, ONNX fp32, ONNX int8.

Each variant maps the whole input set x [N, d] to logits in one call. After ``warmup``
untimed calls, the variants are timed round-robin (variant order rotated every round,
so load from other processes spreads over all of them) ``repeats`` times each;
throughput = N / median seconds. Accuracy comes from the warm-up call's logits.

Variants:

* ``torch_fp32``   — the trained module's own forward (``torch.inference_mode``).
* ``onnx_fp32``    — :func:`to_onnx` graph, float32 first layer, exact codes.
* ``onnx_int8``    — :func:`to_onnx` of ``to_integer(model, weights="int8")``: uint8 input
  (QuantizeLinear) × int8 weights (MatMulInteger), then integer thresholds.
* ``torch_int8_dynamic`` (optional) — ``torch.ao.quantization.quantize_dynamic`` on the
  Linear layers (per-batch dynamic uint8 activations, int8 weights; FBGEMM kernels).
"""

from __future__ import annotations

import statistics
import time
import warnings
from typing import Callable

import numpy as np
import torch
from torch import nn

from coarsegrad.export.integer import to_integer
from coarsegrad.export.onnx_graph import build_onnx, onnx_session
from coarsegrad.export.packing import packed_size


def _torch_runner(model: nn.Module, x: np.ndarray) -> Callable[[], np.ndarray]:
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def run() -> np.ndarray:
        with torch.inference_mode():
            return model(xt).numpy()
    return run


def _onnx_runner(session: object, x: np.ndarray) -> Callable[[], np.ndarray]:
    feed = {"x": np.ascontiguousarray(x, dtype=np.float32)}
    return lambda: session.run(["logits"], feed)[0]  # type: ignore[attr-defined]


def _torch_dynamic(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def activation_memory(samples: int, hidden: int, bits: int) -> dict[str, int]:
    """Bytes to hold the hidden activations of ``samples`` inputs: float32, uint8 codes, packed."""
    n = samples * hidden
    return {"float32": 4 * n, "uint8_codes": n, "packed_codes": packed_size(n, bits)}


def inference_benchmark(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    input_range: tuple[float, float],
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    torch_dynamic: bool = True,
) -> dict[str, object]:
    """Throughput (samples/s) and accuracy of each variant on (x, y); see the module docstring.

    ``threads``: onnxruntime intra-op threads (None = ``torch.get_num_threads()``, so both
    runtimes use the same number; this function does not change torch's setting).
    """
    model = model.eval()
    threads = torch.get_num_threads() if threads is None else threads
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
    float_form = to_integer(model)
    int8_form = to_integer(model, weights="int8", input_range=input_range)
    runners: dict[str, Callable[[], np.ndarray]] = {
        "torch_fp32": _torch_runner(model, x),
        "onnx_fp32": _onnx_runner(onnx_session(build_onnx(float_form), threads), x),
        "onnx_int8": _onnx_runner(onnx_session(build_onnx(int8_form), threads), x),
    }
    if torch_dynamic:
        runners["torch_int8_dynamic"] = _torch_runner(_torch_dynamic(model), x)
    logits = {name: run() for name, run in runners.items()}
    for _ in range(warmup - 1):
        for run in runners.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - start)
    n = x.shape[0]
    result: dict[str, object] = {
        "samples": n, "in_features": float_form.in_features, "hidden": float_form.hidden,
        "bits": float_form.bits, "threads": threads, "repeats": repeats, "warmup": warmup,
        "activation_bytes": activation_memory(n, float_form.hidden, float_form.bits),
    }
    reference = logits["torch_fp32"].argmax(1)
    for name in runners:
        pred = logits[name].argmax(1)
        entry: dict[str, object] = {
            "samples_per_s": n / statistics.median(times[name]),
            "seconds": times[name],
            "pred_agree_with_torch_fp32": int((pred == reference).sum()),
        }
        if y is not None:
            entry["accuracy"] = float((pred == np.asarray(y)).mean())
        result[name] = entry
    base = result["torch_fp32"]["samples_per_s"]  # type: ignore[index]
    onnx_base = result["onnx_fp32"]["samples_per_s"]  # type: ignore[index]
    int8 = result["onnx_int8"]["samples_per_s"]  # type: ignore[index]
    result["speedup_onnx_int8_vs_torch_fp32"] = int8 / base
    result["speedup_onnx_int8_vs_onnx_fp32"] = int8 / onnx_base
    return result
