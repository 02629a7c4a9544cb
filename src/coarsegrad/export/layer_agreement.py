"""Agreement of PyTorch and onnxruntime for any traced model, counted per quantized layer.

For every QuantReLU call k (a *site* of :mod:`coarsegrad.export.traced`), z_T is
PyTorch's pre-activation (the traced graph run in eval mode, chunk by chunk) and z_O
onnxruntime's ``preact{k}`` (the graph exported ``with_preact=True``). Both are mapped to
codes by the same rule, :func:`coarsegrad.staircase_codes` (the spec's float32
thresholds T_j = fl((j+o)α)). A differing code (n, u) is

* *downstream* if the same sample already has a differing code at an earlier site: its
  layer input differs, so z may differ by more than rounding;
* otherwise *near a threshold* if some T_j lies within tol of z_T, where, for z = BN(layer(a))
  with a Linear/Conv2d layer of fan-in d and the batch-norm folded in the export
  (s = γ/√(var+ε), or 1 without a batch-norm),

      tol = 2(d + 8)·u·(Σ_i |w_i·s|·|a_i| + (|b| + |mean|)·|s| + |β|),   u = 2⁻²⁴,

  the float32 error bound of a length-d dot product in any summation order, on each
  side, plus the fold and the batch-norm steps (the tests check the fold in float64);
  w is the deployed weight Q(w) for a QuantLinear/QuantConv2d;
* *unexplained* otherwise: a bug. A site whose z is not such a layer output gets no tol:
  its differing codes are downstream or unexplained, and each is listed with its distance.

A prediction difference is explained by a code difference in that sample; else it is
listed with the gap between the top two logits (a near tie is a rounding case).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from coarsegrad.export.onnx_graph import run_onnx
from coarsegrad.export.onnx_traced import MODULES
from coarsegrad.export.traced import Site, node_values, norm_affine, sites, trace
from coarsegrad.quant.autograd import staircase_codes
from coarsegrad.quant.qlayers import QUANT_LAYERS

U32 = 2.0 ** -24
LISTED = 1000  # differing codes listed one by one (all are counted)


def classify(rec: dict[str, Any], differ: torch.Tensor, earlier: torch.Tensor, dist: torch.Tensor,
             tol: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class each differing code ([samples, units] bool ``differ``): ``downstream`` when an
    earlier layer of that sample already differed (``earlier`` [samples]), else
    ``near_threshold`` when its pre-activation lies within ``tol`` of a threshold (``dist``),
    else ``unexplained``; add the counts to ``rec``; return the (near, downstream) masks."""
    down = differ & earlier[:, None]
    near = differ & ~down & (dist <= tol)
    rec["code_disagree"] += int(differ.sum())
    rec["near_threshold"] += int(near.sum())
    rec["downstream"] += int(down.sum())
    rec["unexplained"] += int((differ & ~near & ~down).sum())
    return near, down


def rounding_tolerance(site: Site, a: torch.Tensor) -> torch.Tensor | None:
    """tol (module docstring) for every unit of ``site`` given the layer input ``a``; None without a layer."""
    layer, norm = site.layer, site.norm
    if not isinstance(layer, (nn.Linear, nn.Conv2d)):
        return None
    w = (layer.quantized_weight() if isinstance(layer, QUANT_LAYERS) else layer.weight).detach().double()
    b = layer.bias.detach().double().abs() if layer.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    spread = b
    s = torch.ones(w.shape[0], dtype=torch.float64)
    if norm is not None:
        s, mean, beta = norm_affine(norm)
        spread = (b + mean.abs()) * s.abs()
        if beta is not None:
            spread = spread + beta.abs()
    ws = w.abs() * s.abs().reshape(-1, *([1] * (w.dim() - 1)))
    if isinstance(layer, nn.Conv2d):
        bound = F.conv2d(a.double().abs(), ws, None, layer.stride, layer.padding, layer.dilation, layer.groups)
        bound = bound + spread[:, None, None]
    else:
        bound = a.double().abs() @ ws.T + spread
    return 2 * (w[0].numel() + 8) * U32 * bound


