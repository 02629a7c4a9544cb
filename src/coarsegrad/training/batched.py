"""Many independent full-batch coarse-GD runs of the two-layer network as one program.

Run r has data X_r ∈ R^{N×d}, labels y_r, first layer W_r ∈ R^{H×d} (H = K·m, unit
u = k·m + j belongs to class k), the fixed second layer V = block of ones
(:class:`~coarsegrad.models.networks.TwoLayerNet` with ``second_layer="fixed"``), its
own step size η_r and activation spec (:class:`~coarsegrad.quant.spec.ActQuant`: b, α,
STE, rounding). The runs are stacked,
X ∈ R^{R×N×d}, W ∈ R^{R×H×d}, and one step of every run is::

    h = X Wᵀ                                   bmm,            [R, N, H]
    c = codes(h),  m = μ′(h)                   the library kernels (EagerQuantizer of the spec)
    S[r, n, k] = Σ_j c[r, n, k·m + j]          exact integer code sums per class
    o = α·S,  ℓ_r = mean_n CE(o_rn, y_rn)      logits σ(h)Vᵀ and loss
    g = (η_r / N)·(softmax(o) − onehot(y))     [R, N, K]
    dh[r, n, u] = g[r, n, class(u)]·m[r, n, u] coarse gradient through σ (σ′ := μ′)
    W ← W − dhᵀ X                              baddbmm
                                               (μ′ ≡ 1: W_u ← W_u − (gᵀX)[class(u)], a K-row bmm)

which is :func:`coarsegrad.training.loop.train` with plain SGD, a constant step,
full batch and ``log_every=1``: the accuracy and loss are those before the step's
update; a run stops (and is not updated) at the first step with 100% training
accuracy (argmax, ties to the lower class as ``torch.argmax``) or a non-finite loss,
else after ``steps`` updates. Runs sharing a quantizer are grouped into blocks of at
most ``block_runs`` runs (one codes/μ′ call per block, the [runs, N, H] buffers
small enough to stay in cache); a block drops its finished runs at once, so finished
runs cost nothing. The per-class sum of codes is exact in floating point, so
o = α·S can differ from train's float matmul σVᵀ by rounding only, which matters
only when two classes tie exactly (see tests/training/test_batched.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from coarsegrad.errors import ConfigError, DataError
from coarsegrad.quant.kernels import BLOCK_ELEMENTS, EagerQuantizer
from coarsegrad.quant.spec import ActQuant


@dataclass
class BatchedResult:
    """Per run (in input order): first perfect step (or None), steps run, accuracy and
    mean loss at the last evaluated step, the step of a non-finite loss (or None), and
    the final first-layer weights [R, H, d]."""

    perfect_step: list[int | None]
    steps_run: list[int]
    train_acc: list[float]
    loss: list[float]
    diverged_step: list[int | None]
    weights: torch.Tensor


@dataclass
class _Block:
    """Runs sharing one quantizer: their rows of X, y, W, η, their run ids, and the
    metrics of their last evaluated step (acc, loss; first perfect step or −1)."""

    quant: ActQuant
    kernel: EagerQuantizer
    ids: torch.Tensor
    X: torch.Tensor
    y: torch.Tensor
    W: torch.Tensor
    lr: torch.Tensor
    units: int
    onehot: torch.Tensor = field(init=False)
    tiebreak: torch.Tensor = field(init=False)
    acc: torch.Tensor = field(init=False)
    loss: torch.Tensor = field(init=False)
    first: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        runs = self.ids.numel()
        self.onehot = torch.nn.functional.one_hot(self.y, self.W.shape[1] // self.units).to(self.X.dtype).transpose(1, 2).contiguous()
        self.acc = torch.zeros(runs, dtype=torch.float64)
        classes = self.onehot.shape[1]
        self.tiebreak = torch.arange(classes - 1, -1, -1, dtype=self.X.dtype).view(1, classes, 1)
        self.loss = torch.full((runs,), math.nan, dtype=torch.float64)
        self.first = torch.full((runs,), -1, dtype=torch.int64)

    def step(self, t: int, stop_at_perfect: bool, out: BatchedResult, work: list[torch.Tensor]) -> bool:
        """Step ``t`` of every run in the block (evaluate, then update the runs that go on);
        record and drop the runs that stop; False when none is left. ``work``: five
        [≥ runs, N, H] buffers shared by the blocks."""
        runs, n = self.X.shape[0], self.X.shape[1]
        h, codes, scratch, scratch2, factor = (w[:runs] for w in work)
        torch.bmm(self.X, self.W.transpose(1, 2), out=h)
        m = self._factor(h, factor)  # before the kernel may clamp h
        self.kernel.forward(h, codes, scratch, need_factor=False)
        # [runs, K, N]: classes first, so the reductions over K run along N
        sums = codes.view(runs, n, -1, self.units).sum(-1).transpose(1, 2).contiguous()
        logp = torch.log_softmax(sums * self.quant.alpha, 1)
        self.loss = -(logp * self.onehot).sum(1).mean(-1, dtype=torch.float64)
        # argmax with ties to the lower class, as torch.argmax (slow over a dim of 4): the
        # integer key K·S_k + (K − 1 − k) has a unique maximum at that class
        key = sums.mul(self.onehot.shape[1]).add_(self.tiebreak)
        self.acc = ((key * self.onehot).sum(1) == key.amax(1)).to(torch.float64).mean(-1)
        self.first = torch.where((self.first < 0) & (self.acc == 1.0), t, self.first)
        done = ~torch.isfinite(self.loss)
        if stop_at_perfect:
            done |= self.acc == 1.0
        if bool(done.any()):
            self.finish(done, t, out)
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                return False
            for name in ("ids", "X", "y", "W", "lr", "onehot", "acc", "loss", "first"):
                setattr(self, name, getattr(self, name).index_select(0, keep))
            runs = keep.numel()
            logp = logp[keep]
            if m is None:  # the backward reads h
                h = torch.index_select(h, 0, keep, out=scratch2[:runs])
            else:
                m = m[keep]
        g = logp.exp_().sub_(self.onehot).mul_((self.lr / n).view(runs, 1, 1))
        if self.kernel.mode == "all":  # μ′ = 1: dh repeats g over each class's units, so dhᵀX = (gX) repeated
            self.W.view(runs, -1, self.units, self.W.shape[2]).sub_(torch.bmm(g, self.X).unsqueeze(2))
            return True
        dh = scratch[:runs]
        dh.view(runs, n, -1, self.units).copy_(g.transpose(1, 2).unsqueeze(-1).expand(-1, -1, -1, self.units))
        dh = self.kernel.backward(dh, h, m)
        self.W.baddbmm_(dh.transpose(1, 2), self.X, alpha=-1.0)
        return True

    def _factor(self, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor | None:
        """m = μ′(h) into ``out`` when the kernel's backward needs it (None: it reads h), by
        runs of about BLOCK_ELEMENTS elements so the STE's temporaries stay in cache (2×
        faster for log_tailed_relu than one call on the whole block)."""
        if self.kernel.mode:
            return None
        rows = max(1, BLOCK_ELEMENTS // max(1, h[0].numel()))
        for start in range(0, h.shape[0], rows):
            out[start:start + rows].copy_(self.kernel.factor(h[start:start + rows]))
        return out

    def finish(self, done: torch.Tensor, steps_run: int, out: BatchedResult) -> None:
        """Write the results of the runs where ``done`` (all of them after the last step)."""
        for r in done.nonzero().squeeze(1).tolist():
            run = int(self.ids[r])
            out.weights[run] = self.W[r]
            out.steps_run[run] = steps_run
            if not math.isfinite(float(self.loss[r])):
                out.diverged_step[run], out.train_acc[run], out.loss[run] = steps_run, 0.0, math.nan
                continue
            out.train_acc[run], out.loss[run] = float(self.acc[r]), float(self.loss[r])
            out.perfect_step[run] = int(self.first[r]) if int(self.first[r]) >= 0 else None


def train_batched(
    X: torch.Tensor,
    y: torch.Tensor,
    W: torch.Tensor,
    quants: list[ActQuant],
    lr: list[float],
    steps: int,
    *,
    num_classes: int,
    stop_at_perfect: bool = True,
    block_runs: int = 32,
) -> BatchedResult:
    """Train R independent runs (module docstring): X [R, N, d], y [R, N] int64, initial
    W [R, K·m, d] (not modified), one :class:`~coarsegrad.quant.spec.ActQuant` and step size per run, up to
    ``steps`` updates each. The dtype of X (float32 or float64) is the compute dtype."""
    runs = _check_inputs(X, y, W, quants, lr, steps, num_classes, block_runs)
    units = W.shape[1] // num_classes
    result = BatchedResult([None] * runs, [steps] * runs, [0.0] * runs, [math.nan] * runs, [None] * runs,
                           W.detach().clone())
    blocks: list[_Block] = []
    rates = torch.tensor(lr, dtype=X.dtype)
    kernels = {q: EagerQuantizer(q, X.dtype) for q in dict.fromkeys(quants)}
    width = min(block_runs, max(sum(q == p for p in quants) for q in kernels))
    work = [torch.empty(width, X.shape[1], W.shape[1], dtype=X.dtype) for _ in range(5)]
    for quant in dict.fromkeys(quants):
        ids = [i for i, q in enumerate(quants) if q == quant]
        for start in range(0, len(ids), block_runs):
            chunk = torch.tensor(ids[start:start + block_runs])
            blocks.append(_Block(quant, kernels[quant], chunk, X[chunk].contiguous(), y[chunk].contiguous(),
                                 W[chunk].detach().clone(), rates[chunk], units))
    with torch.no_grad():
        for t in range(steps):
            blocks = [b for b in blocks if b.step(t, stop_at_perfect, result, work)]
        for b in blocks:
            b.finish(torch.ones(b.ids.numel(), dtype=torch.bool), steps, result)
    return result


def _check_inputs(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, quants: list[ActQuant], lr: list[float],
                  steps: int, num_classes: int, block_runs: int) -> int:
    if X.dim() != 3 or W.dim() != 3 or y.dim() != 2:
        raise DataError("X", f"expected X [R, N, d], y [R, N], W [R, H, d]; got {list(X.shape)}, "
                             f"{list(y.shape)}, {list(W.shape)}")
    runs = X.shape[0]
    if y.shape != X.shape[:2] or W.shape[0] != runs or W.shape[2] != X.shape[2]:
        raise DataError("X", f"shapes disagree: X {list(X.shape)}, y {list(y.shape)}, W {list(W.shape)}")
    if X.dtype not in (torch.float32, torch.float64) or W.dtype != X.dtype or y.dtype != torch.int64:
        raise DataError("X", f"need float32/float64 X and W of one dtype and int64 y, got {X.dtype}, {W.dtype}, "
                             f"{y.dtype}")
    for name, value, minimum in (("steps", steps, 0), ("num_classes", num_classes, 2), ("block_runs", block_runs, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(name, f"must be an integer >= {minimum}, got {value!r}")
    if W.shape[1] % num_classes:
        raise ConfigError("num_classes", f"must divide the {W.shape[1]} hidden units")
    if any(not isinstance(q, ActQuant) for q in quants):
        raise ConfigError("quants", "every quantizer must be an ActQuant")
    if len(quants) != runs or len(lr) != runs:
        raise ConfigError("quants", f"need one quantizer and one lr per run ({runs}), got {len(quants)}, {len(lr)}")
    if any(not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0) for v in lr):
        raise ConfigError("lr", "every step size must be a finite number > 0")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError("y", f"labels must be in 0..{num_classes - 1}")
    return runs
