"""Does the exported network compute what the trained one does? Counted, not assumed.

Three implementations of the same network are compared on the same inputs: the
PyTorch model (training code path), the NumPy integer engine and onnxruntime. For two
of them, A and B:

* ``code_disagree`` = #{(n, h) : c_A[n, h] ≠ c_B[n, h]} out of N·H codes.
* A code disagreement is *near a threshold* if the engine's pre-activation z lies
  within ``tol`` of some step edge (``IntegerModel.edges``: T_j = fl32(jα); for int8
  models the integers j, z then being in units of α), where
  tol[n, h] = (d + 4)·u·(Σ_i |W₁[h, i]·x[n, i]| + |b₁[h]|), u = 2⁻²⁴,
  the worst-case float32 error of a length-d dot product (any summation order) plus
  the batch-norm fold (int8: 4·u·(|scale·acc| + |b₁|), the float steps after the exact
  integer sum). Disagreements that are *not* near a threshold indicate a bug. Between
  the float model and an int8 model codes also differ by quantization; there only the
  raw counts are reported.
* ``pred_disagree`` = #{n : argmax o_A ≠ argmax o_B}; explained if that sample has a
  code disagreement, or the engine's top-two logits are within rounding of each other
  (exact ties happen with V fixed to a block of ones).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from coarsegrad.export.integer import IntegerModel
from coarsegrad.quant.autograd import staircase_codes

U32 = 2.0 ** -24


@dataclass(frozen=True)
class Outputs:
    """Pre-activations z [N, H] float32, codes c [N, H] uint8 and logits o [N, K] of one implementation."""

    preact: np.ndarray
    codes: np.ndarray
    logits: np.ndarray

    @property
    def pred(self) -> np.ndarray:
        return self.logits.argmax(axis=1)


@torch.no_grad()
def torch_outputs(model: nn.Module, x: np.ndarray | torch.Tensor) -> Outputs:
    """Run ``model`` in eval mode; z is the input of ``model.act``, c = staircase_codes(z)."""
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x
    seen: list[torch.Tensor] = []
    hook = model.act.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].detach()))
    was_training = model.training
    model.eval()
    try:
        logits = model(xt)
    finally:
        hook.remove()
        model.train(was_training)
    z = seen[0]
    codes = staircase_codes(z, model.act.quant)
    return Outputs(z.numpy(), codes.numpy().astype(np.uint8), logits.numpy())


def engine_outputs(integer: IntegerModel, x: np.ndarray) -> Outputs:
    """The NumPy integer engine's z, c and o."""
    z = integer.preactivations(x)
    codes = np.searchsorted(integer.edges, z, side="left").astype(np.uint8)
    return Outputs(z, codes, integer.logits_from_codes(codes))


def onnx_outputs(session: object, x: np.ndarray) -> Outputs:
    """onnxruntime's z, c and o (the graph must be exported ``with_codes=True``)."""
    from coarsegrad.export.onnx_graph import run_onnx

    out = run_onnx(session, x)
    return Outputs(out["preact"], out["codes"], out["logits"])


def rounding_tolerance(integer: IntegerModel, x: np.ndarray) -> np.ndarray:
    """tol [N, H] (module docstring); for int8 models the float32 scale-and-add after the exact sum."""
    if integer.int8:
        p = integer.quantize_input(x).astype(np.float64)
        magnitude = np.abs(p @ integer.w1.T.astype(np.float64) * integer.w1_scale.astype(np.float64))
        return 4 * U32 * (magnitude + np.abs(integer.b1.astype(np.float64)))
    xf = np.abs(np.asarray(x, dtype=np.float64).reshape(len(x), -1))
    magnitude = xf @ np.abs(integer.w1.T.astype(np.float64)) + np.abs(integer.b1.astype(np.float64))
    return (integer.in_features + 4) * U32 * magnitude


