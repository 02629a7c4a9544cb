"""The full synthetic table and the units sweep, trained as batched programs.

``synthetic-table``: rounding {ceil, nearest} × STE {identity, relu, clipped_relu,
log_tailed_relu} × bits {1, 2, 3, 4} × data {pairs, iid} × seeds, each up to ``steps``
full-batch coarse-GD steps of the paper's two-layer network (``presets/synthetic.toml``:
K = 4 classes in 5-dim subspaces of R^40, 100 samples per class, 20 units per class,
fixed per-class sum, init scale 0.1, lr 1). Per cell: runs reaching 100% training
accuracy, their median step, the final accuracy of the others.

``synthetic-units``: the same with the monotone STEs on ``pairs`` for units per class
m ∈ {1, 2, 3, 5, 10, 20}; per (rounding, bits, STE) the smallest m with every seed
perfect.

α as :class:`~coarsegrad.quant.spec.ActQuant` resolves ``alpha=None``: the published
(nearest-rounding MSE-optimal) α for ceil, the matched optimum for nearest (the same
numbers). Seeds as :func:`coarsegrad.experiments.synthetic.synthetic_trial`: data from ``seed``,
initial weights from ``seed + 1`` (:func:`~coarsegrad.models.build.build_model`), so a
cell's run equals ``coarsegrad train`` with that config, full batch and ``log_every=1``
(:mod:`coarsegrad.training.batched`; tests/training/test_batched.py).
"""

from __future__ import annotations

import os
import time
from statistics import median

import torch

from coarsegrad.config import ModelConfig, load_preset
from coarsegrad.data.synthetic import synthetic_data
from coarsegrad.models.build import build_model
from coarsegrad.parallel import run_trials
from coarsegrad.quant.spec import ActQuant
from coarsegrad.training.batched import train_batched

ROUNDINGS = ("ceil", "nearest")
STES = ("identity", "relu", "clipped_relu", "log_tailed_relu")
MONOTONE = ("relu", "clipped_relu", "log_tailed_relu")
BITS = (1, 2, 3, 4)
KINDS = ("pairs", "iid")
UNITS = (1, 2, 3, 5, 10, 20)
PLANS = {"quick": {"steps": 2000, "seeds": 3}, "full": {"steps": 10000, "seeds": 10}}


