"""``coarsegrad reproduce``: the paper's experiments, as records, tables and plots.

Writes ``OUT/results.json`` (a list of flat records), ``OUT/tables.md`` and PNG
plots, all made from the records. ``quick`` runs few seeds and steps (minutes on 2
CPU cores); ``full`` trains to convergence with more seeds.
"""

from __future__ import annotations

import time
from pathlib import Path

from coarsegrad.config import load_preset
from coarsegrad.experiments import report
from coarsegrad.experiments.pool import run_trials
from coarsegrad.experiments.synthetic import BITS, STES, synthetic_trial
from coarsegrad.records import atomic_write_json, atomic_write_text, environment


def synthetic_trials(full: bool, seeds: int = 10, steps: int | None = None) -> list:
    """STE × bits × seeds of the ``synthetic`` preset (the full run allows 10,000 steps)."""
    preset = load_preset("synthetic")
    if full:
        preset["train"]["steps"] = 10000
    if steps is not None:
        preset["train"]["steps"] = steps
    return [(synthetic_trial, {"data": preset["data"], "model": preset["model"],
                               "train_cfg": preset["train"], "ste": ste, "bits": bits, "seed": seed})
            for ste in STES for bits in BITS for seed in range(seeds)]


def reproduce(full: bool = False, out: str | Path = "runs/reproduce", workers: int | None = None,
              progress: bool = True, seeds: int = 10, steps: int | None = None) -> list[dict]:
    """Run the experiments; write records, tables and plots to ``out``; return the records.

    ``seeds`` and ``steps`` override the mode's defaults (for smoke tests).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    records = run_trials(synthetic_trials(full, seeds, steps), workers, "synthetic", progress)
    env = environment("cpu")
    atomic_write_json(out / "results.json", records)
    atomic_write_json(out / "env.json", {**env, "mode": "full" if full else "quick",
                                         "seconds": time.perf_counter() - started})
    table = report.synthetic_table(records)
    report.plot_curves(records, out / "synthetic_curves.png")
    text = ("## Synthetic: seeds reaching 100% training accuracy\n\n"
            f"Mode: {'full' if full else 'quick'}; machine: {env['platform']}, "
            f"{env['cpu_count']} CPUs; torch {env['torch']}.\n\n" + table)
    atomic_write_text(out / "tables.md", text)
    print(text)
    return records
