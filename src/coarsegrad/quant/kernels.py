"""In-place quantizer kernels for the fast training step (:mod:`coarsegrad.training.fast`).

Forward, for pre-activations h, codes c and the STE factor m:

    c = #{j ∈ 0..L−1 : h > t_j},   t_j = fl(j·α)          (σ(h) = α·c)
    m = μ′(h)      (clipped ReLU: 1{0 < h ≤ q}; relu: 1{h > 0}; identity: 1)

Backward is dh = dσ ⊙ m. ``c`` equals :func:`~coarsegrad.quant.staircase.staircase_codes`
bit for bit (the same thresholds fl(jα), made by the same ``code * alpha`` product),
so σ(fl(kα)) = fl(kα), and NaN stays NaN (a diverged run still shows a NaN loss).
Three exact paths, the first that applies:

* ``ceil`` (3 passes): c = clip(⌈fl(h/α)⌉, 0, L), when :func:`ceil_is_exact` proves it
  for this (b, α, dtype, device) — b = 2 with the default α on the CPU is such a case;
* ``count`` (L ≤ 3, 2L passes): c = Σ_j 1{h > t_j}, with 1{h > 0} = ⌈clip(h, 0, 1)⌉;
* ``correct`` (10 passes), for any L:

  1. u = clip(h, 0, t⁺) with t⁺ the float just above t_{L−1}: u > t_j ⇔ h > t_j for
     every j ≤ L−1, and now 0 ≤ u < t_L.
  2. c₀ = ⌈u/α⌉ ∈ [0, L] is within one of c (|fl(t_j/α) − j| ≤ 2^{−23}·j).
  3. c₁ = c₀ − 1{t_{c₀−1} ≥ u} (never fires at c₀ = 0: t_{−1} = −α < u);
     c = c₁ + 1{t_{c₁} < u} (never fires at c₁ = L: t_L > u). At most one of the two
     fires, and together they take c₀ ∈ {c−1, c, c+1} to c.

Backward for the built-in indicator STEs is one fused PyTorch kernel reading the kept
h: relu, dh = dσ·1{h > 0} = ``threshold_backward(dσ, h, 0)``; clipped_relu (when the
forward path keeps h), dh = dσ·1{0 < h < q⁺} = ``hardtanh_backward(dσ, h, 0, q⁺)`` with
q⁺ the float just above q, so h = q passes as μ′ says. Measured on a 2-core AVX-512
CPU (torch 2.13): that halves the quantizer's forward + backward against building m
as float in the forward (1.10 vs 2.29 ms at 1024×2048); comparisons that write float
are ~4× faster than ones that write bool, and ``x *= mask`` is ~4× faster for a uint8
than for a bool mask, so the kernels compare into float buffers and read bool masks
as uint8. A ``torch.compile``-fused forward (one pass, float codes + uint8 mask) was not
faster end to end on that CPU and costs seconds of compilation, so it is not used.
"""

from __future__ import annotations

import math

import torch

from coarsegrad.quant.staircase import num_levels
from coarsegrad.quant.ste import BUILTIN_STES, STE

BLOCK_ELEMENTS = 1 << 17


def _threshold(k: int, alpha: float, dtype: torch.dtype) -> float:
    """t_k = fl(k·α), computed by the same op as ``staircase_codes`` (``code * alpha``)."""
    return float(torch.tensor([float(k)], dtype=dtype) * alpha)


def kernel_alpha_ok(bits: int, alpha: float, dtype: torch.dtype) -> bool:
    """True when α and t_L are normal finite numbers of ``dtype`` (the proof's assumptions)."""
    info = torch.finfo(dtype)
    top = _threshold(num_levels(bits), alpha, dtype)
    return info.tiny <= alpha and math.isfinite(top) and top < info.max


def ceil_is_exact(bits: int, alpha: float, dtype: torch.dtype, device: torch.device | str = "cpu") -> bool:
    """True when clip(⌈fl(h/α)⌉, 0, L) = c(h) for every h of ``dtype`` (NaN included).

    fl(h/α) is monotone in h, so it suffices that fl(t_j/α) ≤ j and fl(t_j⁺/α) > j at
    every threshold (t⁺: the next float up), checked with the same division op on the
    same device (PyTorch's CUDA kernel divides by a CPU scalar as a product with its
    reciprocal), on a length that runs both the vectorised body and the scalar tail."""
    levels = num_levels(bits)
    t = torch.tensor([_threshold(j, alpha, dtype) for j in range(levels)], dtype=dtype, device=device)
    up = torch.nextafter(t, torch.tensor(math.inf, dtype=dtype, device=device))
    j = torch.arange(levels, dtype=dtype, device=device)
    reps = 67  # 67·L is no multiple of any vector width: every threshold lands in the tail too
    at, above = (torch.div(v.repeat(reps), alpha).view(reps, levels) for v in (t, up))
    return bool((at <= j).all() and (above > j).all())


