"""Landscape maps: success rate of coarse gradient descent over a grid of settings.

A trial is a flat dict (units per class, step size, bits, STE, seed, data and budget);
success means 100% training accuracy within the step budget (``History.perfect_step``,
training stops there). :func:`run_trials` takes a plain list of trial dicts, so a
sweep runner can replace it. Trials are independent and run in worker processes
(:mod:`coarsegrad.parallel`: one torch thread per worker).

Data per seed: :func:`coarsegrad.orthogonal_subspaces` drawn from
``torch.Generator().manual_seed(seed)``, then the model initialised from the same
generator, so every grid cell sees the same data for a given seed.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Iterable

import torch

from coarsegrad.data.synthetic import orthogonal_subspaces
from coarsegrad.errors import ConfigError, TrainingDiverged
from coarsegrad.models.networks import TwoLayerNet
from coarsegrad.parallel import run_jobs
from coarsegrad.quant.spec import ActQuant
from coarsegrad.theory.population import THEORY_ROUNDING
from coarsegrad.training.loop import TrainConfig, train

TRIAL_DEFAULTS: dict[str, object] = {
    "num_classes": 3, "dim": 12, "subspace_dim": 2, "samples_per_class": 50,
    "steps": 1000, "init_scale": 0.1, "second_layer": "fixed", "alpha": None,
}


def make_trials(units: Iterable[int], lrs: Iterable[float], bits: Iterable[int],
                stes: Iterable[str], seeds: Iterable[int], **fixed: object) -> list[dict]:
    """The full grid units × lr × bits × STE × seed; ``fixed`` overrides :data:`TRIAL_DEFAULTS`."""
    unknown = set(fixed) - set(TRIAL_DEFAULTS)
    if unknown:
        raise ConfigError(sorted(unknown)[0], f"unknown trial field; valid: {', '.join(TRIAL_DEFAULTS)}")
    base = {**TRIAL_DEFAULTS, **fixed}
    return [{**base, "units_per_class": u, "lr": float(lr), "bits": b, "ste": s, "seed": seed}
            for u, lr, b, s, seed in itertools.product(units, lrs, bits, stes, seeds)]


def run_trial(trial: dict) -> dict:
    """Train one TwoLayerNet by full-batch coarse gradient descent; return trial + outcome."""
    t = {**TRIAL_DEFAULTS, **trial}
    gen = torch.Generator().manual_seed(int(t["seed"]))
    X, y = orthogonal_subspaces(int(t["num_classes"]), int(t["dim"]), int(t["subspace_dim"]),
                                int(t["samples_per_class"]), generator=gen)
    model = TwoLayerNet(int(t["dim"]), int(t["num_classes"]), int(t["units_per_class"]),
                        quant=ActQuant(int(t["bits"]), t["alpha"], str(t["ste"]), THEORY_ROUNDING),
                        second_layer=t["second_layer"], init_scale=float(t["init_scale"]),
                        generator=gen)
    config = TrainConfig(lr=float(t["lr"]), steps=int(t["steps"]), seed=int(t["seed"]),
                         stop_at_perfect=True)
    started = time.perf_counter()
    try:
        history = train(model, X, y, config)
    except TrainingDiverged as exc:
        return {**t, "success": False, "diverged": True, "perfect_step": None,
                "final_loss": None, "final_acc": None, "steps_run": exc.step,
                "seconds": time.perf_counter() - started}
    return {**t, "success": history.perfect_step is not None, "diverged": False,
            "perfect_step": history.perfect_step, "final_loss": history.loss[-1],
            "final_acc": history.train_acc[-1], "steps_run": history.steps_run,
            "seconds": time.perf_counter() - started}


def run_trials(trials: list[dict], workers: int | None = None, start_method: str | None = None
               ) -> list[dict]:
    """Run ``trials`` (results in the same order) on ``workers`` processes (default cpu_count)
    by :func:`coarsegrad.parallel.run_jobs` (``workers=1``: in this process; one torch
    thread per worker; ``start_method`` fork where available, else spawn)."""
    return run_jobs(run_trial, trials, workers, start_method=start_method)


def success_rates(records: list[dict]) -> list[dict]:
    """Aggregate per (bits, ste, units_per_class, lr): n, successes, rate, median perfect step."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["bits"], r["ste"], r["units_per_class"], r["lr"]), []).append(r)
    out = []
    for (bits, ste, units, lr), rs in sorted(groups.items(), key=lambda kv: kv[0]):
        steps = sorted(r["perfect_step"] for r in rs if r["success"])
        out.append({"bits": bits, "ste": ste, "units_per_class": units, "lr": lr, "n": len(rs),
                    "successes": len(steps), "rate": len(steps) / len(rs),
                    "diverged": sum(bool(r["diverged"]) for r in rs),
                    "median_perfect_step": steps[len(steps) // 2] if steps else None,
                    "seeds": ",".join(str(r["seed"]) for r in rs)})
    return out


def heatmap_grid(rates: list[dict]) -> dict[tuple[int, str], tuple[list, list, list[list[float]]]]:
    """{(bits, ste): (units, lrs, rate[units][lr])} with NaN for missing cells."""
    out = {}
    for key in sorted({(r["bits"], r["ste"]) for r in rates}):
        rs = [r for r in rates if (r["bits"], r["ste"]) == key]
        units = sorted({r["units_per_class"] for r in rs})
        lrs = sorted({r["lr"] for r in rs})
        cell = {(r["units_per_class"], r["lr"]): r["rate"] for r in rs}
        out[key] = (units, lrs, [[cell.get((u, lr), math.nan) for lr in lrs] for u in units])
    return out
