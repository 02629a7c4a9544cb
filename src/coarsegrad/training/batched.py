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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from coarsegrad.errors import ConfigError, DataError
from coarsegrad.quant.kernels import BLOCK_ELEMENTS, EagerQuantizer
from coarsegrad.quant.spec import ActQuant

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
        # H₀ = W₀Xᵀ for the runs with μ′ ≡ 1 (zeros for the others: never read)
        H0 = Xr.new_zeros(runs, W.shape[1], Xr.shape[1])
        for r, kernel in enumerate(kernels):
            if kernel.mode == "all":
                torch.mm(Wr[r], Xr[r].t(), out=H0[r])
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
        """segments: (kernel, start, stop, mirrored) of maximal equal runs; ``split``:
        the first run with μ′ ≡ 1 (those come last)."""
        self.segments: list[tuple[EagerQuantizer, int, int, bool]] = []
        for r, (kernel, mirrored) in enumerate(zip(self.kernels, self.mirrored, strict=True)):
            last = self.segments[-1] if self.segments else None
            if last is not None and last[0] is kernel and last[3] == mirrored:
                self.segments[-1] = (kernel, last[1], r + 1, mirrored)
            else:
                self.segments.append((kernel, r, r + 1, mirrored))
        self.split = next((r for r, k in enumerate(self.kernels) if k.mode == "all"), len(self.kernels))

    def merge(self, other: _Block) -> _Block:
        rows = {name: torch.cat([getattr(self, name), getattr(other, name)]) for name in _ROWS}
        return _Block(rows, self.kernels + other.kernels, self.mirrored + other.mirrored, self.units)

    def _preactivations(self, a: int, b: int, mirrored: bool, h: torch.Tensor, half: torch.Tensor) -> None:
        """h = W Xᵀ [runs, H, N] of runs a..b into ``h`` (module docstring: H₀ − D̃Xᵀ for μ′ ≡ 1,
        the first halves then their negation for mirrored runs)."""
        classes = self.onehot.shape[1]
        if a >= self.split:  # μ′ ≡ 1: h = H₀ − (D Xᵀ) repeated over each class's units
            E = torch.bmm(self.D[a:b], self.Xt[a:b])
            torch.sub(self.H0[a:b].view(b - a, classes, self.units, -1), E.unsqueeze(2),
                      out=h.view(b - a, classes, self.units, -1))
        elif mirrored:  # h(−x) = −h(x): the product with the first halves, then its negation
            p = torch.bmm(self.W[a:b], self.Xhalf_t[a:b], out=half)
            p, v = p.view(b - a, -1, classes, 1, p.shape[2] // classes), h.view(b - a, h.shape[1], classes, 2, -1)
            v[:, :, :, :1].copy_(p)
            torch.neg(p, out=v[:, :, :, 1:])
        else:
            torch.bmm(self.W[a:b], self.Xt[a:b], out=h)

    def step(self, t: int, stop_at_perfect: bool, out: BatchedResult, work: list[torch.Tensor]) -> bool:
        """Step ``t`` of every run in the block (evaluate, then update the runs that go on);
        record and drop the runs that stop; False when none is left. ``work``: five
        [≥ runs, H, N] buffers and one [≥ runs, H, N/2] shared by the blocks."""
        runs, n, classes = self.X.shape[0], self.X.shape[1], self.onehot.shape[1]
        h, codes, scratch, dh, factor, half = (w[:runs] for w in work)
        factors: list[torch.Tensor | None] = []
        for kernel, a, b, mirrored in self.segments:
            self._preactivations(a, b, mirrored, h[a:b], half[a:b])
            factors.append(_factor(kernel, h[a:b], factor[a:b]))  # before the kernel may clamp h
            kernel.forward(h[a:b], codes[a:b], scratch[a:b], need_factor=False)
        sums = codes.view(runs, classes, self.units, n).sum(2)  # [runs, K, N]: exact integer sums
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
            self.finish(done, t, out)  # their weights before this step's update, which is wasted on them
        g = logp.exp_().sub_(self.onehot).mul_((self.lr / n).view(runs, 1, 1))  # [runs, K, N]
        s = self.split
        if s:
            dh[:s].view(s, classes, self.units, n).copy_(g[:s].unsqueeze(2).expand(-1, -1, self.units, -1))
        for (kernel, a, b, mirrored), m in zip(self.segments, factors, strict=True):
            if a >= s:
                break
            kernel.backward(dh[a:b], h[a:b], m)
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

    def finish(self, done: torch.Tensor, steps_run: int, out: BatchedResult) -> None:
        """Write the results of the runs where ``done`` (all of them after the last step)."""
        for r in done.nonzero().squeeze(1).tolist():
            run = int(self.ids[r])
            out.weights[run] = self.weights(r)
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
    ranked = sorted(range(runs), key=lambda r: (kernels[quants[r]].mode == "all", order.index(quants[r]),
                                                 not mirrored[r], r))
    blocks = [_Block.start(X, y, W, torch.tensor(chunk), rates, [kernels[quants[r]] for r in chunk],
                           [mirrored[r] for r in chunk], units)
              for chunk in (ranked[i:i + block_runs] for i in range(0, runs, block_runs))]
    width = min(block_runs, runs)
    work = [torch.empty(width, W.shape[1], X.shape[1], dtype=X.dtype) for _ in range(5)]
    work.append(torch.empty(width, W.shape[1], X.shape[1] // 2, dtype=X.dtype))
    with torch.no_grad():
        for t in range(steps):
            before = len(blocks), [b.X.shape[0] for b in blocks]
            blocks = [b for b in blocks if b.step(t, stop_at_perfect, result, work)]
            if (len(blocks), [b.X.shape[0] for b in blocks]) != before:
                blocks = _pack(blocks, block_runs)
        for b in blocks:
            b.finish(torch.ones(b.ids.numel(), dtype=torch.bool), steps, result)
    return result


def _pack(blocks: list[_Block], block_runs: int) -> list[_Block]:
    """Merge neighbouring blocks while they fit in ``block_runs`` runs together (the
    sorted order, hence the segments, is kept)."""
    packed: list[_Block] = []
    for b in blocks:
        if packed and packed[-1].X.shape[0] + b.X.shape[0] <= block_runs:
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
