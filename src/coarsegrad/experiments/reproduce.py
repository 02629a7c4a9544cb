"""``coarsegrad reproduce``: the paper's experiments, as records, tables and plots.

Seven experiments (``PLANS`` gives the sizes of the first three and ``lenet5-ordering`` per mode):

* ``synthetic`` — full-batch coarse GD on the orthogonal-subspace problem; seeds
  reaching 100% training accuracy per STE × bits {1, 2, 4}.
* ``mnist_two_layer`` — the paper's network on ``dataset`` (MNIST or Fashion-MNIST; 784 →
  10·50 units, per-class sum); test accuracy mean ± std per STE × bits {1, 2, 4}.
* ``lenet5`` — LeNet-5 with affine-free batch-norm (ICLR 2019 setup), 4 STEs × bits
  ``LENET_BITS[dataset]``; on MNIST in full mode started from a float model trained first.
  Every table has its float row (float seeds of the same network).
* ``lenet5-ordering`` — the 2019 ordering study on MNIST LeNet-5
  (:mod:`coarsegrad.experiments.ordering`); run only when named in ``only``.
* ``full-quant`` — fully quantized MLP and LeNet-5 on ``dataset``: weights × activations ×
  weight method × fixed or learned step (:mod:`coarsegrad.experiments.full_quant`, its own
  ``PLANS`` and nearest rounding whatever ``rounding`` is); run only when named in ``only``.
* ``synthetic-table`` and ``synthetic-units`` — rounding × STE × bits × data × seeds and
  the units-per-class sweep, each one batched program (:mod:`coarsegrad.experiments.synthetic_table`);
  run only when named in ``only``.
* ``theory`` — the theory studies (angles, geometry, landscape, repelled) into
  ``OUT/theory/<study>/`` (:mod:`coarsegrad.theory.runner`), summarised in tables.md.
  Runs by default only in full mode (quick mode: when named, with the studies' quick presets).

``rounding`` (default ``nearest``) is the staircase of ``synthetic``, ``mnist_two_layer`` and
``lenet5``; ``ceil`` reproduces the records made before nearest became the default. The
synthetic table runs both roundings whatever it is, the theory studies ceil.

Writes ``OUT/results.json`` (flat records, :func:`coarsegrad.io.results.write_rows`),
``OUT/tables.md`` and PNG plots, all made from the records. Quick mode takes minutes on 2 CPU cores.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from coarsegrad.config import load_preset
from coarsegrad.data.datasets import find_dataset, not_found_message
from coarsegrad.errors import ConfigError
from coarsegrad.experiments import full_quant, ordering, report, synthetic_table
from coarsegrad.experiments.mnist import ICLR2019_LENET5, float_init_path, mnist_trial
from coarsegrad.experiments.synthetic import BITS, STES, synthetic_trial
from coarsegrad.io.records import atomic_write_json, atomic_write_text, environment
from coarsegrad.io.results import write_rows
from coarsegrad.parallel import run_trials
from coarsegrad.quant.staircase import DEFAULT_ROUNDING, check_rounding

EXPERIMENTS = ("synthetic", "mnist_two_layer", "lenet5", "theory", "synthetic-table", "synthetic-units",
               "lenet5-ordering", "full-quant")
FULL_EXPERIMENTS = ("synthetic", "mnist_two_layer", "lenet5", "theory")
QUICK_EXPERIMENTS = ("synthetic", "mnist_two_layer", "lenet5")
# Overrides of each theory study's defaults (full) or quick preset (quick).
THEORY = {"quick": {}, "full": {"landscape": {"bits": (1, 2, 4)}}}
TWO_LAYER = {"model": "two_layer", "units_per_class": 50, "init_scale": 1.0}
LENET = {"model": "lenet5"}
DATASETS = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}  # --dataset choices and their titles
LENET_BITS = {"mnist": (2, 4), "fashion-mnist": (1, 2, 4)}
# A plan entry "<name>:<dataset>" replaces "<name>" for that dataset (see plan_for).
PLANS = {
    "quick": {"synthetic_steps": 2000, "synthetic_seeds": 10,
              "two_layer": {"seeds": 2, "subset": None, "train": {"optimizer": "momentum", "lr": 0.01, "batch_size": 128,
                                                  "epochs": 1}},
              "lenet5": {"seeds": 1, "subset": 6000, "float_init": None,
                         "train": {"optimizer": "momentum", "lr": 0.05, "batch_size": 128, "epochs": 1}},
              "lenet5_ordering": {"seeds": 1, "subset": 6000, "bits": 2,
                                  "float_init": {"optimizer": "momentum", "lr": 0.05, "batch_size": 128,
                                                 "epochs": 1, "schedule": "cosine", "weight_decay": 5e-4},
                                  "scratch": {"optimizer": "momentum", "lr": 0.1, "batch_size": 128,
                                              "epochs": 1, "schedule": "cosine", "weight_decay": 5e-4},
                                  "from_float": {"optimizer": "momentum", "lr": 0.1, "batch_size": 128,
                                                 "epochs": 1, "schedule": "cosine", "weight_decay": 5e-4}}},
    "full": {"synthetic_steps": 10000, "synthetic_seeds": 10,
             "two_layer": {"seeds": 3, "subset": None, "train": {"optimizer": "momentum", "lr": 0.01, "batch_size": 128,
                                                 "epochs": 10, "schedule": "cosine"}},
             "lenet5": {"seeds": 3, "subset": None,
                        "float_init": {"optimizer": "momentum", "lr": 0.05, "batch_size": 128, "epochs": 4,
                                       "schedule": "cosine", "weight_decay": 5e-4},
                        "train": {"optimizer": "momentum", "lr": 0.01, "batch_size": 128, "epochs": 3,
                                  "schedule": "cosine", "weight_decay": 5e-4}},
             # from scratch (no float init), 2 epochs: sized for a 2-core CPU
             "lenet5:fashion-mnist": {"seeds": 3, "subset": None, "float_init": None,
                                      "train": {"optimizer": "momentum", "lr": 0.05, "batch_size": 128,
                                                "epochs": 2, "schedule": "cosine", "weight_decay": 5e-4}},
             # the 2019 ordering study (issue 13 item 5); float_init as the lenet5 float init above
             # (2 epochs each: sized for a 2-core CPU; the 2019 length is 50 epochs)
             "lenet5_ordering": {"seeds": 3, "subset": None, "bits": 2,
                                 "float_init": {"optimizer": "momentum", "lr": 0.05, "batch_size": 128,
                                                "epochs": 2, "schedule": "cosine", "weight_decay": 5e-4},
                                 "scratch": {"optimizer": "momentum", "lr": 0.1, "batch_size": 128,
                                             "epochs": 2, "schedule": "cosine", "weight_decay": 5e-4},
                                 "from_float": {"optimizer": "momentum", "lr": 0.1, "batch_size": 128,
                                                "epochs": 2, "schedule": "cosine", "weight_decay": 5e-4}}},
}


def plan_for(plan: dict, name: str, dataset: str) -> dict:
    """The plan entry ``name`` of a mode for ``dataset`` (``"name:dataset"`` where the plan has one)."""
    entry: dict = plan.get(f"{name}:{dataset}", plan[name])
    return entry


def record_name(experiment: str, dataset: str) -> str:
    """The records' ``experiment`` on ``dataset``: MNIST keeps the names (``mnist_two_layer``,
    ``lenet5``, ``lenet5_float``), others say the dataset (``fashion_mnist_two_layer``,
    ``fashion_mnist_lenet5``, ``fashion_mnist_lenet5_float``)."""
    if dataset == "mnist":
        return experiment
    return dataset.replace("-", "_") + "_" + experiment.removeprefix("mnist_")


def synthetic_trials(plan: dict, seeds: int | None = None, rounding: str = DEFAULT_ROUNDING) -> list:
    """STE × bits × seeds of the ``synthetic`` preset, and the float baseline (ste ``float``)."""
    preset = load_preset("synthetic")
    preset["train"]["steps"] = plan["synthetic_steps"]
    preset["model"]["rounding"] = rounding
    settings = [(ste, bits) for ste in STES for bits in BITS] + [("float", None)]
    return [(synthetic_trial, {"data": preset["data"], "model": preset["model"], "train_cfg": preset["train"],
                               "ste": ste, "bits": bits, "seed": seed})
            for ste, bits in settings for seed in range(seeds or plan["synthetic_seeds"])]


def two_layer_trials(plan: dict, data_dir: str | None, device: str, seeds: int | None = None,
                     dataset: str = "mnist", rounding: str = DEFAULT_ROUNDING) -> list:
    p = plan_for(plan, "two_layer", dataset)
    settings = [(ste, bits) for ste in STES for bits in BITS] + [("float", None)]  # + the float baseline
    model = {**TWO_LAYER, "rounding": rounding}
    return [(mnist_trial, {"experiment": record_name("mnist_two_layer", dataset), "model": model,
                           "ste": ste, "bits": bits, "seed": seed, "train_cfg": p["train"], "dataset": dataset,
                           "data_dir": data_dir, "device": device, "train_subset": p["subset"]})
            for ste, bits in settings for seed in range(seeds or p["seeds"])]


def lenet_trials(plan: dict, out: Path, data_dir: str | None, device: str, seeds: int | None = None,
                 float_init: bool = False, dataset: str = "mnist", rounding: str = DEFAULT_ROUNDING) -> list:
    """The float runs (``float_init=True``) or the quantized runs of LeNet-5. The float runs are
    the float row; with a ``float_init`` plan they train with it and the quantized runs start
    from them, otherwise they train with the quantized runs' ``train`` plan."""
    p = plan_for(plan, "lenet5", dataset)
    common = {"experiment": record_name("lenet5", dataset), "model": {**LENET, "rounding": rounding},
              "dataset": dataset, "data_dir": data_dir, "device": device, "train_subset": p["subset"]}
    if float_init:
        return [(mnist_trial, {**common, "experiment": record_name("lenet5_float", dataset), "ste": "relu",
                               "bits": None, "seed": seed, "train_cfg": p["float_init"] or p["train"],
                               "save_to": str(float_init_path(out, seed)) if p["float_init"] else None})
                for seed in range(seeds or p["seeds"])]
    init = (lambda seed: str(float_init_path(out, seed))) if p["float_init"] else (lambda seed: None)
    return [(mnist_trial, {**common, "ste": ste, "bits": bits, "seed": seed, "train_cfg": p["train"],
                           "init_from": init(seed)})
            for ste in STES for bits in LENET_BITS[dataset] for seed in range(seeds or p["seeds"])]


