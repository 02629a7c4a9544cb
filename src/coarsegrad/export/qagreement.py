"""Agreement of a fully quantized PyTorch model, its integer-only form and its ONNX graph, per layer.

Three implementations run the same inputs: PyTorch (float32, eval mode, deployed weights
Q(w)), the NumPy engine of :mod:`coarsegrad.export.qmodel` (exact integer accumulators,
integer thresholds) and onnxruntime (:mod:`coarsegrad.export.onnx_qmodel`). For hidden layer
k, PyTorch's codes are ``staircase_codes(z_T)`` of its pre-activation z_T (before any pool).

* **ONNX vs engine** must agree bit for bit: codes of every layer, and logits (float32
  equality). Every difference is counted (0 expected).
* **PyTorch vs engine**: the engine computes z exactly (up to float64 rounding of the fold),
  PyTorch in float32. A differing code (n, u) at layer k is *downstream* if sample n already
  has a differing code at an earlier layer; otherwise *near a threshold* if some t_j lies
  within tol of z_T, where tol is :func:`coarsegrad.export.layer_agreement.rounding_tolerance`
  (2(d + 8)·u·(Σ|w'||a| + …), u = 2⁻²⁴, with w' = Q(w) and the batch-norm folded) plus, for the
  first layer, Σ_i |w'_i|·|x_i − x*_i|: the measured float32 error of PyTorch's normalised input
  x against x* = (p/255 − μ)/σ in float64; *unexplained* otherwise (a bug).
* ``units_near_threshold`` counts every unit (differing or not) whose z_T lies within tol of
  a threshold: the codes that float32 rounding could have moved.
* A differing prediction is explained by a code difference in that sample, or else by a
  near tie: engine's top-two logit gap ≤ the last layer's tol of both classes plus the
  engine's two float32 roundings, 4u·(|o₁| + |o₂|). Otherwise it is unexplained.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from coarsegrad.export.layer_agreement import classify, rounding_tolerance
from coarsegrad.export.qmodel import QuantizedModel, _stages
from coarsegrad.export.traced import Site
from coarsegrad.quant.autograd import QuantReLU, staircase_codes

U32 = 2.0 ** -24
LISTED = 1000


@torch.no_grad()
def _torch_pass(model: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """(layer inputs a_k, pre-activations z_k of the hidden layers, logits) of one eval forward."""
    stages = _stages(model)
    inputs: list[torch.Tensor] = []
    preacts: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda _m, i, _o: inputs.append(i[0].detach())) for layer, *_ in stages]
    hooks += [act.register_forward_hook(lambda _m, i, _o: preacts.append(i[0].detach()))
              for _, _, act, _ in stages if act is not None]
    was_training = model.training
    model.eval()
    try:
        logits = model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return inputs, preacts, logits


def _input_error(qm: QuantizedModel, x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """Σ_i |w'_i|·|x_i − x*_i| for the first layer (module docstring), per unit."""
    p = torch.from_numpy(qm.pixels(x.numpy())).double()
    exact = (p / 255.0 - qm.mean) / qm.std
    err = (x.double().reshape(exact.shape) - exact).abs()
    w = layer.quantized_weight().double().abs()  # type: ignore[operator]
    if w.dim() == 4:
        return F.conv2d(err, w)
    return err.reshape(len(err), -1) @ w.T


