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
    o = α_r·S,  ℓ_r = mean_n CE(o_rn, y_rn)    logits σ(h)Vᵀ and loss
    g = (η_r / N)·(softmax(o) − onehot(y))     [R, N, K]
    dh[r, n, u] = g[r, n, class(u)]·m[r, n, u] coarse gradient through σ (σ′ := μ′)
    W ← W − dhᵀ X                              baddbmm
                                               (μ′ ≡ 1: W_u ← W_u − (gᵀX)[class(u)], a K-row bmm)

which is :func:`coarsegrad.training.loop.train` with plain SGD, a constant step,
full batch and ``log_every=1``: the accuracy and loss are those before the step's
update; a run stops (and is not updated) at the first step with 100% training
accuracy (argmax, ties to the lower class as ``torch.argmax``) or a non-finite loss,
else after ``steps`` updates.

Layout. Runs are sorted by (μ′ ≡ 1 or not, quantizer, mirrored or not) and cut into
blocks of at most ``block_runs`` runs; a block runs every step as one program, with
one kernel call per *segment* (consecutive runs sharing a quantizer and mirroring)
and every other op (class sums, softmax, loss, accuracy, the update) over the whole
block. A block drops its finished runs at the end of the step that finishes them
(after recording their weights), and two neighbouring blocks that fit in
``block_runs`` together merge, so late steps run few, full blocks. A run is
*mirrored* when its rows, cut into K chunks of 2s, have each chunk's second half
equal to minus its first (the ``pairs`` data: x and −x): then h = X Wᵀ needs only
the first halves, h(−x) = −h(x) exactly (negation commutes with every rounding), so
the forward product halves with the same bits. The per-class sum of codes is exact
in floating point, so o = α·S can differ from train's float matmul σVᵀ by rounding
only, which matters only when two classes tie exactly (see tests/training/test_batched.py).

Runs with μ′ ≡ 1 (identity) move every unit of a class alike, W_u = W₀,u − D_{class(u)}
with D = Σ_t g_t X, so h = H₀ − (DXᵀ)[class(u)] with H₀ = W₀Xᵀ fixed. Their codes are
taken in units of α: c = clip(⌈H̃₀ − DXᵀ/α⌉, 0, L) with H̃₀ = H₀/α − o precomputed, which
is #{j < L : h > (j + o)α} in exact arithmetic (no division per element, and one op
per pass for every identity run of a block, whatever its quantizer; only the clip to
L goes by runs of equal L). In floating point it differs from c(fl(W x)) only where a
pre-activation lies within rounding of a threshold, as every reordering here does.

Low-rank data. When the rows of a run's X lie in an r < d dimensional subspace
(:func:`~coarsegrad.training.subspace.row_basis`: numerical rank, and a residual below
the rounding of a length-d dot product), the run trains in those coordinates: X̂ = XQ,
Ŵ = WQ (Q [d, r] orthonormal). Every gradient Σ_n dh_n x_n lies in that subspace and h = Ŵ X̂ᵀ, so
the trajectory is the same up to rounding and the products shrink by d/r; the result
is W = W₀ + (Ŵ − Ŵ₀)Qᵀ. Blocks hold runs of one width. The synthetic table's data
(4 classes in 5-dim subspaces of R^40) has r = 20.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from coarsegrad.errors import ConfigError, DataError
from coarsegrad.quant.kernels import BLOCK_ELEMENTS, EagerQuantizer
from coarsegrad.quant.spec import ActQuant
from coarsegrad.training.subspace import Subspaces

_ROWS = ("ids", "X", "Xt", "Xhalf", "Xhalf_t", "y", "W", "H0", "D", "lr", "alpha", "onehot", "acc", "loss", "first")
"""The per-run tensors of a block (dim 0 = run)."""


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