def default_experiments(full: bool) -> tuple[str, ...]:
    """What runs without ``only``: the paper's four in full mode, all but ``theory`` in quick mode."""
    return FULL_EXPERIMENTS if full else QUICK_EXPERIMENTS


def run_theory(full: bool, out: Path, workers: int | None = None, progress: bool = True,
               seeds: int | None = None, data_dir: str | None = None) -> dict[str, list[dict]]:
    """Every theory study into ``out/<study>/`` (full: the study defaults; quick: the quick
    presets; ``THEORY`` overrides); ``{study: records}``. repelled is skipped without MNIST."""
    from coarsegrad.theory import runner

    mode = "full" if full else "quick"
    results: dict[str, list[dict]] = {}
    for study in runner.STUDIES:
        kw: dict = dict(THEORY[mode].get(study, {}))
        if study in ("landscape", "repelled"):
            kw["workers"] = workers
        if seeds is not None and study != "angles":
            kw["seeds"] = seeds
        if study == "repelled":
            if find_dataset("mnist", data_dir) is None:
                print(f"reproduce: skipping theory/repelled: {not_found_message('mnist', data_dir)}", file=sys.stderr)
                continue
            kw["data_dir"] = data_dir
        cfg = runner.make_config(study, not full, **kw)
        command = f"coarsegrad reproduce --{mode} --only theory --out {out.parent}"
        results[study] = runner.run_study(study, cfg, out / study, command, quick=not full, progress=progress)
    return results


