"""The per-step rules of the weight-training methods, applied around the optimizer step.

The forward and the straight-through gradient of each method are in
:mod:`coarsegrad.quant.qlayers`; here is what happens to the latent weights and the
BinaryRelax buffers at each optimizer step t (lr η, plain SGD written out; g the coarse
gradient, computed at the effective weight ŵ_t):

* **BinaryConnect STE** — Courbariaux, Bengio & David, "BinaryConnect: training deep
  neural networks with binary weights during propagations", NeurIPS 2015::

      w_{t+1} = clip(w_t − η·g(Q(w_t)), −clip, clip)

* **BCGD** — Yin, Zhang, Lyu, Osher, Qi & Xin, "Blended coarse gradient descent for full
  quantization of deep neural networks", Res. Math. Sci. 6:14 (2019)::

      w_{t+1} = (1 − ρ)·w_t + ρ·Q(w_t) − η·g(Q(w_t))

  done as: before the step remember d_t = Q(w_t) − w_t; let the optimizer step; then
  w ← w + ρ·d_t. With momentum or Adam the optimizer's own update (built from its
  buffers of past coarse gradients, and its weight decay of w_t) replaces −η·g; the
  blending term ρ·d_t is added outside the optimizer and never enters its buffers.

* **BinaryRelax** — Yin, Zhang, Lyu, Osher, Qi & Xin, "BinaryRelax: a relaxation approach
  for training deep neural networks with quantized weights", SIAM J. Imaging Sci. 11(4)
  (2018)::

      u_{t+1} = u_t − η·∇f(w̃_t),   w̃_t = (λ_t·Q(u_t) + u_t)/(λ_t + 1),   λ_{t+1} = λ_t·growth

  with λ_0 = lam0, so step t's forward uses λ_t = lam0·growth^t; from step
  T = ``hard_step`` on (the hard phase) w̃_t = Q(u_t), λ no longer grows.

One entry point: ``methods = WeightMethods(model, total_steps)``; then per step
``methods.before_step()``, ``optimizer.step()``, ``methods.after_step(t)``. A model
without quantized-weight layers gives an empty (falsy) WeightMethods that does nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from coarsegrad.quant.qlayers import QUANT_LAYERS, QuantConv2d, QuantLinear

QuantLayer = QuantLinear | QuantConv2d


class WeightMethods:
    """The per-step rules (module docstring) of every quantized-weight layer of ``model``.

    ``total_steps`` resolves a fractional ``hard_after`` (BinaryRelax) into a step.
    """

    def __init__(self, model: nn.Module, total_steps: int | None = None) -> None:
        self.layers: list[QuantLayer] = [m for m in model.modules() if isinstance(m, QUANT_LAYERS)]
        self._hard_step = {id(m): m.weight_quant.hard_step(total_steps) for m in self.layers
                           if m.weight_quant.method == "binaryrelax"}
        self._blend: list[tuple[torch.Tensor, torch.Tensor, float]] = []

    def __bool__(self) -> bool:
        return bool(self.layers)

    @torch.no_grad()
    def before_step(self) -> None:
        """Remember d_t = Q(w_t) − w_t of every BCGD layer (call before optimizer.step())."""
        self._blend = [(m.weight, m.blend_projection() - m.weight, m.weight_quant.rho)
                       for m in self.layers if m.weight_quant.method == "bcgd"]

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Apply the rules of step ``step`` (0-based) after optimizer.step(): the BCGD blend
        w += ρ·d_t, the BinaryConnect clip, λ_{t+1} = λ_t·growth and the switch to the hard
        phase before step T = hard_step."""
        for weight, delta, rho in self._blend:
            weight.add_(delta, alpha=rho)
        self._blend = []
        for m in self.layers:
            spec = m.weight_quant
            if spec.method == "ste" and spec.clip is not None:
                m.weight.clamp_(-spec.clip, spec.clip)
            elif spec.method == "binaryrelax":
                hard = self._hard_step[id(m)]
                if hard is not None and step + 1 >= hard:
                    m.relax_hard.fill_(True)
                else:
                    m.relax_lambda.mul_(spec.lam_growth)
