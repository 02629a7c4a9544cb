"""The one implementation of σ's codes and of the STE backward (autograd and fast step).

Forward, for pre-activations h, codes c and the STE factor m:

    c = #{j ∈ 0..L−1 : h > t_j},   t_j = fl((j + o)·α)   (σ(h) = α·c; spec.thresholds)
    m = μ′(h)                                            (the STE's pieces)

Backward is dh = dσ ⊙ m. NaN stays NaN in c (a diverged run still shows a NaN loss).
Three exact paths for c, the first that applies:

* ``count`` for L = 1 (2–3 passes, fewer than ``ceil``'s 3–4), else below;
* ``ceil`` (3–4 passes): c = clip(⌈fl(fl(h/α) − o)⌉, 0, L), when :func:`ceil_is_exact`
  proves it for this (spec, dtype, device) — b = 2 with the default α on the CPU is such
  a case;
* ``count`` (L ≤ 3, or an α outside :func:`kernel_alpha_ok`; L + 1 passes):
  c = Σ_j 1{h > t_j}, the first term NaN-preserving (1{h > 0} = ⌈clip(h, 0, 1)⌉ for
  t_0 = 0, else (clip(h, t_0, t_0⁺) − t_0)/(t_0⁺ − t_0), exact: both are one ulp);
* ``correct`` (10 passes), for any L:

  1. u = clip(h, t_0, t⁺) with t⁺ the float just above t_{L−1}: u > t_j ⇔ h > t_j for
     every j ≤ L−1, and now t_0 ≤ u < t_L.
  2. c₀ = ⌈fl(u/α) − o⌉ ∈ [0, L] is within one of c (|fl(t_j/α) − (j + o)| ≤ 2^{−23}·(j + 1)).
  3. c₁ = c₀ − 1{t_{c₀−1} ≥ u} (never fires at c₀ = 0: t_{−1} = fl((o − 1)α) < t_0 ≤ u);
     c = c₁ + 1{t_{c₁} < u} (never fires at c₁ = L: t_L > u). At most one fires;
     together they take c₀ ∈ {c−1, c, c+1} to c. t_k is made as ``(k + o) * α``, the
     product that defines :meth:`ActQuant.threshold`.

Backward is derived from the STE's pieces (:meth:`STE.unit_interval`), never from its
name: μ′ = 1 everywhere: dh = dσ; μ′ = 1{x > 0}: ``threshold_backward(dσ, h, 0)`` (when
h > 0 is still readable: h kept, or clamped at t_0 = 0); μ′ = 1{0 < x ≤ q}:
``hardtanh_backward(dσ, h, 0, q⁺)`` with q⁺ the float just above q, when h is kept;
otherwise m is kept: a bool mask for indicator STEs (one byte per element), else μ′(h)
(custom STEs: their callable on h). The fused kernels pass dσ for h = NaN where the mask
would not (a NaN pre-activation has a NaN loss anyway). Measured on a 2-core AVX-512
CPU (torch 2.13): fused halves the quantizer's forward + backward against building m as
float in the forward (1.10 vs 2.29 ms at 1024×2048); comparisons that write float are
~4× faster than ones that write bool, and ``x *= mask`` is ~4× faster for a uint8 than
for a bool mask, so the kernels compare into float buffers and read bool masks as uint8.
"""

from __future__ import annotations

import functools
import math

import torch

from coarsegrad.quant.spec import ActQuant
from coarsegrad.quant.ste import STE

BLOCK_ELEMENTS = 1 << 17


def kernel_alpha_ok(quant: ActQuant, dtype: torch.dtype) -> bool:
    """True when α and t_L are normal finite numbers of ``dtype`` (the proof's assumptions)."""
    info = torch.finfo(dtype)
    top = quant.threshold(quant.levels, dtype)
    return info.tiny <= quant.alpha and math.isfinite(top) and top < info.max


