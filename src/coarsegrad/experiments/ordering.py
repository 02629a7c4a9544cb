"""The ICLR 2019 ordering on LeNet-5 (issue 13 item 5): is the identity STE behind?

Yin et al. (ICLR 2019) report identity clearly behind relu and clipped_relu on MNIST LeNet-5
at 2 bits (98.49 vs 99.24 / 99.23). Two settings, each STE {identity, relu, clipped_relu} ×
seeds, ``plan["bits"]`` bits (the plan is ``PLANS[mode]["lenet5_ordering"]`` in
:mod:`coarsegrad.experiments.reproduce`):

* ``scratch`` — trained from a random init with ``plan["scratch"]`` (records
  ``lenet5_ordering_scratch``);
* ``from_float`` — each seed first trains one float LeNet-5 with ``plan["float_init"]``
  (records ``lenet5_ordering_float``, the float row), and every STE of that seed starts from it
  and trains with ``plan["from_float"]`` (records ``lenet5_ordering_from_float``).

The per-seed gap is identity's test accuracy minus the best monotone STE's (max of relu and
clipped_relu) of the same seed and setting, in percentage points; the seed spread is the
largest standard deviation over seeds among the three STEs of the setting.
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean, stdev

from coarsegrad.experiments.mnist import ICLR2019_LENET5, float_init_path, mnist_trial
from coarsegrad.experiments.report import mean_std
from coarsegrad.quant.staircase import DEFAULT_ROUNDING

STES = ("identity", "relu", "clipped_relu")
MONOTONE = ("relu", "clipped_relu")
SETTINGS = {"scratch": "from scratch", "from_float": "from a float model"}  # setting → title
EXPERIMENTS = {"scratch": "lenet5_ordering_scratch", "from_float": "lenet5_ordering_from_float",
               "float": "lenet5_ordering_float"}
NAME = "lenet5_ordering"  # float-init file prefix


def float_trials(plan: dict, out: Path, data_dir: str | None, device: str, seeds: int | None = None) -> list:
    """One float LeNet-5 per seed, saved for the ``from_float`` runs of that seed."""
    return [(mnist_trial, {"experiment": EXPERIMENTS["float"], "model": {"model": "lenet5"}, "ste": "relu",
                           "bits": None, "seed": seed, "train_cfg": plan["float_init"], "data_dir": data_dir,
                           "device": device, "train_subset": plan["subset"],
                           "save_to": str(float_init_path(out, seed, NAME))})
            for seed in range(seeds or plan["seeds"])]


def quantized_trials(plan: dict, out: Path, data_dir: str | None, device: str, seeds: int | None = None,
                     rounding: str = DEFAULT_ROUNDING) -> list:
    """Setting × STE × seed; the ``from_float`` runs start from their seed's float model."""
    model = {"model": "lenet5", "rounding": rounding}
    return [(mnist_trial, {"experiment": EXPERIMENTS[setting], "model": model, "ste": ste,
                           "bits": plan["bits"], "seed": seed, "train_cfg": plan[setting], "data_dir": data_dir,
                           "device": device, "train_subset": plan["subset"],
                           "init_from": str(float_init_path(out, seed, NAME)) if setting == "from_float" else None})
            for setting in SETTINGS for ste in STES for seed in range(seeds or plan["seeds"])]


def seed_gaps(records: list[dict], setting: str) -> dict[int, float]:
    """{seed: identity − best monotone test accuracy, in points} over the seeds that have all three STEs."""
    acc = {(r["ste"], r["seed"]): r["test_acc"] for r in records if r["experiment"] == EXPERIMENTS[setting]}
    seeds = sorted({seed for _, seed in acc})
    return {seed: (acc[("identity", seed)] - max(acc[(m, seed)] for m in MONOTONE)) * 100
            for seed in seeds if all((ste, seed) in acc for ste in STES)}