def near_threshold(integer: IntegerModel, z: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """Boolean [N, H]: some step edge T_j lies within ``tol`` of ``z``."""
    edges = integer.edges.astype(np.float64)
    z = z.astype(np.float64)
    idx = np.searchsorted(edges, z)  # edges[idx − 1] < z ≤ edges[idx]: the two nearest edges
    last = len(edges) - 1
    below, above = edges[np.clip(idx - 1, 0, last)], edges[np.clip(idx, 0, last)]
    return np.minimum(np.abs(z - below), np.abs(z - above)) <= tol


def compare(a: Outputs, b: Outputs, engine: Outputs, near: np.ndarray, tie_tol: np.ndarray,
            rounding_only: bool = True) -> dict[str, int]:
    """Disagreement counts between ``a`` and ``b`` (see the module docstring).

    ``rounding_only=False`` (A and B differ by int8 quantization, not only by rounding)
    leaves out the near-threshold / unexplained split, which then has no meaning.
    """
    diff = a.codes != b.codes
    pred_diff = a.pred != b.pred
    sample_has_code_diff = diff.any(axis=1)
    top2 = np.sort(engine.logits, axis=1)[:, -2:] if engine.logits.shape[1] > 1 else np.zeros((len(diff), 2))
    near_tie = (top2[:, 1] - top2[:, 0]) <= tie_tol
    explained_pred = sample_has_code_diff | near_tie
    if not rounding_only:
        return {"code_disagree": int(diff.sum()), "pred_disagree": int(pred_diff.sum()),
                "pred_disagree_with_code_disagree": int((pred_diff & sample_has_code_diff).sum())}
    return {
        "code_disagree": int(diff.sum()),
        "code_disagree_near_threshold": int((diff & near).sum()),
        "code_disagree_unexplained": int((diff & ~near).sum()),
        "pred_disagree": int(pred_diff.sum()),
        "pred_disagree_with_code_disagree": int((pred_diff & sample_has_code_diff).sum()),
        "pred_disagree_near_tie": int((pred_diff & near_tie & ~sample_has_code_diff).sum()),
        "pred_disagree_unexplained": int((pred_diff & ~explained_pred).sum()),
    }


def logit_tolerance(integer: IntegerModel, codes: np.ndarray) -> np.ndarray:
    """Rounding bound on a difference of two logits: 2·(H + 4)·u·max_k Σ_h |αV[k, h]|·c_h + |b₂|."""
    magnitude = codes.astype(np.float64) @ np.abs(integer.w2.T.astype(np.float64)) + np.abs(integer.b2)
    return 2 * (integer.hidden + 4) * U32 * magnitude.max(axis=1)


def agreement(
    model: nn.Module,
    integer: IntegerModel,
    x: np.ndarray,
    y: np.ndarray | None = None,
    session: object | None = None,
) -> dict[str, object]:
    """Counts for torch–engine, and with an ONNX ``session`` onnx–engine and torch–onnx.

    ``integer`` may be int8: then torch–engine counts measure quantization, not rounding.
    """
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    ref = torch_outputs(model, x)
    eng = engine_outputs(integer, x)
    near = near_threshold(integer, eng.preact, rounding_tolerance(integer, x))
    tie = logit_tolerance(integer, eng.codes)
    report: dict[str, object] = {
        "samples": int(x.shape[0]), "hidden": integer.hidden, "codes_total": int(eng.codes.size),
        "weights": "int8" if integer.int8 else "float32", "bits": integer.bits, "alpha": integer.alpha, "rounding": integer.rounding,
        "units_near_threshold": int(near.sum()),
        "torch_vs_engine": compare(ref, eng, eng, near, tie, rounding_only=not integer.int8),
    }
    if session is not None:
        ort = onnx_outputs(session, x)
        report["onnx_vs_engine"] = compare(ort, eng, eng, near, tie)
        report["torch_vs_onnx"] = compare(ref, ort, eng, near, tie, rounding_only=not integer.int8)
    if y is not None:
        y = np.asarray(y)
        report["accuracy"] = {"torch": float((ref.pred == y).mean()), "engine": float((eng.pred == y).mean())}
        if session is not None:
            report["accuracy"]["onnx"] = float((ort.pred == y).mean())
    return report