def _backward_mode(ste: STE, keeps_h: bool) -> str | None:
    """How the built-in indicator STEs apply m in one fused kernel (None: keep a mask).

    identity: m = 1; relu: ``threshold_backward`` on h (h > 0 survives the ``correct``
    path's clamp); clipped_relu: ``hardtanh_backward`` on h, when the forward path keeps h."""
    if BUILTIN_STES.get(ste.name) is not ste:
        return None
    return {"identity": "all", "relu": "threshold"}.get(ste.name) or (
        "hardtanh" if ste.name == "clipped_relu" and keeps_h else None)


class EagerQuantizer:
    """σ codes and the STE factor with eager in-place ops, by one of three exact paths
    (module docstring): ``ceil`` (3 passes, when :func:`ceil_is_exact`), ``count``
    (L ≤ 3) or ``correct``. Comparisons write float (PyTorch's bool-producing CPU
    kernels are several times slower). The built-in indicator STEs keep nothing: their
    backward is one fused kernel on the kept pre-activation h; other indicator STEs
    keep a bool mask (one byte per element), the rest μ′(h)."""

    def __init__(self, bits: int, alpha: float, ste: STE, dtype: torch.dtype,
                 device: torch.device | str = "cpu") -> None:
        self.bits, self.alpha, self.ste = bits, alpha, ste
        self.q = (2**bits - 1) * alpha  # as in StaircaseSTEFunction
        self.levels = num_levels(bits)
        self.path = "ceil" if ceil_is_exact(bits, alpha, dtype, device) else ("count" if self.levels <= 3 else "correct")
        self.mode = _backward_mode(ste, keeps_h=self.path != "correct")
        self.thresholds = [_threshold(k, alpha, dtype) for k in range(self.levels)]
        inf = torch.tensor(math.inf, dtype=dtype)
        self.top = float(torch.nextafter(torch.tensor(self.thresholds[-1], dtype=dtype), inf))
        # h ≤ q compares h with q rounded to dtype, as the STE's indicator does
        self.q_above = float(torch.nextafter(torch.tensor(self.q, dtype=dtype), inf))

    def factor(self, h: torch.Tensor) -> torch.Tensor:
        """m: the indicator as bool (one byte) for indicator STEs, else μ′(h)."""
        if self.ste.indicator is not None:
            return self.ste.indicator(h, self.q)
        return self.ste.dmu(h, self.bits, self.alpha)

    def forward(self, h: torch.Tensor, codes: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor | None:
        """Write c into ``codes``; return m, or None when :meth:`backward` needs only
        ``h`` (keep it until then). ``h`` is kept on the ``ceil`` and ``count`` paths and
        clamped to [0, t⁺] on the ``correct`` path; ``scratch`` is a temporary. Rows go
        in blocks of about BLOCK_ELEMENTS on the CPU so the passes after the first hit cache."""
        factor = None if self.mode else self.factor(h)
        rows = max(1, h.shape[0])
        if h.device.type == "cpu" and h.dim() > 1:  # a GPU has no such cache to keep: one block
            rows = max(1, BLOCK_ELEMENTS // max(1, math.prod(h.shape[1:])))
        for start in range(0, h.shape[0], rows):
            end = start + rows
            self._forward_block(h[start:end], codes[start:end], scratch[start:end])
        return factor

    def _forward_block(self, h: torch.Tensor, codes: torch.Tensor, scratch: torch.Tensor) -> None:
        alpha = self.alpha
        if self.path == "ceil":
            torch.div(h, alpha, out=codes).ceil_().clamp_(0.0, float(self.levels))
        elif self.path == "count":
            torch.clamp(h, 0.0, 1.0, out=codes).ceil_()  # 1{h > 0}, NaN kept as staircase_codes does
            for t in self.thresholds[1:]:
                codes.add_(torch.gt(h, t, out=scratch))
        else:
            u = h.clamp_(0.0, self.top)
            torch.div(u, alpha, out=codes).ceil_()
            torch.sub(codes, 1.0, out=scratch).mul_(alpha)
            codes.sub_(torch.ge(scratch, u, out=scratch))
            torch.mul(codes, alpha, out=scratch)
            codes.add_(torch.lt(scratch, u, out=scratch))

    def backward(self, grad: torch.Tensor, h: torch.Tensor, factor: torch.Tensor | None) -> torch.Tensor:
        """dh = dσ ⊙ m, in place in ``grad``; ``h`` as :meth:`forward` left it (a bool m
        is read as uint8: same bytes, a faster kernel)."""
        if factor is not None:
            return grad.mul_(factor.view(torch.uint8) if factor.dtype == torch.bool else factor)
        if self.mode == "threshold":  # grad where h > 0, else 0
            return torch.ops.aten.threshold_backward.grad_input(grad, h, 0.0, grad_input=grad)
        if self.mode == "hardtanh":  # grad where 0 < h < q⁺, else 0
            return torch.ops.aten.hardtanh_backward.grad_input(grad, h, 0.0, self.q_above, grad_input=grad)
        return grad  # identity: m = 1
