"""``coarsegrad reproduce``: the paper's experiments, as records, tables and plots.

Three experiments (``PLANS`` gives their sizes per mode):

* ``synthetic`` — full-batch coarse GD on the orthogonal-subspace problem; seeds
  reaching 100% training accuracy per STE × bits {1, 2, 4}.
* ``mnist_two_layer`` — the paper's network on MNIST (784 → 10·50 units, per-class
  sum); test accuracy mean ± std per STE × bits {1, 2, 4}.
* ``lenet5`` — LeNet-5 with affine-free batch-norm (ICLR 2019 setup), bits {2, 4} ×
  4 STEs; in full mode started from a float model trained first.

Writes ``OUT/results.json`` (flat records), ``OUT/tables.md`` and PNG plots, all
made from the records. Quick mode takes minutes on 2 CPU cores.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from coarsegrad.config import load_preset
from coarsegrad.datasets import find_dataset, not_found_message
from coarsegrad.errors import ConfigError
from coarsegrad.experiments import report
from coarsegrad.experiments.mnist import ICLR2019_LENET5, float_init_path, mnist_trial
from coarsegrad.experiments.pool import run_trials
from coarsegrad.experiments.synthetic import BITS, STES, synthetic_trial
from coarsegrad.records import atomic_write_json, atomic_write_text, environment

EXPERIMENTS = ("synthetic", "mnist_two_layer", "lenet5")
TWO_LAYER = {"model": "two_layer", "units_per_class": 50, "init_scale": 1.0}
LENET = {"model": "lenet5"}
PLANS = {
    "quick": {"synthetic_steps": 2000, "synthetic_seeds": 10,
              "two_layer": {"seeds": 2, "train": {"optimizer": "momentum", "lr": 0.01, "batch_size": 128,
                                                  "epochs": 1}},
              "lenet5": {"seeds": 1, "subset": 6000, "float_init": None,
                         "train": {"optimizer": "momentum", "lr": 0.05, "batch_size": 128, "epochs": 1}}},
    "full": {"synthetic_steps": 10000, "synthetic_seeds": 10,
             "two_layer": {"seeds": 3, "train": {"optimizer": "momentum", "lr": 0.01, "batch_size": 128,
                                                 "epochs": 10, "schedule": "cosine"}},
             "lenet5": {"seeds": 3, "subset": None,
                        "float_init": {"optimizer": "momentum", "lr": 0.05, "batch_size": 128, "epochs": 10,
                                       "schedule": "cosine", "weight_decay": 5e-4},
                        "train": {"optimizer": "momentum", "lr": 0.01, "batch_size": 128, "epochs": 10,
                                  "schedule": "cosine", "weight_decay": 5e-4}}},
}


def synthetic_trials(plan: dict, seeds: int | None = None) -> list:
    """STE × bits × seeds of the ``synthetic`` preset."""
    preset = load_preset("synthetic")
    preset["train"]["steps"] = plan["synthetic_steps"]
    return [(synthetic_trial, {"data": preset["data"], "model": preset["model"], "train_cfg": preset["train"],
                               "ste": ste, "bits": bits, "seed": seed})
            for ste in STES for bits in BITS for seed in range(seeds or plan["synthetic_seeds"])]


def two_layer_trials(plan: dict, data_dir: str | None, device: str, seeds: int | None = None) -> list:
    p = plan["two_layer"]
    return [(mnist_trial, {"experiment": "mnist_two_layer", "model": TWO_LAYER, "ste": ste, "bits": bits,
                           "seed": seed, "train_cfg": p["train"], "data_dir": data_dir, "device": device})
            for ste in STES for bits in BITS for seed in range(seeds or p["seeds"])]


def lenet_trials(plan: dict, out: Path, data_dir: str | None, device: str, seeds: int | None = None,
                 float_init: bool = False) -> list:
    """The float-init runs (``float_init=True``) or the quantized runs of LeNet-5."""
    p = plan["lenet5"]
    common = {"experiment": "lenet5", "model": LENET, "data_dir": data_dir, "device": device,
              "train_subset": p["subset"]}
    if float_init:
        return [(mnist_trial, {**common, "experiment": "lenet5_float", "ste": "relu", "bits": None,
                               "seed": seed, "train_cfg": p["float_init"],
                               "save_to": str(float_init_path(out, seed))})
                for seed in range(seeds or p["seeds"])]
    init = (lambda seed: str(float_init_path(out, seed))) if p["float_init"] else (lambda seed: None)
    return [(mnist_trial, {**common, "ste": ste, "bits": bits, "seed": seed, "train_cfg": p["train"],
                           "init_from": init(seed)})
            for ste in STES for bits in (2, 4) for seed in range(seeds or p["seeds"])]


def reproduce(full: bool = False, out: str | Path = "runs/reproduce", workers: int | None = None,
              progress: bool = True, seeds: int | None = None, only: tuple[str, ...] = EXPERIMENTS,
              data_dir: str | None = None, device: str = "cpu") -> list[dict]:
    """Run the experiments in ``only``; write records, tables and plots to ``out``; return the records.

    ``seeds`` overrides the plan's seed counts (for smoke tests).
    """
    unknown = set(only) - set(EXPERIMENTS)
    if unknown:
        raise ConfigError("only", f"unknown experiment(s) {sorted(unknown)}; valid: {', '.join(EXPERIMENTS)}")
    if set(only) & {"mnist_two_layer", "lenet5"} and find_dataset("mnist", data_dir) is None:
        print(f"reproduce: skipping the MNIST experiments: {not_found_message('mnist', data_dir)}",
              file=sys.stderr)
        only = tuple(x for x in only if x == "synthetic")
    plan = PLANS["full" if full else "quick"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = 1 if device.startswith("cuda") else workers
    started = time.perf_counter()
    records: list[dict] = []
    if "synthetic" in only:
        records += run_trials(synthetic_trials(plan, seeds), workers, "synthetic", progress)
    if "mnist_two_layer" in only:
        records += run_trials(two_layer_trials(plan, data_dir, device, seeds), workers, "mnist 2-layer", progress)
    if "lenet5" in only:
        if plan["lenet5"]["float_init"]:
            records += run_trials(lenet_trials(plan, out, data_dir, device, seeds, float_init=True), workers,
                                  "lenet5 float init", progress)
        records += run_trials(lenet_trials(plan, out, data_dir, device, seeds), workers, "lenet5", progress)
    env = environment(device)
    atomic_write_json(out / "results.json", records)
    atomic_write_json(out / "env.json", {**env, "mode": "full" if full else "quick", "experiments": list(only),
                                         "seconds": time.perf_counter() - started})
    text = write_report(records, out, env, "full" if full else "quick")
    print(text)
    return records


def write_report(records: list[dict], out: Path, env: dict, mode: str) -> str:
    """tables.md and the plots, from ``records`` only."""
    parts = [f"Mode: {mode}; machine: {env['platform']}, {env['cpu_count']} CPUs, device {env['device']}"
             f"{' (' + str(env['gpu']) + ')' if env.get('gpu') else ''}; torch {env['torch']}.\n"]
    if any(r["experiment"] == "synthetic" for r in records):
        parts.append("## Synthetic: seeds reaching 100% training accuracy\n\n" + report.synthetic_table(records))
        report.plot_curves([r for r in records if r["experiment"] == "synthetic"], out / "synthetic_curves.png")
    if any(r["experiment"] == "mnist_two_layer" for r in records):
        parts.append("## MNIST, two-linear-layer network: test accuracy % (mean ± std over seeds)\n\n"
                     + report.accuracy_table(records, "mnist_two_layer"))
    if any(r["experiment"] == "lenet5" for r in records):
        parts.append("## MNIST, LeNet-5: test accuracy % (mean ± std over seeds)\n\n"
                     + report.accuracy_table(records, "lenet5", ICLR2019_LENET5))
        report.plot_mnist_curves([r for r in records if r["experiment"] == "lenet5"], out / "lenet5_curves.png")
    text = "\n".join(parts)
    atomic_write_text(out / "tables.md", text)
    return text