def ceil_is_exact(quant: ActQuant, dtype: torch.dtype, device: torch.device | str = "cpu") -> bool:
    """True when clip(⌈fl(fl(h/α) − o)⌉, 0, L) = c(h) for every h of ``dtype`` (NaN included).

    The expression is monotone in h, so it suffices that it is ≤ j at t_j and > j at
    t_j⁺ (the next float up) for every threshold, checked with the same ops on the
    same device (PyTorch's CUDA kernel divides by a CPU scalar as a product with its
    reciprocal), on a length that runs both the vectorised body and the scalar tail."""
    levels, alpha, offset = quant.levels, quant.alpha, quant.offset
    t = torch.tensor(quant.thresholds(dtype), dtype=dtype, device=device)
    up = torch.nextafter(t, torch.tensor(math.inf, dtype=dtype, device=device))
    j = torch.arange(levels, dtype=dtype, device=device)
    reps = 67  # 67·L is no multiple of any vector width: every threshold lands in the tail too
    at, above = (torch.div(v.repeat(reps), alpha).sub_(offset).view(reps, levels) for v in (t, up))
    return bool((at <= j).all() and (above > j).all())


def _backward_mode(ste: STE, keeps_h: bool, keeps_sign: bool) -> str | None:
    """The fused backward kernel for this STE's description, or None (keep m)."""
    unit = ste.unit_interval()
    if unit == (-math.inf, math.inf):
        return "all"
    if unit == (0.0, math.inf) and keeps_sign:
        return "threshold"
    if unit == (0.0, 1.0) and keeps_h:
        return "hardtanh"
    return None


@functools.lru_cache(maxsize=256)
def _plan(quant: ActQuant, dtype: torch.dtype, device: str) -> str:
    if quant.levels == 1 or not kernel_alpha_ok(quant, dtype):
        return "count"
    if ceil_is_exact(quant, dtype, device):
        return "ceil"
    return "count" if quant.levels <= 3 else "correct"