def reproduce(full: bool = False, out: str | Path = "runs/reproduce", workers: int | None = None,
              progress: bool = True, seeds: int | None = None, only: tuple[str, ...] | None = None,
              data_dir: str | None = None, device: str = "cpu", dataset: str = "mnist",
              rounding: str = DEFAULT_ROUNDING) -> list[dict]:
    """Run the experiments in ``only`` (default :func:`default_experiments`); write records,
    tables and plots to ``out``; return the records (theory records stay in ``out/theory``).

    ``dataset`` (``DATASETS``) is the data of ``mnist_two_layer``, ``lenet5`` and ``full-quant``;
    ``lenet5-ordering`` is always MNIST. ``seeds`` overrides the plan's seed counts (for smoke
    tests); ``rounding``: see the module docstring.
    """
    check_rounding(rounding)
    only = default_experiments(full) if only is None else only
    unknown = set(only) - set(EXPERIMENTS)
    if unknown:
        raise ConfigError("only", f"unknown experiment(s) {sorted(unknown)}; valid: {', '.join(EXPERIMENTS)}")
    if dataset not in DATASETS:
        raise ConfigError("dataset", f"must be one of {', '.join(DATASETS)}, got {dataset!r}")
    for names, data in ((("mnist_two_layer", "lenet5", "full-quant"), dataset), (("lenet5-ordering",), "mnist")):
        if set(only) & set(names) and find_dataset(data, data_dir) is None:
            print(f"reproduce: skipping {', '.join(x for x in names if x in only)}: "
                  f"{not_found_message(data, data_dir)}", file=sys.stderr)
            only = tuple(x for x in only if x not in names)
    plan: dict[str, Any] = PLANS["full" if full else "quick"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = 1 if device.startswith("cuda") else workers
    env = environment(device)  # before any output: --out may be a tracked results folder (git -dirty)
    started = time.perf_counter()
    records: list[dict] = []

    def add(trials: list, desc: str) -> None:
        """Run ``trials``, saving every record so far after each trial (an interrupted run
        keeps its finished trials in results.json)."""
        done = len(records)

        def save(finished: list[dict]) -> None:
            write_rows(out / "results.json", records[:done] + finished)

        records.extend(run_trials(trials, workers, desc, progress, on_result=save))
        write_rows(out / "results.json", records)

    if "synthetic" in only:
        add(synthetic_trials(plan, seeds, rounding), "synthetic")
    for name, settings in (("synthetic-table", synthetic_table.table_settings),
                           ("synthetic-units", synthetic_table.units_settings)):
        if name in only:
            table_plan = synthetic_table.PLANS["full" if full else "quick"]
            records.extend(synthetic_table.run_grid(name.replace("-", "_"), settings(seeds or table_plan["seeds"]),
                                                    table_plan["steps"], workers, progress))
            write_rows(out / "results.json", records)
    if "mnist_two_layer" in only:
        add(two_layer_trials(plan, data_dir, device, seeds, dataset, rounding), f"{dataset} 2-layer")
    if "lenet5" in only:
        add(lenet_trials(plan, out, data_dir, device, seeds, True, dataset, rounding), f"{dataset} lenet5 float")
        add(lenet_trials(plan, out, data_dir, device, seeds, dataset=dataset, rounding=rounding),
            f"{dataset} lenet5")
    if "lenet5-ordering" in only:
        ordering_plan = plan["lenet5_ordering"]
        add(ordering.float_trials(ordering_plan, out, data_dir, device, seeds), "lenet5-ordering float")
        add(ordering.quantized_trials(ordering_plan, out, data_dir, device, seeds, rounding),
            "lenet5-ordering")
    if "full-quant" in only:
        add(full_quant.trials(full_quant.PLANS["full" if full else "quick"], out, data_dir, device, seeds, dataset),
            f"{dataset} full-quant")
        atomic_write_json(out / full_quant.DEPLOY_FILE, full_quant.deployment(records, data_dir))
    theory = run_theory(full, out / "theory", workers, progress, seeds, data_dir) if "theory" in only else None
    write_rows(out / "results.json", records)
    atomic_write_json(out / "env.json", {**env, "mode": "full" if full else "quick", "experiments": list(only),
                                         "dataset": dataset, "rounding": rounding,
                                         "seconds": time.perf_counter() - started})
    text = write_report(records, out, env, "full" if full else "quick", theory)
    print(text)
    return records


def write_report(records: list[dict], out: Path, env: dict, mode: str,
                 theory: dict[str, list[dict]] | None = None) -> str:
    """tables.md and the plots, from ``records`` only; ``theory`` ({study: records}) adds
    the "Theory lab" summary (:func:`coarsegrad.theory.summary.theory_summary`)."""
    parts = [f"Mode: {mode}; machine: {env['platform']}, {env['cpu_count']} CPUs, device {env['device']}"
             f"{' (' + str(env['gpu']) + ')' if env.get('gpu') else ''}; torch {env['torch']}.\n"]
    if any(r["experiment"] == "synthetic" for r in records):
        parts.append("## Synthetic: seeds reaching 100% training accuracy\n\n" + report.synthetic_table(records))
        report.plot_curves([r for r in records if r["experiment"] == "synthetic"], out / "synthetic_curves.png")
    if any(r["experiment"] == "synthetic_table" for r in records):
        parts.append("## Synthetic table: rounding × STE × bits × data (batched)\n\n"
                     + synthetic_table.table_markdown(records))
    if any(r["experiment"] == "synthetic_units" for r in records):
        parts.append("## Synthetic: how many units per class are enough (batched)\n\n"
                     + synthetic_table.units_markdown(records))
    for dataset, title in DATASETS.items():
        two_layer, lenet = record_name("mnist_two_layer", dataset), record_name("lenet5", dataset)
        if any(r["experiment"] == two_layer for r in records):
            parts.append(f"## {title}, two-linear-layer network: test accuracy % (mean ± std over seeds)\n\n"
                         + report.accuracy_table(records, two_layer))
        if any(r["experiment"] == lenet for r in records):
            paper = ICLR2019_LENET5 if dataset == "mnist" else None  # the 2019 table is MNIST only
            parts.append(f"## {title}, LeNet-5: test accuracy % (mean ± std over seeds)\n\n"
                         + report.accuracy_table(records, lenet, paper, record_name("lenet5_float", dataset)))
            report.plot_mnist_curves([r for r in records if r["experiment"] == lenet], out / f"{lenet}_curves.png")
    if any(r["experiment"] in ordering.EXPERIMENTS.values() for r in records):
        parts.append(f"## MNIST, LeNet-5, {ordering.study_bits(records)} bits: the ICLR 2019 ordering "
                     "(is identity behind?)\n\n"
                     + ordering.ordering_markdown(records))
    deploy = full_quant.read_deployment(out / full_quant.DEPLOY_FILE)
    for dataset, title in DATASETS.items():
        for model in full_quant.MODELS:
            if any(r["experiment"] == full_quant.EXPERIMENT and (r["model"], r["dataset"]) == (model, dataset)
                   for r in records):
                parts.append(f"## {title}, {full_quant.TITLES[model]}, fully quantized: test accuracy % "
                             "(mean ± std over seeds)\n\n" + full_quant.setup_line(records, model)
                             + full_quant.grid_markdown(records, model, dataset, full_quant.deployment_columns(deploy)))
    if theory:
        from coarsegrad.theory.summary import theory_summary

        summary = theory_summary(theory)
        if summary:
            parts.append(summary)
    text = "\n".join(parts)
    atomic_write_text(out / "tables.md", text)
    return text
