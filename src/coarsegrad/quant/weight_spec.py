"""The quantized weight's spec: one frozen, validated object carried whole by every
layer, training rule, checkpoint and exporter that quantizes weights (the weight-side
counterpart of :class:`coarsegrad.quant.spec.ActQuant`).

    WeightQuant(kind="binary", bits=None, granularity="layer", method="ste", clip=1.0,
                rho=1e-5, lam0=1.0, lam_growth=1.001, hard_after=None, step="stat")

``kind`` picks the projection Q (:mod:`coarsegrad.quant.weights`): ``binary`` α·sign(w)
(bits = 1), ``ternary`` α·sign(w)·1{|w| > Δ} (codes −1/0/1, stored in bits = 2),
``uniform`` symmetric b-bit s·clip(round(w/s), −M, M), M = 2^{b−1} − 1, b in 2..8.
``bits=None`` resolves to 1 (binary) or 2 (ternary); uniform needs it. ``granularity``:
one scale per ``layer`` or per output ``channel`` (dim 0 of the weight).

``method`` picks how the float latent weights are trained (:mod:`coarsegrad.quant.qlayers`,
:mod:`coarsegrad.training.weight_methods`); each reads only its own parameters:

* ``ste`` (BinaryConnect): forward Q(w), gradient straight through to w masked to
  |w| ≤ ``clip``; w clipped to [−clip, clip] after every step (``clip=None``: neither).
* ``bcgd`` (blended coarse gradient descent): w ← (1 − ρ)·w + ρ·Q(w) − η·g(Q(w)), ``rho`` = ρ.
* ``binaryrelax``: forward (λ·Q(u) + u)/(λ + 1), λ_t = ``lam0``·``lam_growth``^t at step
  t, then Q(u) from step ``hard_after`` on (an int step, or a float in (0, 1]: that
  fraction of the run's steps; None: relaxed for the whole run).

``step``: ``stat`` takes the scale from the weights' statistics (the formulas of
:mod:`coarsegrad.quant.weights`); ``lsq`` learns it (LSQ, Esser et al. 2020, with
:mod:`coarsegrad.quant.learned`): the layer holds a parameter s (per layer or per output
channel), s₀ = 2·mean|w|/√M, and Q(w) = s·clip(⌊w/s⌉, −M, M). LSQ needs ``kind="uniform"``
(bits = 2 gives the ternary levels −s, 0, s) and ``method="ste"``; its gradient to w is
LSQ's own 1{−M ≤ w/s ≤ M} and the latent weights are not clipped, so ``clip`` is stored
resolved to None (it may be left at its default 1.0 or given as None).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from coarsegrad import validate as v
from coarsegrad.errors import ConfigError
from coarsegrad.quant.spec import spec_fields

WeightKind = Literal["binary", "ternary", "uniform"]
Granularity = Literal["layer", "channel"]
WeightMethod = Literal["ste", "bcgd", "binaryrelax"]
WeightStep = Literal["stat", "lsq"]

KINDS: tuple[WeightKind, ...] = ("binary", "ternary", "uniform")
GRANULARITIES: tuple[Granularity, ...] = ("layer", "channel")
METHODS: tuple[WeightMethod, ...] = ("ste", "bcgd", "binaryrelax")
STEPS: tuple[WeightStep, ...] = ("stat", "lsq")
FIXED_BITS = {"binary": 1, "ternary": 2}
"""Storage bits of the kinds whose levels are fixed: binary ±1, ternary −1/0/1."""
UNIFORM_BITS = (2, 8)
TERNARY_RATIO = 0.7
"""Δ = 0.7·mean|w|: the ternary threshold of Li & Liu (2016), their approximation of the
optimal threshold for uniform or Gaussian weights."""


@dataclass(frozen=True)
class WeightQuant:
    """A weight quantizer: the projection Q (kind, bits, granularity) and the training
    method with its parameters. Every field is validated at construction
    (``ConfigError`` naming it); ``bits`` is stored resolved. Derived: :attr:`max_code`."""

    kind: WeightKind = "binary"
    bits: int | None = None
    granularity: Granularity = "layer"
    method: WeightMethod = "ste"
    clip: float | None = 1.0
    rho: float = 1e-5
    lam0: float = 1.0
    lam_growth: float = 1.001
    hard_after: int | float | None = None
    step: WeightStep = "stat"

    def __post_init__(self) -> None:
        """Validate every field and resolve ``bits`` (once)."""
        kind = v.choice("kind", self.kind, KINDS)
        if kind in FIXED_BITS:
            if self.bits is not None and self.bits != FIXED_BITS[kind]:
                raise ConfigError("bits", f"{kind} weights have bits={FIXED_BITS[kind]} (or None), got {self.bits!r}")
            object.__setattr__(self, "bits", FIXED_BITS[kind])
        else:
            if self.bits is None:
                raise ConfigError("bits", f"uniform weights need bits in {UNIFORM_BITS[0]}..{UNIFORM_BITS[1]}")
            v.integer("bits", self.bits, lo=UNIFORM_BITS[0], hi=UNIFORM_BITS[1])
        v.choice("granularity", self.granularity, GRANULARITIES)
        v.choice("method", self.method, METHODS)
        if self.clip is not None:
            v.number("clip", self.clip, lo=0.0, lo_open=True)
        v.number("rho", self.rho, lo=0.0, hi=1.0)
        v.number("lam0", self.lam0, lo=0.0, lo_open=True)
        v.number("lam_growth", self.lam_growth, lo=1.0)
        hard: Any = self.hard_after
        if isinstance(hard, float):
            v.number("hard_after", hard, lo=0.0, hi=1.0, lo_open=True)
        elif hard is not None:
            v.integer("hard_after", hard, lo=0, hi=v.MAX_STEPS)
        if v.choice("step", self.step, STEPS) == "lsq":
            if kind != "uniform":
                raise ConfigError("step", f"lsq needs kind 'uniform' (bits=2 gives the ternary levels −s, 0, s), got {kind!r}")
            if self.method != "ste":
                raise ConfigError("step", f"lsq trains its step with the straight-through gradient: needs method 'ste', "
                                          f"got {self.method!r}")
            if self.clip not in (None, 1.0):
                raise ConfigError("clip", f"lsq weights are not clipped (LSQ masks their gradient itself): leave clip "
                                          f"at its default or None, got {self.clip!r}")
            object.__setattr__(self, "clip", None)

    @property
    def max_code(self) -> int:
        """Largest |code|: 1 (binary, ternary) or M = 2^{b−1} − 1 (uniform)."""
        return 1 if self.kind != "uniform" else (1 << (int(self.bits or 0) - 1)) - 1

    def hard_step(self, total_steps: int | None) -> int | None:
        """The first step whose forward uses Q(u) (binaryrelax): ``hard_after`` itself, or
        ⌈fraction·total_steps⌉ (a fraction needs ``total_steps``); None: never."""
        hard = self.hard_after
        if hard is None or isinstance(hard, int):
            return hard
        if total_steps is None:
            raise ConfigError("hard_after", "a fraction of the run needs the run's total steps")
        return math.ceil(hard * total_steps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (``bits`` resolved)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WeightQuant:
        """The spec of :meth:`to_dict` (unknown keys raise ``ConfigError`` naming the key)."""
        return cls(**spec_fields(cls, data, "weight_quant"))

    def describe(self) -> str:
        """One line: the projection and the method with only its own parameters."""
        own = {"ste": "LSQ: learned step, no clip" if self.step == "lsq" else f"clip={self.clip}", "bcgd": f"rho={self.rho:g}",
               "binaryrelax": f"lam0={self.lam0:g}, lam_growth={self.lam_growth:g}, hard_after={self.hard_after}"}
        return (f"kind={self.kind}, bits={self.bits}, granularity={self.granularity}, "
                f"method={self.method} ({own[self.method]}), step={self.step}")