def qmodel_agreement(model: nn.Module, qm: QuantizedModel, x: np.ndarray | torch.Tensor, y: np.ndarray | None = None,
                     session: Any = None, chunk: int = 1000) -> dict[str, Any]:
    """Counts and lists of the module docstring on inputs ``x`` (normalised float32 [N, d])."""
    from coarsegrad.export.onnx_graph import run_onnx

    stages = _stages(model)
    x_all = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(len(x), -1)
    hidden = [(i, s) for i, s in enumerate(stages[:-1])]
    layers: list[dict[str, Any]] = [{"layer": i + 1, "module": type(s[0]).__name__, "codes_total": 0, "code_disagree": 0,
               "near_threshold": 0, "downstream": 0, "unexplained": 0, "onnx_vs_engine_code_disagree": 0,
                                     "units_near_threshold": 0}
              for i, s in hidden]
    listed: list[dict[str, Any]] = []
    preds: list[dict[str, Any]] = []
    onnx_logits_differ = onnx_pred_differ = 0
    pred_t, pred_e, pred_o = [], [], []
    for start in range(0, len(x_all), chunk):
        xb = x_all[start:start + chunk]
        inputs, preacts, logits_t = _torch_pass(model, xb)
        logits_e, codes_e = qm.forward(xb.numpy())
        out = run_onnx(session, xb.numpy()) if session is not None else None
        earlier = torch.zeros(len(xb), dtype=torch.bool)
        for (i, (layer, norm, act, _)), rec in zip(hidden, layers, strict=True):
            assert isinstance(act, QuantReLU)  # hidden layers end in one
            z_t = preacts[i]
            c_t = staircase_codes(z_t, act.quant).to(torch.uint8).numpy()
            c_e = codes_e[i]
            if out is not None:
                rec["onnx_vs_engine_code_disagree"] += int((out[f"codes{i + 1}"] != c_e).sum())
            differ = torch.from_numpy((c_t != c_e).reshape(len(xb), -1))
            rec["codes_total"] += differ.numel()
            site = Site(i + 1, "", "", act.quant, "", layer, norm, "")
            tol = rounding_tolerance(site, inputs[i])
            assert tol is not None  # the layer is a Linear/Conv2d
            if i == 0:
                tol = tol + _input_error(qm, xb, layer) * (1 + 2.0 ** -20)
            tol = tol.reshape(len(xb), -1)
            edges = torch.tensor(act.quant.thresholds(torch.float32), dtype=torch.float64)
            zf = z_t.double().reshape(len(xb), -1)
            dist = (zf[..., None] - edges).abs().min(-1).values
            rec["units_near_threshold"] += int((dist <= tol).sum())
            if differ.any():
                near, down = classify(rec, differ, earlier, dist, tol)
                for n, u in differ.nonzero().tolist():
                    if len(listed) < LISTED:
                        listed.append({"layer": i + 1, "sample": start + n, "unit": u, "z_torch": float(zf[n, u]),
                                       "code_torch": int(c_t.reshape(len(xb), -1)[n, u]),
                                       "code_engine": int(c_e.reshape(len(xb), -1)[n, u]),
                                       "distance_to_threshold": float(dist[n, u]), "tolerance": float(tol[n, u]),
                                       "class": "near_threshold" if near[n, u] else "downstream" if down[n, u] else "unexplained"})
                earlier |= differ.any(1)
        last = Site(len(stages), "", "", hidden[-1][1][2].quant if hidden else None, "", stages[-1][0])  # type: ignore[union-attr,arg-type]
        tol_logit = rounding_tolerance(last, inputs[-1])
        assert tol_logit is not None
        pt, pe = logits_t.numpy().argmax(1), logits_e.argmax(1)
        top2 = np.argsort(-logits_e.astype(np.float64), axis=1, kind="stable")[:, :2]
        rows = np.arange(len(xb))
        o1, o2 = logits_e[rows, top2[:, 0]].astype(np.float64), logits_e[rows, top2[:, 1]].astype(np.float64)
        tol2 = tol_logit.numpy()[rows, top2[:, 0]] + tol_logit.numpy()[rows, top2[:, 1]] + 4 * U32 * (np.abs(o1) + np.abs(o2))
        for n in np.nonzero(pt != pe)[0].tolist():
            gap = float(o1[n] - o2[n])
            cls = "code_disagree" if earlier[n] else "near_tie" if gap <= tol2[n] else "unexplained"
            preds.append({"sample": start + n, "torch": int(pt[n]), "engine": int(pe[n]), "class": cls,
                          "top2_gap_engine": gap, "tie_tolerance": float(tol2[n])})
        if out is not None:
            onnx_logits_differ += int((out["logits"] != logits_e).any(axis=1).sum())
            onnx_pred_differ += int((out["logits"].argmax(1) != pe).sum())
            pred_o.append(out["logits"].argmax(1))
        pred_t.append(pt)
        pred_e.append(pe)
    report: dict[str, Any] = {
        "samples": int(len(x_all)), "layers": layers,
        "differing_codes": listed,
        "differing_codes_listed": f"first {LISTED}" if sum(r["code_disagree"] for r in layers) > LISTED else "all",
        "torch_vs_engine_pred_disagree": len(preds),
        "torch_vs_engine_pred_unexplained": sum(p["class"] == "unexplained" for p in preds),
        "differing_predictions": preds,
    }
    if session is not None:
        report["onnx_vs_engine"] = {"samples_with_logits_not_bitwise_equal": onnx_logits_differ,
                                    "pred_disagree": onnx_pred_differ,
                                    "code_disagree": sum(r["onnx_vs_engine_code_disagree"] for r in layers)}
    if y is not None:
        yy = np.asarray(y)
        report["accuracy"] = {"torch": float((np.concatenate(pred_t) == yy).mean()),
                              "engine": float((np.concatenate(pred_e) == yy).mean())}
        if pred_o:
            report["accuracy"]["onnx"] = float((np.concatenate(pred_o) == yy).mean())
    return report