def seed_spread(records: list[dict], setting: str) -> float | None:
    """Largest std over seeds (points) among the STEs of ``setting``; None with fewer than 2 seeds."""
    groups = [[r["test_acc"] for r in records if r["experiment"] == EXPERIMENTS[setting] and r["ste"] == ste]
              for ste in STES]
    groups = [g for g in groups if len(g) > 1]
    return max(stdev(g) * 100 for g in groups) if groups else None


def verdict(records: list[dict]) -> str:
    """One sentence: per setting, whether identity is behind by more than the seed spread."""
    clauses = []
    for setting, title in SETTINGS.items():
        gaps, spread = seed_gaps(records, setting), seed_spread(records, setting)
        if not gaps:
            continue
        gap = mean(gaps.values())
        if spread is None:
            clauses.append(f"{title}: mean gap {gap:+.2f} points, one seed (no spread to compare)")
            continue
        behind = gap < 0 and -gap > spread
        clauses.append(f"{title}: {'behind by more than' if behind else 'not behind by more than'} the seed spread "
                       f"(mean gap {gap:+.2f} vs spread {spread:.2f} points)")
    return "Identity vs the best monotone STE — " + "; ".join(clauses) + ".\n" if clauses else ""


def setup_line(records: list[dict]) -> str:
    """How each setting trained, read from the records' resolved configs."""
    parts = []
    for setting, title in SETTINGS.items():
        r = next((r for r in records if r["experiment"] == EXPERIMENTS[setting] and r.get("config")), None)
        if r is not None:
            t = r["config"]["train"]
            subset = f", {r['train_subset']} training images" if r.get("train_subset") else ""
            parts.append(f"{title}: {t['optimizer']} lr {t['lr']}, {t['schedule']}, {t['epochs']} epochs, "
                         f"batch {t['batch_size']}, weight decay {t['weight_decay']}{subset}")
    return "Setup — " + "; ".join(parts) + ".\n\n" if parts else ""


def study_bits(records: list[dict]) -> int:
    """The bit width of the study's quantized records."""
    bits: int = next(r["bits"] for r in records if r["experiment"] in (EXPERIMENTS["scratch"], EXPERIMENTS["from_float"]))
    return bits


def ordering_markdown(records: list[dict]) -> str:
    """The setup, mean ± std per STE × setting beside the ICLR 2019 column (``n``, and how many
    runs diverged), the float row, the per-seed gaps and the verdict sentence."""
    bits = study_bits(records)
    lines = ["| STE | " + " | ".join(SETTINGS.values()) + f" | {bits} bits (ICLR 2019) |",
             "| --- | " + " | ".join("---" for _ in SETTINGS) + " | --- |"]
    for ste in STES:
        cells = []
        for setting in SETTINGS:
            group = [r for r in records if r["experiment"] == EXPERIMENTS[setting] and r["ste"] == ste]
            diverged = sum(r.get("diverged_step") is not None for r in group)
            cells.append(f"{mean_std([r['test_acc'] for r in group])} (n={len(group)}"
                         f"{f', {diverged} diverged' if diverged else ''})")
        paper = ICLR2019_LENET5.get((ste, bits))
        lines.append(f"| {ste} | " + " | ".join(cells) + f" | {'–' if paper is None else f'{paper:.2f}'} |")
    floats = [r["test_acc"] for r in records if r["experiment"] == EXPERIMENTS["float"]]
    if floats:
        lines.append(f"\nFloat baseline (plain ReLU, the from-float starting points, n={len(floats)}): "
                     f"{mean_std(floats)}.")
    lines += ["", "Per-seed gap, identity − best monotone STE (relu, clipped_relu), percentage points:", "",
              "| setting | per seed | mean ± std |", "| --- | --- | --- |"]
    for setting, title in SETTINGS.items():
        gaps = seed_gaps(records, setting)
        if gaps:
            values = list(gaps.values())
            spread = stdev(values) if len(values) > 1 else 0.0
            per_seed = ", ".join(f"seed {s}: {g:+.2f}" for s, g in gaps.items())
            lines.append(f"| {title} | {per_seed} | {mean(values):+.2f} ± {spread:.2f} |")
    return setup_line(records) + "\n".join(lines) + "\n\n" + verdict(records)