def _problem(kind: str, seed: int, units: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(X, y, W₀) of one seed: the preset's data of model ``kind`` and initial weights."""
    preset = load_preset("synthetic")
    data, model = preset["data"], preset["model"]
    X, y = synthetic_data(data["num_classes"], data["dim"], data["subspace_dim"], data["samples_per_class"],
                          kind=kind, generator=torch.Generator().manual_seed(seed))
    cfg = ModelConfig(**{**model, "units_per_class": units, "alpha": 1.0})  # α does not touch W₀
    weights = build_model(cfg, X.shape[1], data["num_classes"], seed + 1).get_parameter("W")
    return X, y, weights.detach()


def run_grid(experiment: str, settings: list[dict], steps: int, workers: int | None = None,
             progress: bool = True) -> list[dict]:
    """Train every setting (keys kind, seed, units, rounding, ste, bits) for up to ``steps``
    steps; return one record per setting, in order.

    The settings are dealt round-robin to ``workers`` processes (default: CPU count) of
    one torch thread each (tiny matmuls scale badly over threads, and very badly on a
    busy machine), each training its share as batched programs (:func:`train_shard`).
    """
    workers = workers or os.cpu_count() or 1
    shards = [settings[i::workers] for i in range(workers) if settings[i::workers]]
    trials = [(train_shard, {"experiment": experiment, "settings": shard, "steps": steps}) for shard in shards]
    started = time.perf_counter()
    results = [r["records"] for r in run_trials(trials, len(shards), experiment, progress)]
    if progress:
        print(f"{experiment}: {len(settings)} runs, ≤ {steps} steps each, {len(shards)} processes: "
              f"{time.perf_counter() - started:.1f} s", flush=True)
    records: list[dict | None] = [None] * len(settings)
    for i, shard in enumerate(results):
        for j, record in enumerate(shard):
            records[i + j * len(shards)] = record
    return [r for r in records if r is not None]


def train_shard(experiment: str, settings: list[dict], steps: int) -> dict[str, list[dict]]:
    """``{"records": one per setting, in order}``, one batched program per units-per-class."""
    preset = load_preset("synthetic")
    lr, classes = float(preset["train"]["lr"]), int(preset["data"]["num_classes"])
    records: list[dict] = [{} for _ in settings]
    for units in dict.fromkeys(s["units"] for s in settings):
        where = [i for i, s in enumerate(settings) if s["units"] == units]
        group = [settings[i] for i in where]
        problems = {key: _problem(*key) for key in dict.fromkeys((s["kind"], s["seed"], units) for s in group)}
        specs = {key: ActQuant(key[0], None, key[1], key[2])
                 for key in dict.fromkeys((s["bits"], s["ste"], s["rounding"]) for s in group)}
        quants = [specs[s["bits"], s["ste"], s["rounding"]] for s in group]
        stack = [problems[s["kind"], s["seed"], units] for s in group]
        started = time.perf_counter()
        result = train_batched(torch.stack([p[0] for p in stack]), torch.stack([p[1] for p in stack]),
                               torch.stack([p[2] for p in stack]), quants, [lr] * len(group), steps,
                               num_classes=classes)
        seconds = time.perf_counter() - started
        for i, s in enumerate(group):
            records[where[i]] = {
                "experiment": experiment, "dataset": "synthetic", "data": s["kind"], "model": "two_layer",
                "rounding": s["rounding"], "ste": s["ste"], "bits": s["bits"], "seed": s["seed"],
                "alpha": quants[i].alpha, "alpha_rule": quants[i].alpha_rule, "units_per_class": units, "lr": lr, "max_steps": steps,
                "perfect": result.perfect_step[i] is not None, "perfect_step": result.perfect_step[i],
                "train_acc": result.train_acc[i], "final_loss": result.loss[i], "steps": result.steps_run[i],
                "diverged_step": result.diverged_step[i], "batch_seconds": seconds, "batch_runs": len(group),
                "device": "cpu"}
    return {"records": records}


def table_settings(seeds: int) -> list[dict]:
    return [{"kind": k, "seed": seed, "units": 20, "rounding": r, "ste": ste, "bits": b}
            for r in ROUNDINGS for ste in STES for b in BITS for k in KINDS for seed in range(seeds)]


def units_settings(seeds: int) -> list[dict]:
    return [{"kind": "pairs", "seed": seed, "units": m, "rounding": r, "ste": ste, "bits": b}
            for m in UNITS for r in ROUNDINGS for ste in MONOTONE for b in BITS for seed in range(seeds)]


def _cell(group: list[dict]) -> str:
    hits = sorted(r["perfect_step"] for r in group if r["perfect"])
    fails = [r["train_acc"] * 100 for r in group if not r["perfect"]]
    cell = f"{len(hits)}/{len(group)}"
    if hits:
        cell += f" (median step {median(hits):g})"
    if fails:
        low, high = min(fails), max(fails)
        cell += f"; failures end at {low:.1f}%" if low == high else f"; failures end at {low:.1f}–{high:.1f}%"
    return cell


def table_markdown(records: list[dict]) -> str:
    """Per data model: rows rounding × STE, columns bits; cells as :func:`_cell`."""
    records = [r for r in records if r["experiment"] == "synthetic_table"]
    bits = sorted({r["bits"] for r in records})
    parts = []
    for kind in dict.fromkeys(r["data"] for r in records):
        lines = [f"**Data `{kind}`** (runs reaching 100% training accuracy; median step of those; final "
                 f"training accuracy of the others; ≤ {records[0]['max_steps']} steps)\n",
                 "| rounding | STE | " + " | ".join(f"{b} bit{'s' * (b > 1)}" for b in bits) + " |",
                 "| --- | --- | " + " | ".join("---" for _ in bits) + " |"]
        for rounding in dict.fromkeys(r["rounding"] for r in records):
            for ste in dict.fromkeys(r["ste"] for r in records):
                cells = [_cell([r for r in records if (r["data"], r["rounding"], r["ste"], r["bits"])
                                == (kind, rounding, ste, b)]) for b in bits]
                lines.append(f"| {rounding} | {ste} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def units_markdown(records: list[dict]) -> str:
    """Per (rounding, STE) × bits: the smallest units per class with every seed perfect
    (">m_max" if none), then the success counts per m."""
    records = [r for r in records if r["experiment"] == "synthetic_units"]
    bits = sorted({r["bits"] for r in records})
    units = sorted({r["units_per_class"] for r in records})
    head = "| rounding | STE | " + " | ".join(f"{b} bit{'s' * (b > 1)}" for b in bits) + " |"
    rule = "| --- | --- | " + " | ".join("---" for _ in bits) + " |"
    smallest, counts = [head, rule], [head, rule]
    for rounding in dict.fromkeys(r["rounding"] for r in records):
        for ste in dict.fromkeys(r["ste"] for r in records):
            best, count = [], []
            for b in bits:
                per_m = {m: [r for r in records if (r["rounding"], r["ste"], r["bits"], r["units_per_class"])
                             == (rounding, ste, b, m)] for m in units}
                ok = [m for m in units if per_m[m] and all(r["perfect"] for r in per_m[m])]
                best.append(str(ok[0]) if ok else f">{units[-1]}")
                count.append(" ".join(f"{sum(r['perfect'] for r in per_m[m])}/{len(per_m[m])}" for m in units))
            smallest.append(f"| {rounding} | {ste} | " + " | ".join(best) + " |")
            counts.append(f"| {rounding} | {ste} | " + " | ".join(count) + " |")
    return ("Smallest units per class m with every seed perfect (data `pairs`):\n\n" + "\n".join(smallest)
            + f"\n\nPerfect seeds for m = {', '.join(map(str, units))}:\n\n" + "\n".join(counts) + "\n")
