"""The quantized activation's spec: one frozen, validated object carried whole by every
layer, kernel, checkpoint, exporter and theory function that uses it.

    ActQuant(bits=2, alpha=None, ste="clipped_relu", rounding="nearest", alpha_rule=None, learn=None)

σ(x) = α·c(x), c(x) = #{j ∈ 0..L−1 : x > t_j}, L = 2^b − 1, t_j = fl((j + o)·α) with
o = 0 (ceil), ½ (nearest), 1 (floor) (:mod:`coarsegrad.quant.staircase`); a point at a
threshold goes to the lower level. Backward: ∂L/∂x = ∂L/∂σ · μ′(x; q_max), μ′ the STE's.

α is resolved once, at construction: ``alpha=None`` becomes ``optimal_alpha(bits, r)``
where r is given by ``alpha_rule``: ``"nearest"`` (the default for ``ceil``) takes the
nearest-rounding optimum — the paper's published α, used by the authors with their ceil
staircase, so ``ActQuant(b).alpha == optimal_alpha(b)`` — and ``"matched"`` (the default
for ``nearest`` and ``floor``) the optimum for the spec's own rounding. Everything
derived (L, q_max, the thresholds in a dtype) is read from the spec, never recomputed.

The default rounding is ``nearest`` (:data:`~coarsegrad.quant.staircase.DEFAULT_ROUNDING`:
first threshold α/2, under which the paper's claim holds at every bit width); ``ceil``,
the authors' code, is ``rounding="ceil"``. :meth:`ActQuant.from_dict` reads a dict without
``rounding`` (written before the field existed) as ``ceil``.

``learn`` picks how the step is found: ``None`` (the paper's fixed α, the fast kernels),
``"lsq"`` (a learned step s, LSQ) or ``"pact"`` (a learned clipping level a, PACT), both
in :mod:`coarsegrad.quant.learned`, both starting from α (s = α, a = L·α) and both
rounding to nearest (``rounding="nearest"`` is required); their own ∂/∂x replaces the STE.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Mapping

import torch

from coarsegrad.errors import ConfigError
from coarsegrad.quant.staircase import (
    DEFAULT_ROUNDING,
    LEGACY_ROUNDING,
    ROUNDING_OFFSET,
    Rounding,
    check_alpha,
    check_bits,
    check_rounding,
    num_levels,
    optimal_alpha,
)
from coarsegrad.quant.ste import BUILTIN_STES, STE, get_ste

AlphaRule = Literal["nearest", "matched"]
Learn = Literal["lsq", "pact"]
LEARN_MODES: tuple[str, ...] = ("lsq", "pact")


@dataclass(frozen=True, init=False)
class ActQuant:
    """A b-bit staircase activation with its STE, rounding and resolved step α.

    Every field is validated (``ConfigError`` naming it); ``alpha`` and ``ste`` are
    stored resolved (a float, an :class:`~coarsegrad.quant.ste.STE`). Derived:
    :attr:`levels` L = 2^b − 1, :attr:`q_max` = L·α, :meth:`thresholds`.
    """

    bits: int
    alpha: float
    ste: STE
    rounding: Rounding
    alpha_rule: AlphaRule
    learn: Learn | None

    def __init__(self, bits: int = 2, alpha: float | None = None, ste: str | STE = "clipped_relu",
                 rounding: Rounding = DEFAULT_ROUNDING, alpha_rule: AlphaRule | None = None,
                 learn: Learn | None = None) -> None:
        for name, value in (("bits", bits), ("alpha", alpha), ("ste", ste), ("rounding", rounding),
                            ("alpha_rule", alpha_rule), ("learn", learn)):
            object.__setattr__(self, name, value)
        self.__post_init__()

    def __post_init__(self) -> None:
        """Validate every field and resolve ``alpha`` and ``ste`` (once)."""
        bits = check_bits(self.bits)
        rounding = check_rounding(self.rounding)
        rule: Any = self.alpha_rule
        if rule is None:
            rule = "nearest" if rounding == "ceil" else "matched"
        if rule not in ("nearest", "matched"):
            raise ConfigError("alpha_rule", f"must be 'nearest' or 'matched' (or None), got {rule!r}")
        ste = get_ste(self.ste)
        alpha: Any = self.alpha
        if alpha is None:
            alpha = optimal_alpha(bits, rounding if rule == "matched" else "nearest")
        alpha = check_alpha(alpha)
        for name, value in (("ste", ste), ("alpha", alpha), ("alpha_rule", rule)):
            object.__setattr__(self, name, value)
        if self.learn is not None and self.learn not in LEARN_MODES:
            raise ConfigError("learn", f"must be None, 'lsq' or 'pact', got {self.learn!r}")
        if self.learn is not None and rounding != "nearest":
            raise ConfigError("learn", f"{self.learn} rounds to nearest: needs rounding='nearest', got {rounding!r}")
        object.__setattr__(self, "_thresholds", {})

    @property
    def levels(self) -> int:
        """Largest code L = 2^b − 1."""
        return num_levels(self.bits)

    @property
    def q_max(self) -> float:
        """Top level q = L·α (the q of every STE's μ′)."""
        return self.levels * self.alpha

    @property
    def offset(self) -> float:
        """o in t_j = (j + o)·α: 0 (ceil), ½ (nearest), 1 (floor)."""
        return ROUNDING_OFFSET[self.rounding]

    def threshold(self, j: int, dtype: torch.dtype = torch.float64) -> float:
        """t_j = fl((j + o)·α) in ``dtype``: the product of (j + o) (exact) by α made by
        the same tensor-by-scalar multiply the kernels use (so a comparison x > t_j on
        any device reads the same number). Defined for every integer j."""
        return float(torch.tensor([j + self.offset], dtype=dtype) * self.alpha)

    def thresholds(self, dtype: torch.dtype = torch.float64) -> tuple[float, ...]:
        """(t_0, …, t_{L−1}) in ``dtype`` (cached per dtype): c(x) = #{j : x > t_j}."""
        cache: dict[torch.dtype, tuple[float, ...]] = self.__dict__["_thresholds"]
        if dtype not in cache:
            cache[dtype] = tuple(self.threshold(j, dtype) for j in range(self.levels))
        return cache[dtype]

    def dmu(self, x: torch.Tensor) -> torch.Tensor:
        """μ′(x; q_max) of the spec's STE."""
        return self.ste.derivative(x, self.q_max)

    def mu(self, x: torch.Tensor) -> torch.Tensor:
        """μ(x; q_max) of the spec's STE."""
        return self.ste.mu(x, self.q_max)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (the STE by name; a custom STE raises ``ConfigError('ste')``);
        ``learn`` only when set, so fixed-α specs write the same dict as before it existed."""
        if BUILTIN_STES.get(self.ste.name) is not self.ste:
            raise ConfigError("ste", f"a custom STE ({self.ste.name!r}) cannot be serialised")
        data: dict[str, Any] = {"bits": self.bits, "alpha": self.alpha, "ste": self.ste.name,
                                "rounding": self.rounding, "alpha_rule": self.alpha_rule}
        if self.learn is not None:
            data["learn"] = self.learn
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ActQuant:
        """The spec of :meth:`to_dict` (unknown keys raise ``ConfigError`` naming the key); a dict
        without ``rounding`` was written before the field existed and reads as ``ceil``
        (:data:`~coarsegrad.quant.staircase.LEGACY_ROUNDING`)."""
        return cls(**{"rounding": LEGACY_ROUNDING, **spec_fields(cls, data, "quant")})

    def describe(self) -> str:
        learn = "" if self.learn is None else f", learn={self.learn}"
        return (f"bits={self.bits}, alpha={self.alpha:.6g}, ste={self.ste.name}, "
                f"rounding={self.rounding}{learn}")


def spec_fields(cls: type, data: object, field: str) -> dict[str, Any]:
    """``data`` as keyword arguments of the dataclass ``cls``: ``ConfigError(field)`` unless it
    is a mapping, ``ConfigError(key)`` for the first key that is not a field of ``cls``."""
    if not isinstance(data, Mapping):
        raise ConfigError(field, f"must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(unknown[0], f"is not a field of {cls.__name__}")
    return dict(data)


def as_quant(quant: ActQuant | int, alpha: float | None = None,
             ste: str | STE = "clipped_relu", rounding: Rounding = DEFAULT_ROUNDING) -> ActQuant:
    """``quant`` itself, or the :class:`ActQuant` of the (bits, alpha, ste, rounding)
    conveniences (``quant`` then the bits); extra arguments beside a spec raise
    ``ConfigError('quant')``."""
    if isinstance(quant, ActQuant):
        if alpha is not None or ste != "clipped_relu" or rounding != DEFAULT_ROUNDING:
            raise ConfigError("quant", "give either an ActQuant or bits/alpha/ste/rounding, not both")
        return quant
    return ActQuant(quant, alpha, ste, rounding)
