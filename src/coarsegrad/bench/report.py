"""Tables and the machine description for :mod:`coarsegrad.bench.epoch` records.

A record is ``run_bench``'s dict plus ``machine`` (:func:`machine`): the environment
of :func:`coarsegrad.io.records.environment`, the CPU model and count from
``/proc/cpuinfo`` and the load average before and after the run.
"""

from __future__ import annotations

import os
from pathlib import Path

from coarsegrad.io.records import environment

VARIANT_LABELS = {
    "ours": "coarsegrad train (fast path)",
    "ours_autograd": "coarsegrad train, fast=False (autograd)",
    "float_relu": "plain PyTorch, float ReLU",
    "autograd_ste": "plain PyTorch, autograd.Function STE",
    "detach_ste": "plain PyTorch, detach-trick STE",
    "brevitas": "Brevitas QuantReLU",
    "full_batch_step": "coarsegrad full-batch step (all rows)",
    "ours_float_weights": "coarsegrad train, float weights (fast path)",
    "brevitas_full": "Brevitas QuantLinear + QuantReLU",
}
FULL_QUANT_LABELS = {"ours": "coarsegrad train, QuantLinear + QuantReLU (autograd)"}
"""Labels that differ in a fully quantized record (``config.weights`` set)."""


def cpu_model() -> str | None:
    """The ``model name`` line of ``/proc/cpuinfo`` (None where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return os.getloadavg()
    except OSError:
        return None


def machine() -> dict[str, object]:
    """Environment, CPU model, CPU count and the current load average."""
    return {"environment": environment("cpu"), "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(), "loadavg": load_average()}


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def format_table(record: dict) -> str:
    """Medians (seconds) per variant and H, the paired ratios to ours, and the goals
    marked met / not met."""
    results = record["results"]
    hs = [r["hidden"] for r in results]
    labels = VARIANT_LABELS | (FULL_QUANT_LABELS if record["config"].get("weights") else {})
    names = [n for n in labels if any(n in r["variants"] for r in results)]
    head = "| variant | " + " | ".join(f"H={h} s" for h in hs) + " | " + \
        " | ".join(f"H={h} ÷ ours" for h in hs) + " |"
    lines = [head, "|" + " --- |" * (1 + 2 * len(hs))]
    for name in names:
        cells = [_fmt(r["variants"][name]["median_s"]) if name in r["variants"] else "—" for r in results]
        ratio = [_fmt(r["variants"][name]["ratio_to_ours"]) if name in r["variants"] else "—" for r in results]
        lines.append(f"| {labels[name]} | " + " | ".join(cells) + " | " + " | ".join(ratio) + " |")
    for name, label in (("brevitas", "Brevitas"), ("brevitas_full", labels["brevitas_full"])):
        if any(name in r["variants"] for r in results):
            lines.append(f"| {label}, inside its statistics phase (first 300 steps) | " + " | ".join(
                _fmt(r["variants"][name]["statistics_phase_s"]) if name in r["variants"] else "—"
                for r in results) + " | " + " | ".join(
                _fmt(r["ratios"][f"{name}_statistics_phase/ours"]) if name in r["variants"] else "—"
                for r in results) + " |")
    lines.append("| data path (permutation + gathers) | " + " | ".join(_fmt(r["data_path_s"]) for r in results)
                 + " | " + " | ".join(f"{100 * r['data_path_share']:.1f}%" for r in results) + " |")
    if "dataset_copy_s" in record:  # records from before this measurement lack it
        lines.append("| one plain copy of X (memory-bandwidth reference) | "
                     + " | ".join(_fmt(record["dataset_copy_s"]) for _ in results) + " | "
                     + " | ".join(f"data path = {r['data_path_over_copy']:.2f}× copy" for r in results) + " |")
    lines.append("| ours GFLOP/s (3196·H per row) | " + " | ".join(_fmt(r["ours_gflops"]) for r in results)
                 + " | " + " | ".join(f"{100 * r['sgemm_fraction']:.0f}% of sgemm" for r in results) + " |")
    lines += ["", f"sgemm {record['config']['sgemm_size']}³: {record['sgemm_gflops']:.1f} GFLOP/s before, "
              f"{record['sgemm_gflops_after']:.1f} after; data: {record['data']}; threads: {record['threads']}"]
    for name, why in {k: v for r in results for k, v in r["skipped"].items()}.items():
        lines.append(f"skipped {name}: {why}")
    lines += ["", "| goal | target | " + " | ".join(f"H={h}" for h in hs) + " | met |",
              "|" + " --- |" * (3 + len(hs))]
    for goal in record["goals"]:
        values = goal["values"]
        cells = [_fmt(values[h]) if h in values else (_fmt(values[str(h)]) if str(h) in values else "—")
                 for h in hs]
        lines.append(f"| {goal['goal']} | {goal['target']} | " + " | ".join(cells) + " | "
                     + ("met" if goal["met"] else "NOT met") + " |")
    return "\n".join(lines)


def format_machine(record: dict) -> str:
    """One paragraph: CPU, threads, torch, load before and after."""
    m = record.get("machine", {})
    env = m.get("environment", {})
    before, after = m.get("loadavg"), record.get("loadavg_after")
    return (f"CPU: {m.get('cpu_model')} ({m.get('cpu_count')} logical CPUs, {record['threads']} torch threads); "
            f"torch {env.get('torch')}, Python {env.get('python')}, commit {env.get('git_commit')}; "
            f"load average (1/5/15 min) before: {before}, after: {after}")


def _weights_text(weights: dict | None) -> str:
    """`` with QuantLinear weights (…)`` for a fully quantized record, else nothing."""
    if not weights:
        return ""
    return (f" with QuantLinear weights ({weights['kind']}, {weights['bits']} bits per {weights['granularity']}, "
            f"method {weights['method']}, clip {weights['clip']})")


def format_markdown(record: dict) -> str:
    """The record as a Markdown page: command, machine, table and goals."""
    cfg = record["config"]
    return "\n".join([
        "# `coarsegrad bench`", "",
        f"Command: `{record.get('command', 'coarsegrad bench')}`", "",
        format_machine(record), "",
        f"Workload: MLP {cfg['features']} → H → {cfg['classes']}{_weights_text(cfg.get('weights'))}, "
        f"{cfg['bits']}-bit staircase, clipped-ReLU STE, "
        f"SGD momentum 0.9 (lr {cfg['lr']}), batch {cfg['batch_size']}, one epoch over {cfg['samples']} rows "
        f"({record['data']} data). Seconds are medians of {cfg['repeats']} rounds (each variant once per "
        "round, in a shuffled order) after a warm-up epoch, training loop only; a ratio is the median "
        "over rounds of the two variants' times in the same round.", "",
        format_table(record), "", *conv_section(record)])


def conv_section(record: dict) -> list[str]:
    """The convolutional case's table (``bench --weights --conv``), or nothing."""
    if not record.get("conv"):
        return []
    from coarsegrad.bench.full_quant import format_conv

    return [format_conv(record["conv"]), ""]