class EagerQuantizer:
    """σ codes and the STE factor of ``quant`` with eager in-place ops, by one of three
    exact paths (module docstring). ``inplace=True`` (the fast step) may clamp h and
    keeps nothing for the fused backward kernels; ``inplace=False`` (autograd,
    :func:`codes`) never writes h, so every fused kernel can read it."""

    def __init__(self, quant: ActQuant, dtype: torch.dtype, device: torch.device | str = "cpu",
                 inplace: bool = True) -> None:
        self.quant, self.alpha, self.offset, self.levels = quant, quant.alpha, quant.offset, quant.levels
        self.path = _plan(quant, dtype, str(torch.device(device)))
        self.inplace = inplace
        self.thresholds = quant.thresholds(dtype)
        lower = self.thresholds[0]
        clamps = inplace and self.path == "correct"
        self.mode = _backward_mode(quant.ste, keeps_h=not clamps, keeps_sign=not clamps or lower == 0.0)
        inf = torch.tensor(math.inf, dtype=dtype)
        self.lower_up = float(torch.nextafter(torch.tensor(lower, dtype=dtype), inf))
        self.top = float(torch.nextafter(torch.tensor(self.thresholds[-1], dtype=dtype), inf))
        # h ≤ q compares h with q rounded to dtype, as the STE's mask does
        self.q_above = float(torch.nextafter(torch.tensor(quant.q_max, dtype=dtype), inf))

    def factor(self, h: torch.Tensor) -> torch.Tensor:
        """m: a bool mask (one byte) for indicator STEs, else μ′(h)."""
        ste, q = self.quant.ste, self.quant.q_max
        return ste.indicator(h, q) if ste.is_indicator else ste.derivative(h, q)

    def forward(self, h: torch.Tensor, codes: torch.Tensor, scratch: torch.Tensor,
                need_factor: bool = True) -> torch.Tensor | None:
        """Write c into ``codes``; return m, or None when :meth:`backward` needs only
        ``h`` (keep it until then) or ``need_factor`` is False. ``h`` is clamped to
        [t_0, t⁺] on the ``correct`` path when ``inplace``; ``scratch`` is a temporary.
        Rows go in blocks of about BLOCK_ELEMENTS on the CPU so later passes hit cache."""
        factor = None if self.mode or not need_factor else self.factor(h)
        if h.dim() == 0:
            h, codes, scratch = h.view(1), codes.view(1), scratch.view(1)
        rows = max(1, h.shape[0])
        if h.device.type == "cpu" and h.dim() > 1:  # a GPU has no such cache to keep: one block
            rows = max(1, BLOCK_ELEMENTS // max(1, math.prod(h.shape[1:])))
        for start in range(0, h.shape[0], rows):
            end = start + rows
            self._forward_block(h[start:end], codes[start:end], scratch[start:end])
        return factor

    def _forward_block(self, h: torch.Tensor, codes: torch.Tensor, scratch: torch.Tensor) -> None:
        alpha, offset, t = self.alpha, self.offset, self.thresholds
        if self.path == "ceil":
            torch.div(h, alpha, out=codes)
            if offset:
                codes.sub_(offset)
            codes.ceil_().clamp_(0.0, float(self.levels))
        elif self.path == "count":
            if t[0] == 0.0:
                torch.clamp(h, 0.0, 1.0, out=codes).ceil_()  # 1{h > 0}, NaN kept
            else:
                # 1{h > t_0}, NaN kept: (clip(h, t_0, t_0⁺) − t_0)/(t_0⁺ − t_0), an ulp over itself
                torch.clamp(h, t[0], self.lower_up, out=codes).sub_(t[0]).div_(self.lower_up - t[0])
            for threshold in t[1:]:
                codes.add_(torch.gt(h, threshold, out=scratch))
        else:
            u = h.clamp_(t[0], self.top) if self.inplace else torch.clamp(h, t[0], self.top)
            torch.div(u, alpha, out=codes)
            if offset:
                codes.sub_(offset)
            codes.ceil_()
            torch.sub(codes, 1.0 - offset, out=scratch).mul_(alpha)  # t_{c₀−1}
            codes.sub_(torch.ge(scratch, u, out=scratch))
            torch.add(codes, offset, out=scratch).mul_(alpha)  # t_{c₁}
            codes.add_(torch.lt(scratch, u, out=scratch))

    def backward(self, grad: torch.Tensor, h: torch.Tensor, factor: torch.Tensor | None,
                 out: torch.Tensor | None = None) -> torch.Tensor:
        """dh = dσ ⊙ m into ``out`` (default: in place in ``grad``; ``grad`` may then be
        any view that broadcasts to h, e.g. a per-class dσ expanded over units, which
        saves writing it out first); ``h`` as :meth:`forward` left it (a bool m is read as
        uint8: same bytes, a faster kernel)."""
        out = grad if out is None else out
        if factor is not None:
            return torch.mul(grad, factor.view(torch.uint8) if factor.dtype == torch.bool else factor, out=out)
        if self.mode == "threshold":  # grad where h > 0, else 0
            torch.ops.aten.threshold_backward.grad_input(grad, h, 0.0, grad_input=out)
        elif self.mode == "hardtanh":  # grad where 0 < h < q⁺, else 0
            torch.ops.aten.hardtanh_backward.grad_input(grad, h, 0.0, self.q_above, grad_input=out)
        elif out is not grad:  # identity: m = 1
            out.copy_(grad)
        return out

    def grad_input(self, grad: torch.Tensor, saved: torch.Tensor) -> torch.Tensor:
        """dh = dσ ⊙ m out of place (autograd): ``saved`` is h for a fused mode, else m."""
        out: torch.Tensor
        if self.mode == "threshold":
            out = torch.ops.aten.threshold_backward(grad, saved, 0.0)
            return out
        if self.mode == "hardtanh":
            out = torch.ops.aten.hardtanh_backward(grad, saved, 0.0, self.q_above)
            return out
        if self.mode == "all":
            return grad.clone()
        return grad * saved


@torch.no_grad()
def codes(x: torch.Tensor, quant: ActQuant) -> torch.Tensor:
    """c(x) ∈ {0..L} as ``x``'s dtype, out of place (the same kernels as the fast step)."""
    kernel = EagerQuantizer(quant, x.dtype, x.device, inplace=False)
    out = torch.empty_like(x)
    kernel.forward(x, out, torch.empty_like(x), need_factor=False)
    return out