def _distance(z: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """|z − nearest T_j| in float64."""
    return (z.double()[..., None] - edges).abs().min(-1).values


@torch.no_grad()
def layer_agreement(model: nn.Module, session: Any, x: np.ndarray | torch.Tensor, input_shape: tuple[int, ...],
                    y: np.ndarray | None = None, chunk: int = 1000) -> dict[str, Any]:
    """Per-site and prediction counts of PyTorch vs onnxruntime on ``x`` (module docstring).

    ``session`` runs the graph of :func:`~coarsegrad.export.onnx_traced.build_traced_onnx`
    (or :func:`~coarsegrad.export.onnx_lenet.build_lenet_onnx`) exported with ``with_preact=True``.
    """
    gm = trace(model, leaves=tuple(MODULES))
    found = sites(gm)
    x = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(len(x), -1)
    layers: list[dict[str, Any]] = [{"site": s.index, "module": s.module, "layer": type(s.layer).__name__ if s.layer is not None else None,
               "batchnorm_folded": s.norm is not None, "codes_total": 0, "code_disagree": 0, "near_threshold": 0,
               "downstream": 0, "unexplained": 0} for s in found]
    listed: list[dict[str, Any]] = []
    preds: list[dict[str, Any]] = []
    pred_t, pred_o = [], []
    for start in range(0, len(x), chunk):
        xb = x[start:start + chunk]
        values = node_values(gm, xb.reshape(len(xb), *input_shape))
        out = run_onnx(session, xb.numpy())
        earlier = torch.zeros(len(xb), dtype=torch.bool)
        for s, rec in zip(found, layers, strict=True):
            z_t, z_o = values[s.preact], torch.from_numpy(out[f"preact{s.index}"])
            differ = (staircase_codes(z_t, s.quant) != staircase_codes(z_o, s.quant)).reshape(len(xb), -1)
            rec["codes_total"] += differ.numel()
            if differ.any():
                edges = torch.tensor(s.quant.thresholds(torch.float32), dtype=torch.float64)
                dist = _distance(z_t, edges).reshape(len(xb), -1)
                tol = rounding_tolerance(s, values[s.layer_input]) if s.layer_input else None
                tol = tol.reshape(len(xb), -1) if tol is not None else torch.full_like(dist, -1.0)
                near, down = classify(rec, differ, earlier, dist, tol)
                for n, u in differ.nonzero().tolist():
                    if len(listed) < LISTED:
                        listed.append({"site": s.index, "sample": start + n, "unit": u,
                                       "z_torch": float(z_t.reshape(len(xb), -1)[n, u]),
                                       "z_onnx": float(z_o.reshape(len(xb), -1)[n, u]),
                                       "distance_to_threshold": float(dist[n, u]),
                                       "tolerance": float(tol[n, u]) if tol[n, u] >= 0 else None,
                                       "class": "near_threshold" if near[n, u] else "downstream" if down[n, u]
                                       else "unexplained"})
                earlier |= differ.any(1)
        logits_t = values[next(n for n in reversed(gm.graph.nodes) if n.op == "output").args[0].name]
        logits_o = torch.from_numpy(out["logits"])
        pt, po = logits_t.argmax(1), logits_o.argmax(1)
        top2 = logits_t.double().topk(2, dim=1).values if logits_t.shape[1] > 1 else None
        for n in (pt != po).nonzero().flatten().tolist():
            gap = float(top2[n, 0] - top2[n, 1]) if top2 is not None else None
            preds.append({"sample": start + n, "torch": int(pt[n]), "onnx": int(po[n]),
                          "has_code_disagree": bool(earlier[n]), "top2_gap_torch": gap})
        pred_t.append(pt)
        pred_o.append(po)
    report: dict[str, Any] = {
        "samples": len(x), "sites": layers,
        "differing_codes": sorted(listed, key=lambda d: (d["sample"], d["site"], d["unit"])),
        "differing_codes_listed": f"first {LISTED}" if sum(r["code_disagree"] for r in layers) > LISTED else "all",
        "pred_disagree": len(preds),
        "pred_disagree_with_code_disagree": sum(p["has_code_disagree"] for p in preds),
        "differing_predictions": preds,
    }
    if y is not None:
        y_t = torch.as_tensor(np.asarray(y))
        report["accuracy"] = {"torch": float((torch.cat(pred_t) == y_t).double().mean()),
                              "onnx": float((torch.cat(pred_o) == y_t).double().mean())}
    return report
