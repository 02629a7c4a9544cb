"""Markdown tables and PNG plots, made only from result records."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev
from typing import Iterable

from coarsegrad.io.plots import pyplot, save_png


def _group(records: Iterable[dict], *keys: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[tuple(r[k] for k in keys)].append(r)
    return groups


def mean_std(values: list[float]) -> str:
    """``mean ± std (n)`` in percent for accuracies in [0, 1]."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "–"
    spread = stdev(values) * 100 if len(values) > 1 else 0.0
    return f"{mean(values) * 100:.2f} ± {spread:.2f}"


def synthetic_table(records: list[dict]) -> str:
    """Perfect-classification counts (k/n seeds) per STE × bits, with median steps; the
    float baseline (plain ReLU, ``bits`` None) on a line below."""
    records = [r for r in records if r["experiment"] == "synthetic"]
    floats = [r for r in records if r["bits"] is None]
    records = [r for r in records if r["bits"] is not None]
    stes = list(dict.fromkeys(r["ste"] for r in records))
    bits = sorted({r["bits"] for r in records})
    groups = _group(records, "ste", "bits")
    lines = ["| STE | " + " | ".join(f"{b} bit{'s' * (b > 1)}" for b in bits) + " |",
             "| --- | " + " | ".join("---" for _ in bits) + " |"]
    for ste in stes:
        cells = []
        for b in bits:
            group = groups.get((ste, b), [])
            hits = [r["perfect_step"] for r in group if r["perfect"]]
            cell = f"{len(hits)}/{len(group)}"
            if hits:
                cell += f" (median step {sorted(hits)[len(hits) // 2]})"
            else:
                cell += f" (final acc ≤ {max(r['train_acc'] for r in group) * 100:.1f}%)"
            cells.append(cell)
        lines.append(f"| {ste} | " + " | ".join(cells) + " |")
    if floats:
        hits = [r["perfect_step"] for r in floats if r["perfect"]]
        median = f" (median step {sorted(hits)[len(hits) // 2]})" if hits else ""
        lines.append(f"\nFloat baseline (plain ReLU, same network and steps): {len(hits)}/{len(floats)}{median}.")
    return "\n".join(lines) + "\n"


def accuracy_table(records: list[dict], experiment: str, paper: dict | None = None,
                   float_experiment: str | None = None) -> str:
    """Test accuracy mean ± std (%) over seeds per STE × bits (optionally beside the paper's);
    the float baseline (``bits`` None, or the records of ``float_experiment``) on a line below."""
    floats = [r for r in records if (r["experiment"] == experiment and r["bits"] is None)
              or r["experiment"] == float_experiment]
    records = [r for r in records if r["experiment"] == experiment and r["bits"] is not None]
    stes = list(dict.fromkeys(r["ste"] for r in records))
    bits = sorted({r["bits"] for r in records})
    groups = _group(records, "ste", "bits")
    head = "| STE | " + " | ".join(f"{b} bit{'s' * (b > 1)}" for b in bits)
    rule = "| --- | " + " | ".join("---" for _ in bits)
    if paper:
        head += " | " + " | ".join(f"{b} bits (ICLR 2019)" for b in bits)
        rule += " | " + " | ".join("---" for _ in bits)
    lines = [head + " |", rule + " |"]
    for ste in stes:
        cells = [mean_std([r["test_acc"] for r in groups.get((ste, b), [])]) for b in bits]
        if paper:
            cells += [f"{paper[(ste, b)]:.2f}" if (ste, b) in paper else "–" for b in bits]
        n = len(groups.get((ste, bits[0]), []))
        lines.append(f"| {ste} (n={n}) | " + " | ".join(cells) + " |")
    if floats:
        lines.append(f"\nFloat baseline (plain ReLU, n={len(floats)}): {mean_std([r['test_acc'] for r in floats])}.")
    return "\n".join(lines) + "\n"


def plot_curves(records: list[dict], path: Path, seed: int = 0) -> None:
    """Loss and training accuracy against step, one panel per bits, one line per STE."""
    plt = pyplot()

    chosen = [r for r in records if r.get("curve") and r["seed"] == seed and r["bits"] is not None]
    bits = sorted({r["bits"] for r in chosen})
    if not bits:
        return
    fig, axes = plt.subplots(2, len(bits), figsize=(4.2 * len(bits), 6.5), squeeze=False)
    for col, b in enumerate(bits):
        for r in (r for r in chosen if r["bits"] == b):
            axes[0][col].semilogy(r["curve"]["step"], r["curve"]["loss"], label=r["ste"])
            axes[1][col].plot(r["curve"]["step"], r["curve"]["train_acc"], label=r["ste"])
        axes[0][col].set_title(f"{b} bit{'s' * (b > 1)}, seed {seed}")
        axes[1][col].set_xlabel("step")
    axes[0][0].set_ylabel("training loss")
    axes[1][0].set_ylabel("training accuracy")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def plot_mnist_curves(records: list[dict], path: Path) -> None:
    """Test accuracy per epoch (mean over seeds), one panel per bits, one line per STE."""
    plt = pyplot()

    bits = sorted({r["bits"] for r in records if r.get("curve") and r["bits"] is not None})
    if not bits:
        return
    fig, axes = plt.subplots(1, len(bits), figsize=(4.5 * len(bits), 3.6), squeeze=False)
    for col, b in enumerate(bits):
        for (ste,), group in _group([r for r in records if r["bits"] == b], "ste").items():
            length = min(len(r["curve"]["epoch"]) for r in group)  # a diverged run stops early
            epochs = group[0]["curve"]["epoch"][:length]
            acc = [mean(r["curve"]["test_acc"][i] or 0.0 for r in group) * 100 for i in range(length)]
            axes[0][col].plot(epochs, acc, marker="o", label=f"{ste} (n={len(group)})")
        axes[0][col].set_title(f"{b} bits")
        axes[0][col].set_xlabel("epoch")
    axes[0][0].set_ylabel("test accuracy %")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