class _Block:
    """Consecutive runs of the sorted order: their X (also transposed, ``Xt``, and the first
    halves ``Xhalf``/``Xhalf_t`` of mirrored rows), y, W, and for μ′ ≡ 1 runs H₀ = W₀Xᵀ and
    D; η, α, run ids, kernel and mirroring, and the metrics of their last evaluated step
    (acc, loss; first perfect step or −1)."""

    ids: torch.Tensor
    X: torch.Tensor
    Xt: torch.Tensor
    Xhalf: torch.Tensor
    Xhalf_t: torch.Tensor
    y: torch.Tensor
    W: torch.Tensor
    H0: torch.Tensor
    D: torch.Tensor
    lr: torch.Tensor
    alpha: torch.Tensor
    onehot: torch.Tensor
    acc: torch.Tensor
    loss: torch.Tensor
    first: torch.Tensor

    def __init__(self, rows: dict[str, torch.Tensor], kernels: list[EagerQuantizer], mirrored: list[bool],
                 units: int) -> None:
        for name in _ROWS:
            setattr(self, name, rows[name])
        self.kernels, self.mirrored, self.units = kernels, mirrored, units
        classes = self.onehot.shape[1]
        self.tiebreak = torch.arange(classes - 1, -1, -1, dtype=self.X.dtype).view(1, classes, 1)
        self._segment()

    @classmethod
    def start(cls, X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, ids: torch.Tensor, lr: torch.Tensor,
              kernels: list[EagerQuantizer], mirrored: list[bool], units: int) -> _Block:
        runs, classes, d = ids.numel(), W.shape[1] // units, X.shape[2]
        Xr, Wr = X[ids].contiguous(), W[ids].detach().clone()
        half = Xr.new_empty(runs, 0, d)  # the same shape in every block, so blocks merge
        if Xr.shape[1] % (2 * classes) == 0:
            half = Xr.view(runs, classes, 2, -1, d)[:, :, 0].reshape(runs, -1, d)
        # H̃₀ = W₀Xᵀ/α − o for the runs with μ′ ≡ 1 (zeros for the others: never read)
        H0 = Xr.new_zeros(runs, W.shape[1], Xr.shape[1])
        for r, kernel in enumerate(kernels):
            if kernel.mode == "all":
                torch.mm(Wr[r], Xr[r].t(), out=H0[r]).div_(kernel.alpha).sub_(kernel.offset)
        rows = {"ids": ids, "X": Xr, "Xt": Xr.transpose(1, 2).contiguous(), "Xhalf": half.contiguous(),
                "Xhalf_t": half.transpose(1, 2).contiguous(), "y": y[ids].contiguous(), "W": Wr, "H0": H0,
                "D": Xr.new_zeros(runs, classes, d), "lr": lr[ids],
                "alpha": torch.tensor([k.alpha for k in kernels], dtype=X.dtype).view(runs, 1, 1),
                "onehot": torch.nn.functional.one_hot(y[ids], classes).to(X.dtype).transpose(1, 2).contiguous(),
                "acc": torch.zeros(runs, dtype=torch.float64),
                "loss": torch.full((runs,), math.nan, dtype=torch.float64),
                "first": torch.full((runs,), -1, dtype=torch.int64)}
        return cls(rows, kernels, mirrored, units)

    def _segment(self) -> None:
        """``split``: the first run with μ′ ≡ 1 (those come last); ``segments``: (kernel,
        start, stop, mirrored) of maximal equal runs before it; ``clips``: (L, start, stop)
        of maximal runs of equal L from it on, counted from ``split``."""
        self.split = next((r for r, k in enumerate(self.kernels) if k.mode == "all"), len(self.kernels))
        self.segments: list[tuple[EagerQuantizer, int, int, bool]] = []
        for r, (kernel, mirrored) in enumerate(zip(self.kernels[:self.split], self.mirrored[:self.split], strict=True)):
            last = self.segments[-1] if self.segments else None
            if last is not None and last[0] is kernel and last[3] == mirrored:
                self.segments[-1] = (kernel, last[1], r + 1, mirrored)
            else:
                self.segments.append((kernel, r, r + 1, mirrored))
        self.clips: list[tuple[int, int, int]] = []
        for r, kernel in enumerate(self.kernels[self.split:]):
            if self.clips and self.clips[-1][0] == kernel.levels:
                self.clips[-1] = (kernel.levels, self.clips[-1][1], r + 1)
            else:
                self.clips.append((kernel.levels, r, r + 1))

    def merge(self, other: _Block) -> _Block:
        rows = {name: torch.cat([getattr(self, name), getattr(other, name)]) for name in _ROWS}
        return _Block(rows, self.kernels + other.kernels, self.mirrored + other.mirrored, self.units)

    def _preactivations(self, a: int, b: int, mirrored: bool, h: torch.Tensor, half: torch.Tensor) -> None:
        """h = W Xᵀ [runs, H, N] of runs a..b into ``h`` (the first halves then their
        negation for mirrored runs)."""
        classes = self.onehot.shape[1]
        if mirrored:  # h(−x) = −h(x): the product with the first halves, then its negation
            p = torch.bmm(self.W[a:b], self.Xhalf_t[a:b], out=half)
            p, v = p.view(b - a, -1, classes, 1, p.shape[2] // classes), h.view(b - a, h.shape[1], classes, 2, -1)
            v[:, :, :, :1].copy_(p)
            torch.neg(p, out=v[:, :, :, 1:])
        else:
            torch.bmm(self.W[a:b], self.Xt[a:b], out=h)

    def _identity_sums(self, h: torch.Tensor, sums: torch.Tensor) -> None:
        """S of the runs with μ′ ≡ 1 (module docstring): c = clip(⌈H̃₀ − DXᵀ/α⌉, 0, L) in
        ``h`` (their rows of the buffer), summed over each class's units into ``sums``."""
        s, classes, n = self.split, self.onehot.shape[1], self.X.shape[1]
        E = torch.bmm(self.D[s:], self.Xt[s:]).div_(self.alpha[s:])  # [runs, K, N]
        v = h.view(-1, classes, self.units, n)
        torch.sub(self.H0[s:].view_as(v), E.unsqueeze(2), out=v).ceil_()
        for levels, a, b in self.clips:
            v[a:b].clamp_(0.0, float(levels))
        torch.sum(v, 2, out=sums)

    def step(self, t: int, stop_at_perfect: bool, out: BatchedResult, work: list[torch.Tensor],
             lift: Callable[[int, torch.Tensor], torch.Tensor]) -> bool:
        """Step ``t`` of every run in the block (evaluate, then update the runs that go on);
        record and drop the runs that stop (their weights mapped back by ``lift``); False
        when none is left. ``work``: five [≥ runs, H, N] buffers and one [≥ runs, H, N/2]
        shared by the blocks."""
        runs, n, classes, s = self.X.shape[0], self.X.shape[1], self.onehot.shape[1], self.split
        h, codes, scratch, dh, factor, half = (w[:runs] for w in work)
        factors: list[torch.Tensor | None] = []
        for kernel, a, b, mirrored in self.segments:
            self._preactivations(a, b, mirrored, h[a:b], half[a:b])
            factors.append(_factor(kernel, h[a:b], factor[a:b]))  # before the kernel may clamp h
            kernel.forward(h[a:b], codes[a:b], scratch[a:b], need_factor=False)
        sums = self.X.new_empty(runs, classes, n)  # [runs, K, N]: exact integer sums
        if s:
            torch.sum(codes[:s].view(s, classes, self.units, n), 2, out=sums[:s])
        if s < runs:
            self._identity_sums(h[s:], sums[s:])
        logp = torch.log_softmax(sums * self.alpha, 1)
        self.loss = -(logp * self.onehot).sum(1).mean(-1, dtype=torch.float64)
        # argmax with ties to the lower class, as torch.argmax (slow over a dim of 4): the
        # integer key K·S_k + (K − 1 − k) has a unique maximum at that class
        key = sums.mul(classes).add_(self.tiebreak)
        self.acc = ((key * self.onehot).sum(1) == key.amax(1)).to(torch.float64).mean(-1)
        self.first = torch.where((self.first < 0) & (self.acc == 1.0), t, self.first)
        done = ~torch.isfinite(self.loss)
        if stop_at_perfect:
            done |= self.acc == 1.0
        finished = bool(done.any())
        if finished:
            self.finish(done, t, out, lift)  # their weights before this step's update, which is wasted on them
        g = logp.exp_().sub_(self.onehot).mul_((self.lr / n).view(runs, 1, 1))  # [runs, K, N]
        for (kernel, a, b, mirrored), m in zip(self.segments, factors, strict=True):
            shape = (b - a, classes, self.units, n)  # dσ = g of the unit's class: a stride-0 view
            kernel.backward(g[a:b].unsqueeze(2).expand(shape), h[a:b].view(shape),
                            None if m is None else m.view(shape), out=dh[a:b].view(shape))
            if mirrored:  # Σ_n dh_n x_n over pairs (x, −x): (dh(x) − dh(−x))·x over the first halves
                v = dh[a:b].view(b - a, -1, classes, 2, n // (2 * classes))
                diff = torch.sub(v[:, :, :, 0], v[:, :, :, 1], out=half[a:b].view(b - a, -1, classes, n // (2 * classes)))
                self.W[a:b].baddbmm_(diff.view(b - a, -1, n // 2), self.Xhalf[a:b], alpha=-1.0)
            else:
                self.W[a:b].baddbmm_(dh[a:b], self.X[a:b], alpha=-1.0)
        if s < runs:  # μ′ ≡ 1: dh repeats g over each class's units, so W_u moves by −(gX)_{class(u)}
            self.D[s:].baddbmm_(g[s:], self.X[s:])
        if finished:
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                return False
            for name in _ROWS:
                setattr(self, name, getattr(self, name).index_select(0, keep))
            kept = keep.tolist()
            self.kernels, self.mirrored = [self.kernels[r] for r in kept], [self.mirrored[r] for r in kept]
            self._segment()
        return True

    def weights(self, r: int) -> torch.Tensor:
        """Run r's first-layer weights now: W, or W₀ − D repeated over each class's units."""
        if r < self.split:
            return self.W[r]
        classes = self.onehot.shape[1]
        return (self.W[r].view(classes, self.units, -1) - self.D[r].unsqueeze(1)).view_as(self.W[r])

    def finish(self, done: torch.Tensor, steps_run: int, out: BatchedResult,
               lift: Callable[[int, torch.Tensor], torch.Tensor]) -> None:
        """Write the results of the runs where ``done`` (all of them after the last step)."""
        for r in done.nonzero().squeeze(1).tolist():
            run = int(self.ids[r])
            out.weights[run] = lift(run, self.weights(r))
            out.steps_run[run] = steps_run
            if not math.isfinite(float(self.loss[r])):
                out.diverged_step[run], out.train_acc[run], out.loss[run] = steps_run, 0.0, math.nan
                continue
            out.train_acc[run], out.loss[run] = float(self.acc[r]), float(self.loss[r])
            out.perfect_step[run] = int(self.first[r]) if int(self.first[r]) >= 0 else None


def _factor(kernel: EagerQuantizer, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor | None:
    """m = μ′(h) into ``out`` when the kernel's backward needs it (None: it reads h), by
    runs of about BLOCK_ELEMENTS elements so the STE's temporaries stay in cache (2×
    faster for log_tailed_relu than one call on the whole block)."""
    if kernel.mode:
        return None
    rows = max(1, BLOCK_ELEMENTS // max(1, h[0].numel()))
    for start in range(0, h.shape[0], rows):
        out[start:start + rows].copy_(kernel.factor(h[start:start + rows]))
    return out


def mirrored_runs(X: torch.Tensor, num_classes: int) -> list[bool]:
    """Per run of X [R, N, d]: True when N = K·2s and every chunk of 2s rows is
    [x_1..x_s, −x_1..−x_s] (the ``pairs`` data), so h(−x) = −h(x) halves the product."""
    runs, n = X.shape[0], X.shape[1]
    if n == 0 or n % (2 * num_classes):
        return [False] * runs
    v = X.view(runs, num_classes, 2, -1, X.shape[2])
    return torch.eq(v[:, :, 1], -v[:, :, 0]).flatten(1).all(1).tolist()


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
    rates = torch.tensor(lr, dtype=X.dtype)
    order = list(dict.fromkeys(quants))
    kernels = {q: EagerQuantizer(q, X.dtype) for q in order}
    mirrored = mirrored_runs(X, num_classes)
    lift = Subspaces(X, W.detach(), mirrored, num_classes)  # each run in its rows' subspace (module docstring)

    def sort_key(r: int) -> tuple[int, bool, int, int, bool, int]:  # by width; μ′ ≡ 1 last, grouped by L
        k = kernels[quants[r]]
        return (lift.width[r], k.mode == "all", k.levels if k.mode == "all" else 0, order.index(quants[r]),
                not mirrored[r], r)

    ranked = sorted(range(runs), key=sort_key)
    blocks = []
    for w in sorted(set(lift.width)):
        group = [r for r in ranked if lift.width[r] == w]
        Xw, Ww = lift.inputs(w)
        blocks += [_Block.start(Xw, y, Ww, torch.tensor(chunk), rates, [kernels[quants[r]] for r in chunk],
                                [mirrored[r] for r in chunk], units)
                   for chunk in (group[i:i + block_runs] for i in range(0, len(group), block_runs))]
    width = min(block_runs, runs)
    work = [torch.empty(width, W.shape[1], X.shape[1], dtype=X.dtype) for _ in range(5)]
    work.append(torch.empty(width, W.shape[1], X.shape[1] // 2, dtype=X.dtype))
    with torch.no_grad():
        for t in range(steps):
            before = len(blocks), [b.X.shape[0] for b in blocks]
            blocks = [b for b in blocks if b.step(t, stop_at_perfect, result, work, lift)]
            if (len(blocks), [b.X.shape[0] for b in blocks]) != before:
                blocks = _pack(blocks, block_runs)
        for b in blocks:
            b.finish(torch.ones(b.ids.numel(), dtype=torch.bool), steps, result, lift)
    return result


def _pack(blocks: list[_Block], block_runs: int) -> list[_Block]:
    """Merge neighbouring blocks of one width while they fit in ``block_runs`` runs together
    (the sorted order, hence the segments, is kept)."""
    packed: list[_Block] = []
    for b in blocks:
        if packed and packed[-1].X.shape[0] + b.X.shape[0] <= block_runs and packed[-1].X.shape[2] == b.X.shape[2]:
            packed[-1] = packed[-1].merge(b)
        else:
            packed.append(b)
    return packed

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
