"""The three studies behind ``coarsegrad theory``: configs (validated) and record makers.

Each ``run_*`` returns a list of flat records (parameters + numbers) that
:mod:`.report` turns into tables and plots. ``quick=True`` presets shrink every budget.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from coarsegrad.data.synthetic import orthogonal_subspaces
from coarsegrad.errors import ConfigError
from coarsegrad.models.networks import TwoLayerNet
from coarsegrad.quant.spec import ActQuant
from coarsegrad.quant.staircase import check_bits
from coarsegrad.quant.ste import BUILTIN_STES, get_ste
from coarsegrad.theory.diagnostics import angle_grid, make_teacher, spurious_records, trajectory
from coarsegrad.theory.geometry import track_geometry
from coarsegrad.theory.landscape import make_trials, run_trials
from coarsegrad.theory.population import THEORY_ROUNDING
from coarsegrad.training.loop import TrainConfig
from coarsegrad.validate import MAX_STEPS, MAX_UNITS, integer, number

ALL_STES = tuple(BUILTIN_STES)


def _check_common(bits: tuple[int, ...], stes: tuple[str, ...]) -> None:
    if not bits:
        raise ConfigError("bits", "give at least one value")
    for b in bits:
        check_bits(b)
    if not stes:
        raise ConfigError("stes", "give at least one STE")
    for s in stes:
        get_ste(s)


def _positive(name: str, value: object, hi: int = MAX_STEPS) -> None:
    integer(name, value, lo=1, hi=hi)


@dataclass
class AnglesConfig:
    """Angle study: m hidden units, n inputs, ‖w‖ = r, ‖w*‖ = r_star, v* ~ N(0, I) (seed)."""

    bits: tuple[int, ...] = (1, 2, 4)
    stes: tuple[str, ...] = ALL_STES
    m: int = 6
    n: int = 3
    r: float = 1.0
    r_star: float = 1.0
    seed: int = 0
    grid_points: int = 24
    samples: int = 1 << 18
    sweep_seeds: int = 10
    sweep_radii: tuple[float, ...] = (0.5, 1.0, 2.0)
    sweep_points: int = 48
    sweep_samples: int = 1 << 14
    traj_starts: tuple[float, ...] = (math.pi - 0.1, math.pi / 2)
    traj_lr: float = 0.1
    traj_steps: int = 500
    traj_every: int = 25
    traj_samples: int = 1 << 13

    def __post_init__(self) -> None:
        _check_common(self.bits, self.stes)
        for name in ("m", "grid_points", "samples", "sweep_seeds", "sweep_points", "sweep_samples",
                     "traj_steps", "traj_every", "traj_samples"):
            _positive(name, getattr(self, name))
        if self.n < 2:
            raise ConfigError("n", f"must be >= 2, got {self.n}")
        for name in ("r", "r_star", "traj_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, f"must be > 0, got {getattr(self, name)}")

    @classmethod
    def quick(cls, **kw: Any) -> "AnglesConfig":
        params: dict[str, Any] = {"grid_points": 8, "samples": 1 << 14, "sweep_seeds": 2, "sweep_radii": (1.0,),
                      "sweep_points": 12, "sweep_samples": 1 << 12, "traj_steps": 60,
                      "traj_every": 20, "traj_samples": 1 << 11, **kw}
        return cls(**params)


def grid_thetas(points: int) -> np.ndarray:
    """θ/π ∈ {1/points, …, 1} plus θ = π − 0.01 (the approach to the spurious minimum)."""
    return np.sort(np.append(np.linspace(math.pi / points, math.pi, points), math.pi - 0.01))


def run_angles(cfg: AnglesConfig) -> list[dict]:
    """Angle grid (v = v* and v = argmin f), spurious points, sign sweep, trajectories."""
    records: list[dict] = []
    thetas = grid_thetas(cfg.grid_points)
    sweep_thetas = grid_thetas(cfg.sweep_points)
    for bits in cfg.bits:
        teacher = make_teacher(cfg.m, cfg.n, bits, seed=cfg.seed, r_star=cfg.r_star)
        for v_mode in ("teacher", "optimal"):
            records += angle_grid(teacher, list(cfg.stes), thetas, r=cfg.r, v_mode=v_mode,
                                  samples=cfg.samples, seed=cfg.seed)
        for r in sorted({cfg.r, *cfg.sweep_radii}):
            records += spurious_records(teacher, list(cfg.stes), r=r, samples=cfg.samples, seed=cfg.seed)
        records += _sign_sweep(cfg, bits, sweep_thetas)
        for theta0 in cfg.traj_starts:
            for ste in cfg.stes:
                records += trajectory(teacher, ste, theta0=theta0, r0=cfg.r, lr=cfg.traj_lr,
                                      steps=cfg.traj_steps, record_every=cfg.traj_every,
                                      samples=cfg.traj_samples, seed=cfg.seed)
    return records


def _sign_sweep(cfg: AnglesConfig, bits: int, thetas: np.ndarray) -> list[dict]:
    """Aggregated: over seeds × θ grid, how often ⟨E[g_μ], ∂f/∂w⟩ < 0 (beyond 4 s.e.)."""
    out = []
    for v_mode in ("teacher", "optimal"):
        for r in cfg.sweep_radii:
            recs = []
            for seed in range(cfg.sweep_seeds):
                teacher = make_teacher(cfg.m, cfg.n, bits, seed=seed, r_star=cfg.r_star)
                recs += angle_grid(teacher, list(cfg.stes), thetas, r=r, v_mode=v_mode,
                                   samples=cfg.sweep_samples, seed=seed)
            for ste in cfg.stes:
                rs = [x for x in recs if x["ste"] == get_ste(ste).name]
                scale = [1e-12 * x["coarse_norm"] * x["grad_w_norm"] for x in rs]
                neg = [x for x, tol in zip(rs, scale, strict=False) if x["inner"] < -4 * x["inner_se"] - tol]
                near = [x for x in rs if x["theta"] >= 0.9 * math.pi]
                cos = [x["cosine"] for x in rs if x["cosine"] == x["cosine"]]
                out.append({"study": "sign_sweep", "ste": get_ste(ste).name, "bits": bits,
                            "v_mode": v_mode, "r": r, "m": cfg.m, "seeds": cfg.sweep_seeds,
                            "points": len(rs), "negative": len(neg),
                            "points_near_pi": len(near),
                            "negative_near_pi": sum(x["theta"] >= 0.9 * math.pi for x in neg),
                            "min_cosine": min(cos) if cos else None,
                            "mean_cosine": float(np.mean(cos)) if cos else None})
    return out


@dataclass
class GeometryConfig:
    """Settings (bits, ste, units per class, lr) × seeds on orthogonal-subspace data."""

    settings: tuple[tuple[int, str, int, float], ...] = (
        (4, "clipped_relu", 4, 3.0), (2, "clipped_relu", 4, 3.0),
        (4, "relu", 4, 3.0), (4, "clipped_relu", 3, 3.0))
    seeds: int = 8
    steps: int = 1500
    window: int = 20
    num_classes: int = 3
    dim: int = 12
    subspace_dim: int = 2
    samples_per_class: int = 50
    init_scale: float = 0.1
    trace_seeds: int = 2
    trace_every: int = 5

    def __post_init__(self) -> None:
        for b, s, u, lr in self.settings:
            _check_common((b,), (s,))
            _positive("units_per_class", u, MAX_UNITS)
            number("lr", lr, lo=0.0, lo_open=True)
        for name in ("seeds", "steps", "window", "trace_every"):
            _positive(name, getattr(self, name))

    @classmethod
    def quick(cls, **kw: Any) -> "GeometryConfig":
        params: dict[str, Any] = {"settings": ((4, "clipped_relu", 4, 3.0),), "seeds": 2, "steps": 150, **kw}
        return cls(**params)


def run_geometry(cfg: GeometryConfig) -> list[dict]:
    """Per run: a summary record; for the first ``trace_seeds`` seeds, per-step trace records."""
    records = []
    for bits, ste, units, lr in cfg.settings:
        for seed in range(cfg.seeds):
            gen = torch.Generator().manual_seed(seed)
            X, y, bases = orthogonal_subspaces(cfg.num_classes, cfg.dim, cfg.subspace_dim,
                                               cfg.samples_per_class, generator=gen, return_bases=True)
            model = TwoLayerNet(cfg.dim, cfg.num_classes, units, init_scale=cfg.init_scale, generator=gen,
                                quant=ActQuant(bits, None, ste, THEORY_ROUNDING))
            trace = track_geometry(model, X, y, bases, TrainConfig(lr=lr, steps=cfg.steps, seed=seed),
                                   window=cfg.window)
            params = {"bits": bits, "ste": ste, "units_per_class": units, "lr": lr, "seed": seed,
                      "steps": cfg.steps, "window": cfg.window, "num_classes": cfg.num_classes,
                      "dim": cfg.dim, "subspace_dim": cfg.subspace_dim,
                      "samples_per_class": cfg.samples_per_class, "init_scale": cfg.init_scale}
            records.append({"study": "geometry_run", **params, **trace.summary()})
            if seed < cfg.trace_seeds:
                for i in range(0, len(trace.step), cfg.trace_every):
                    records.append({"study": "geometry_trace", **params, "step": trace.step[i],
                                    "loss": trace.loss[i], "train_acc": trace.train_acc[i],
                                    "classes_holding": int(sum(trace.holds[i])),
                                    "all_hold": all(trace.holds[i])})
    return records


@dataclass
class LandscapeConfig:
    """Grid units × lr × bits × STE × seeds; trials run by :func:`.landscape.run_trials`."""

    units: tuple[int, ...] = (4, 8, 16)
    lrs: tuple[float, ...] = (0.3, 3.0, 30.0)
    bits: tuple[int, ...] = (2, 4)
    stes: tuple[str, ...] = ALL_STES
    seeds: int = 4
    steps: int = 1000
    workers: int | None = None
    fixed: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_common(self.bits, self.stes)
        for u in self.units:
            _positive("units", u, MAX_UNITS)
        for lr in self.lrs:
            number("lrs", lr, lo=0.0, lo_open=True)
        _positive("seeds", self.seeds)
        _positive("steps", self.steps)
        if self.workers is not None:
            _positive("workers", self.workers)

    @classmethod
    def quick(cls, **kw: Any) -> "LandscapeConfig":
        params: dict[str, Any] = {"units": (4,), "lrs": (3.0,), "bits": (4,), "stes": ("clipped_relu", "identity"),
                      "seeds": 2, "steps": 100, **kw}
        return cls(**params)


def run_landscape(cfg: LandscapeConfig) -> list[dict]:
    """One record per trial (:func:`.landscape.run_trial`)."""
    trials = make_trials(cfg.units, cfg.lrs, cfg.bits, cfg.stes, range(cfg.seeds),
                         steps=cfg.steps, **cfg.fixed)
    return [{"study": "landscape_trial", **r} for r in run_trials(trials, cfg.workers)]


def config_dict(cfg: object) -> dict:
    """The resolved config as JSON-ready data."""
    return asdict(cfg)  # type: ignore[call-overload]
