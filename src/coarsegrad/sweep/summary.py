"""Aggregate a sweep folder: a markdown table over the swept axes and one plot per axis.

Made only from ``trials.jsonl`` (last result per trial id). A group is one combination
of axis values; over its ``ok`` trials (n seeds) it reports

- success = #(train_acc = 1, i.e. perfect training accuracy) / n (diverged runs count as 0),
- steps to perfect, final loss, train accuracy and (when the data has a test split)
  test accuracy: mean ± sample std (ddof 1) over the trials that have the number,
- failed: trials without a result (worker died, bad config) — not in n.

Plots (``plots/<axis>.png``, matplotlib Agg, imported only here): success rate and mean
final loss against each axis, one line per value of a second axis (the first string-valued
one, e.g. the STE), averaged over the remaining axes and seeds.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from coarsegrad.errors import ConfigError
from coarsegrad.io.plots import pyplot, save_png
from coarsegrad.io.records import atomic_write_text
from coarsegrad.sweep.store import TRIALS_FILE, latest_trials


def _axes(out: Path, records: list[dict[str, Any]]) -> list[str]:
    try:
        return [a["field"] for a in json.loads((out / "sweep.json").read_text(encoding="utf-8"))["axes"]]
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        return list(records[0]["params"]) if records else []


def _stat(values: list[float | None], digits: int = 4) -> str:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "–"
    spread = f" ± {stdev(finite):.{digits}g}" if len(finite) > 1 else ""
    return f"{mean(finite):.{digits}g}{spread}"


def group_rows(records: list[dict[str, Any]], axes: list[str]) -> list[dict[str, Any]]:
    """One row per axis-value combination: values, n, failed, success and the metric lists."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        groups[tuple(record["params"].get(a) for a in axes)].append(record)
    rows = []
    for key, group in groups.items():
        ok = [r for r in group if r["status"] == "ok"]
        def metric(name: str, ok: list = ok) -> list:
            return [r["metrics"].get(name) for r in ok]
        perfect = [bool(r["metrics"].get("perfect")) for r in ok]
        rows.append({"values": dict(zip(axes, key, strict=False)), "n": len(ok), "failed": len(group) - len(ok),
                     "success": sum(perfect) / len(ok) if ok else None,
                     "perfect_step": [s for s, p in zip(metric("perfect_step"), perfect, strict=False) if p],
                     "final_loss": metric("final_loss"), "train_acc": metric("train_acc"),
                     "test_acc": metric("test_acc"),
                     "diverged": sum(r["metrics"].get("diverged_step") is not None for r in ok)})
    return sorted(rows, key=lambda row: tuple(_order(row["values"][a]) for a in axes))


def _order(value: Any) -> tuple:
    return (1, value) if isinstance(value, str) else (0, float(value))


def markdown_table(rows: list[dict[str, Any]], axes: list[str]) -> str:
    """The summary table (see the module docstring for the columns)."""
    with_test = any(v is not None for row in rows for v in row.get("test_acc", []))
    head = [*axes, "n", "success", "steps to perfect", "final loss", "train acc",
            *(["test acc"] if with_test else []), "diverged", "failed"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        success = "–" if row["success"] is None else f"{row['success']:.2f} ({round(row['success'] * row['n'])}/{row['n']})"
        cells = [*(str(row["values"][a]) for a in axes), str(row["n"]), success,
                 _stat(row["perfect_step"]), _stat(row["final_loss"], 3), _stat(row["train_acc"], 3),
                 *([_stat(row.get("test_acc", []), 3)] if with_test else []), str(row["diverged"]), str(row["failed"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot_axis(rows: list[dict[str, Any]], axes: list[str], axis: str, path: Path) -> None:
    plt = pyplot()

    others = [a for a in axes if a != axis]
    hue = next((a for a in others if any(isinstance(r["values"][a], str) for r in rows)), others[0] if others else None)
    xs = sorted({r["values"][axis] for r in rows}, key=_order)
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    fig, (ax_s, ax_l) = plt.subplots(1, 2, figsize=(10, 4))
    for label in sorted({r["values"][hue] for r in rows}, key=str) if hue else [None]:
        chosen = [r for r in rows if hue is None or r["values"][hue] == label]
        success, loss, counts = [], [], []
        for x in xs:
            at = [r for r in chosen if r["values"][axis] == x and r["n"]]
            n = sum(r["n"] for r in at)
            counts.append(n)
            success.append(sum(r["success"] * r["n"] for r in at) / n if n else float("nan"))
            losses = [v for r in at for v in r["final_loss"] if v is not None]
            loss.append(mean(losses) if losses else float("nan"))
        pos = xs if numeric else list(range(len(xs)))
        name = f"{hue}={label}" if hue else "all"
        n_text = str(min(counts)) if min(counts) == max(counts) else f"{min(counts)}–{max(counts)}"
        ax_s.plot(pos, success, marker="o", label=f"{name} (n={n_text} per point)")
        ax_l.plot(pos, loss, marker="o", label=name)
    for ax, ylabel in ((ax_s, "success rate (train acc = 100%)"), (ax_l, "mean final training loss")):
        ax.set_xlabel(axis)
        ax.set_ylabel(ylabel)
        if numeric and min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax_s.set_ylim(-0.05, 1.05)
    ax_l.set_yscale("log")
    ax_s.legend(fontsize=7)
    fig.suptitle(f"success and loss vs {axis}" + (f" (mean over {', '.join(a for a in others if a != hue)} and seeds)"
                                                  if len(others) > 1 else " (mean over seeds)"), fontsize=9)
    fig.tight_layout()
    save_png(fig, path)


def summarize(out: str | Path, plots: bool = True) -> Path:
    """Write ``out/summary.md`` (and ``out/plots/<axis>.png``); returns the table's path."""
    out = Path(out)
    records = [record.to_dict() for record in latest_trials(out / TRIALS_FILE).values()]
    if not records:
        raise ConfigError("summarize", f"{out}/{TRIALS_FILE} has no results")
    axes = _axes(out, records)
    rows = group_rows(records, axes)
    n_ok = sum(r["status"] == "ok" for r in records)
    seeds = sorted({r["seed"] for r in records})
    text = (f"# Sweep summary: {out.name}\n\n{len(records)} trials ({n_ok} ok, {len(records) - n_ok} failed), "
            f"seeds {seeds}; from `{TRIALS_FILE}`. success = fraction of ok trials with 100% training "
            "accuracy; other columns mean ± sample std over ok trials (steps to perfect: successful ones only).\n\n")
    text += markdown_table(rows, axes)
    if plots and axes:
        for axis in axes:
            _plot_axis(rows, axes, axis, out / "plots" / f"{axis}.png")
        text += "\n" + "".join(f"![{a}](plots/{a}.png)\n" for a in axes)
    atomic_write_text(out / "summary.md", text)
    return out / "summary.md"
