"""The fast training step: manual forward and backward for the two-layer models.

For any model whose ``two_layer_form()`` returns a
:class:`~coarsegrad.models.networks.TwoLayerForm` (the library's
:class:`~coarsegrad.models.networks.MLP` without batch-norm and
:class:`~coarsegrad.models.networks.TwoLayerNet`, and their subclasses that keep their
forward: the model decides), with rows x of one chunk (B rows) and the step's scale s
(1/batch)::

    h = x W₁ᵀ + b₁                      one addmm into a reused buffer
    c, m = codes(h), μ′(h)              σ(h) = α·c; m: see coarsegrad.quant.kernels
    oᵀ = α·W₂cᵀ + b₂                    addmm with alpha = α (classes first)
    ℓ = Σ CE(o, y),  g = s·(softmax(o) − onehot(y))
    ∇W₂ += α·gᵀc,  ∇b₂ += Σ g,  dh = (g W₂) ⊙ m,  ∇W₁ += dhᵀx,  ∇b₁ += Σ dh

the coarse gradient of :func:`coarsegrad.training.loop.train`'s autograd path, without the
autograd graph: gradients go by ``addmm_`` (β = 0 on the first chunk) into buffers
that become ``p.grad``, so the caller's optimizer steps as before. Mini-batches are
gathered with ``index_select`` into a reused buffer. Chunks have at most
``chunk_size`` rows, fewer for wide layers (rows·H ≤ 2²⁰, at least 1024 rows) so the
[rows, H] buffers stay in cache. Results equal the autograd path up to float rounding
(the same codes, bit for bit).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from coarsegrad.errors import DataError
from coarsegrad.models.networks import TwoLayerForm
from coarsegrad.quant.kernels import EagerQuantizer, kernel_alpha_ok

CACHE_ELEMENTS = 1 << 20
CACHE_ROWS = 1024
Layout = TwoLayerForm


@runtime_checkable
class HasTwoLayerForm(Protocol):
    """A model that says whether its forward is o = α·c(x W₁ᵀ + b₁) W₂ᵀ + b₂."""

    def two_layer_form(self) -> TwoLayerForm | None: ...


def model_layout(model: nn.Module) -> TwoLayerForm | None:
    """The model's own :class:`TwoLayerForm`, or None when it provides none (another
    architecture, a batch-norm, an overridden forward) or has hooks."""
    if not isinstance(model, HasTwoLayerForm):
        return None
    if any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules()):
        return None
    return model.two_layer_form()


def _trainable(t: torch.Tensor | None) -> bool:
    return t is not None and t.requires_grad


class FastStep:
    """Computes Σ CE and the coarse gradient of a batch into ``p.grad`` (see module doc),
    with the quantizer of :class:`~coarsegrad.quant.kernels.EagerQuantizer`."""

    def __init__(self, layout: TwoLayerForm, chunk_size: int) -> None:
        # at most chunk_size rows, fewer for wide layers: rows·H ≤ 2²⁰ keeps each
        # [rows, H] buffer (4 MiB in float32) in cache (full batch ~5% faster at H ≥ 512)
        hidden = layout.w1.shape[0]
        self.layout, self.chunk = layout, min(chunk_size, max(CACHE_ROWS, CACHE_ELEMENTS // hidden))
        self.quant = EagerQuantizer(layout.quant, layout.w1.dtype, layout.w1.device)
        self.alpha = layout.quant.alpha
        self.grads = [(p, torch.empty_like(p, memory_format=torch.contiguous_format))
                      for p in (layout.w1, layout.b1, layout.w2, layout.b2) if p is not None and p.requires_grad]
        self._grad_of = {id(p): g for p, g in self.grads}
        self._rows = 0

    def _buffers(self, rows: int, x: torch.Tensor) -> None:
        """(Re)allocate the per-row buffers for up to ``rows`` rows."""
        if rows <= self._rows:
            return
        w1 = self.layout.w1
        hidden = w1.shape[0]
        dtype, device = w1.dtype, w1.device
        self.h = torch.empty(rows, hidden, dtype=dtype, device=device)
        self.codes = torch.empty(rows, hidden, dtype=dtype, device=device)
        self.scratch = torch.empty(rows, hidden, dtype=dtype, device=device)
        self.xbuf = torch.empty(rows, x.shape[1], dtype=x.dtype, device=x.device)
        self.ybuf = torch.empty(rows, dtype=torch.int64, device=x.device)
        self.minus_one = torch.full((1, rows), -1.0, dtype=dtype, device=device)
        self._rows = rows

    @torch.no_grad()
    def accumulate(self, X: torch.Tensor, y: torch.Tensor, rows: torch.Tensor | None,
                   scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Backward of scale·Σ CE over the rows ``rows`` of (X, y) (all rows if None),
        in chunks; set ``p.grad``; return (Σ CE as float64, #correct), as tensors."""
        n = X.shape[0] if rows is None else rows.shape[0]
        self._buffers(min(n, self.chunk), X)
        loss_sum = torch.zeros((), dtype=torch.float64, device=X.device)
        correct = torch.zeros((), dtype=torch.int64, device=X.device)
        for start in range(0, n, self.chunk):
            stop = min(start + self.chunk, n)
            if rows is None:
                xb, yb = X[start:stop], y[start:stop]
            else:
                xb = torch.index_select(X, 0, rows[start:stop], out=self.xbuf[:stop - start])
                yb = torch.index_select(y, 0, rows[start:stop], out=self.ybuf[:stop - start])
            loss, hits = self._chunk(xb, yb, scale, first=start == 0)
            loss_sum += loss
            correct += hits
        for p, g in self.grads:
            p.grad = g
        return loss_sum, correct

    def _chunk(self, x: torch.Tensor, y: torch.Tensor, scale: float,
               first: bool) -> tuple[torch.Tensor, torch.Tensor]:
        lay, alpha, r = self.layout, self.alpha, x.shape[0]
        beta = 0.0 if first else 1.0
        h, codes = self.h[:r], self.codes[:r]
        if lay.b1 is None:
            torch.mm(x, lay.w1.t(), out=h)
        else:
            torch.addmm(lay.b1, x, lay.w1.t(), out=h)
        factor = self.quant.forward(h, codes, self.scratch[:r])
        # logits transposed, oᵀ = α·W₂cᵀ + b₂: MKL is about 2× faster with the 10 rows first
        if lay.b2 is None:
            out_t = torch.mm(lay.w2, codes.t()).mul_(alpha)
        else:
            out_t = torch.addmm(lay.b2.unsqueeze(1), lay.w2, codes.t(), alpha=alpha)
        logp = torch.log_softmax(out_t, 0)
        rows = y.unsqueeze(0)
        loss = -logp.gather(0, rows).sum(dtype=torch.float64)
        hits = (out_t.argmax(0) == y).sum()
        g_t = logp.exp_().scatter_add_(0, rows, self.minus_one[:, :r]).mul_(scale)
        if _trainable(lay.w2):
            self._grad_of[id(lay.w2)].addmm_(g_t, codes, beta=beta, alpha=alpha)
        if _trainable(lay.b2):
            self._add_sum(self._grad_of[id(lay.b2)], g_t, 1, first)
        if _trainable(lay.w1) or _trainable(lay.b1):
            dh = self.quant.backward(torch.mm(g_t.t(), lay.w2, out=self.scratch[:r]), h, factor)
            if _trainable(lay.w1):
                self._grad_of[id(lay.w1)].addmm_(dh.t(), x, beta=beta)
            if _trainable(lay.b1):
                self._add_sum(self._grad_of[id(lay.b1)], dh, 0, first)
        return loss, hits

    @staticmethod
    def _add_sum(grad: torch.Tensor, values: torch.Tensor, dim: int, first: bool) -> None:
        if first:
            torch.sum(values, dim, out=grad)
        else:
            grad.add_(values.sum(dim))


def fast_step(model: nn.Module, X: torch.Tensor, y: torch.Tensor, chunk_size: int) -> FastStep | None:
    """A :class:`FastStep` for training ``model`` on (X, y), or None when the autograd
    path must run (unsupported model, dtype or device mismatch, an α the kernels'
    proof does not cover). Raises :class:`DataError` for labels out of range."""
    layout = model_layout(model)
    if layout is None or X.dim() != 2 or not X.is_contiguous():
        return None
    tensors = [t for t in (layout.w1, layout.b1, layout.w2, layout.b2) if t is not None]
    if any(t.dtype != X.dtype or t.device != X.device for t in tensors):
        return None
    if X.shape[1] != layout.w1.shape[1]:
        return None  # let the autograd path raise its usual shape error
    if not kernel_alpha_ok(layout.quant, X.dtype):
        return None
    classes = layout.w2.shape[0]
    if int(y.max()) >= classes:
        raise DataError("y", f"label {int(y.max())} is out of range for {classes} outputs")
    return FastStep(layout, chunk_size)
