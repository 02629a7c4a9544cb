"""In-place quantizer kernels for the fast training step (:mod:`coarsegrad.fast`).

Forward, for pre-activations h, codes c and the STE factor m:

    c = #{j ∈ 0..L−1 : h > t_j},   t_j = fl(j·α)          (σ(h) = α·c)
    m = μ′(h)      (clipped ReLU: 1{0 < h ≤ q}; relu: 1{h > 0}; identity: 1)

Backward is dh = dσ ⊙ m. ``c`` equals :func:`~coarsegrad.quantizer.staircase_codes`
bit for bit: the same thresholds fl(jα), made by the same ``code * alpha`` product, so
σ(fl(kα)) = fl(kα), and NaN stays NaN (so a diverged run still shows a NaN loss).
L ≤ 3 (b ≤ 2) counts the thresholds directly (1{h > 0} = ⌈clip(h, 0, 1)⌉), 2L passes.
L > 3 computes c in ten passes:

1. u = clip(h, 0, t⁺) with t⁺ the float just above t_{L−1}: u > t_j ⇔ h > t_j for
   every j ≤ L−1, and now 0 ≤ u < t_L.
2. c₀ = ⌈u/α⌉ ∈ [0, L] is within one of c (|fl(t_j/α) − j| ≤ 2^{−23}·j).
3. c₁ = c₀ − 1{t_{c₀−1} ≥ u} (never fires at c₀ = 0: t_{−1} = −α < u);
   c = c₁ + 1{t_{c₁} < u} (never fires at c₁ = L: t_L > u). At most one of the two
   fires, and together they take c₀ ∈ {c−1, c, c+1} to c.

Measured on a 2-core AVX-512 CPU (torch 2.13): comparisons that write float are ~4×
faster than ones that write bool, and ``x *= mask`` is ~4× faster for a uint8 than
for a bool mask, so the kernels compare into float buffers and read bool masks as
uint8. A ``torch.compile``-fused forward (one pass, float codes + uint8 mask) was not
faster end to end on that CPU and costs seconds of compilation, so it is not used.
"""

from __future__ import annotations

import math

import torch

from coarsegrad.quantizer import num_levels
from coarsegrad.ste import BUILTIN_STES, STE


def _threshold(k: int, alpha: float, dtype: torch.dtype) -> float:
    """t_k = fl(k·α), computed by the same op as ``staircase_codes`` (``code * alpha``)."""
    return float(torch.tensor([float(k)], dtype=dtype) * alpha)


def kernel_alpha_ok(bits: int, alpha: float, dtype: torch.dtype) -> bool:
    """True when α and t_L are normal finite numbers of ``dtype`` (the proof's assumptions)."""
    info = torch.finfo(dtype)
    top = _threshold(num_levels(bits), alpha, dtype)
    return info.tiny <= alpha and math.isfinite(top) and top < info.max


def _range_mode(ste: STE, levels: int) -> str | None:
    """How the built-in indicator STEs get m from the codes (None: keep a mask).

    identity: m = 1; relu: m = 1{h > 0} = 1{c ≥ 1}; clipped_relu (L ≤ 3): m = 1{c ≥ 1} −
    1{h > q}, the flag 1{h > q} left in the work buffer by the forward."""
    if BUILTIN_STES.get(ste.name) is not ste:
        return None
    return {"identity": "all", "relu": "positive"}.get(ste.name) or (
        "clipped" if ste.name == "clipped_relu" and levels <= 3 else None)


class EagerQuantizer:
    """σ codes and the STE factor with eager in-place ops (module docstring), using
    float-valued comparisons (PyTorch's bool-producing CPU kernels are several times
    slower). For L ≤ 3 the codes are counted directly, c = Σ_j 1{h > t_j}. The
    built-in indicator STEs keep no mask: backward reads m off the codes (a range
    test) and, for clipped_relu, a flag in the work buffer. Other indicator STEs keep
    a bool mask (one byte per element), the rest μ′(h)."""

    def __init__(self, bits: int, alpha: float, ste: STE, dtype: torch.dtype) -> None:
        self.bits, self.alpha, self.ste = bits, alpha, ste
        self.q = (2**bits - 1) * alpha  # as in StaircaseSTEFunction
        self.levels = num_levels(bits)
        self.mode = _range_mode(ste, self.levels)
        self.thresholds = [_threshold(k, alpha, dtype) for k in range(self.levels)]
        below = torch.tensor(self.thresholds[-1], dtype=dtype)
        self.top = float(torch.nextafter(below, torch.tensor(math.inf, dtype=dtype)))

    def factor(self, h: torch.Tensor) -> torch.Tensor:
        """m: the indicator as bool (one byte) for indicator STEs, else μ′(h)."""
        if self.ste.indicator is not None:
            return self.ste.indicator(h, self.q)
        return self.ste.dmu(h, self.bits, self.alpha)

    def forward(self, h: torch.Tensor, codes: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor | None:
        """Write c into ``codes``; return m, or None when :meth:`backward` derives it
        from ``codes`` and ``scratch`` (keep both until then). ``h`` may be overwritten."""
        factor = None if self.mode else self.factor(h)
        if self.levels <= 3:
            torch.clamp(h, 0.0, 1.0, out=codes).ceil_()  # 1{h > 0}, NaN kept as staircase_codes does
            for t in self.thresholds[1:]:
                codes.add_(torch.gt(h, t, out=scratch))
            if self.mode == "clipped":
                torch.gt(h, self.q, out=scratch)
            return factor
        alpha = self.alpha
        u = h.clamp_(0.0, self.top)
        torch.div(u, alpha, out=codes).ceil_()
        torch.sub(codes, 1.0, out=scratch).mul_(alpha)
        codes.sub_(torch.ge(scratch, u, out=scratch))
        torch.mul(codes, alpha, out=scratch)
        codes.add_(torch.lt(scratch, u, out=scratch))
        return factor

    def backward(self, grad: torch.Tensor, codes: torch.Tensor, scratch: torch.Tensor,
                 factor: torch.Tensor | None) -> torch.Tensor:
        """dh = dσ ⊙ m, in place in ``grad``; may overwrite ``codes`` (a bool m is read
        as uint8: same bytes, a faster kernel)."""
        if factor is not None:
            return grad.mul_(factor.view(torch.uint8) if factor.dtype == torch.bool else factor)
        if self.mode == "all":
            return grad
        mask = codes.clamp_(max=1.0)
        if self.mode == "clipped":
            mask.sub_(scratch)
        return grad.mul_(mask)
