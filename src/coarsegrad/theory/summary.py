"""A short "Theory lab" summary of the theory studies, made only from their records.

``theory_summary({"angles": [...], "landscape": [...], ...})`` returns markdown with
one small table per study present (studies without records are left out):

* angles — sign of ⟨E[g_μ], ∂f/∂w⟩ (and the cosine) at θ = π − 0.01, the approach to
  the spurious minimum, for v = v* and v = argmin_v f; sign-sweep negatives (v = argmin f).
* geometry — how often the convex-hull condition was reached, and 100% training accuracy.
* landscape — success rate per (bits, STE) over the whole grid.
* repelled — test accuracy at θ₀ → after the continuation per (bits, η, STE), and the
  first-layer coarse-gradient norm at θ₀.
"""

from __future__ import annotations

import math
from statistics import mean
from typing import Mapping

from coarsegrad.theory.landscape import success_rates
from coarsegrad.theory.repelled_report import end_points, mean_std
from coarsegrad.theory.report import _order, _sign, fmt, geometry_groups, table


def angles_summary(records: list[dict]) -> str:
    grid = [r for r in records if r["study"] == "angle_grid"]
    below = [r["theta"] for r in grid if r["theta"] < math.pi - 1e-9]
    if not below:
        return ""
    theta = max(below)
    cell = {(r["ste"], r["bits"], r["v_mode"]): r for r in grid if r["theta"] == theta}
    sweep = [r for r in records if r["study"] == "sign_sweep" and r["v_mode"] == "optimal"]
    rows = []
    for ste in _order(grid, "ste"):
        for bits in sorted({r["bits"] for r in grid}):
            row = [ste, str(bits)]
            for v_mode in ("teacher", "optimal"):
                r = cell.get((ste, bits, v_mode))
                row.append("—" if r is None else f"{_sign(r['inner'], r['inner_se'])} ({fmt(r['cosine'], '+.3f')})")
            rs = [r for r in sweep if (r["ste"], r["bits"]) == (ste, bits)]
            row.append(f"{sum(r['negative'] for r in rs)}/{sum(r['points'] for r in rs)}" if rs else "—")
            rows.append(row)
    return (f"### angles: sign (cosine) of ⟨E[g_μ], ∂f/∂w⟩ at θ = {theta / math.pi:.4f}π\n\n"
            "`+`: −E[g_μ] is a descent direction. Sweep: points with a negative inner product, v = argmin f.\n\n"
            + table(["STE", "bits", "v = v*", "v = argmin f", "sweep negatives"], rows))


def geometry_summary(records: list[dict]) -> str:
    rows = []
    for key, rs in geometry_groups(records):
        rows.append([str(key[0]), key[1], str(key[2]), fmt(key[3], "g"),
                     f"{sum(r['first_step'] is not None for r in rs)}/{len(rs)}",
                     f"{sum(r['perfect_step'] is not None for r in rs)}/{len(rs)}"])
    if not rows:
        return ""
    return ("### geometry: convex-hull condition during coarse gradient descent\n\n"
            + table(["bits", "STE", "units/class", "lr", "condition reached", "100% train acc"], rows))


def landscape_summary(records: list[dict]) -> str:
    trials = [r for r in records if r["study"] == "landscape_trial"]
    if not trials:
        return ""
    rates = success_rates(trials)
    rows = []
    for bits in sorted({r["bits"] for r in rates}):
        for ste in _order([r for r in rates if r["bits"] == bits], "ste"):
            rs = [r for r in rates if (r["bits"], r["ste"]) == (bits, ste)]
            ok, n = sum(r["successes"] for r in rs), sum(r["n"] for r in rs)
            best = max(rs, key=lambda r: r["rate"])
            rows.append([str(bits), ste, f"{ok}/{n}", fmt(ok / n, ".2f"),
                         f"{fmt(best['rate'], '.2f')} (units {best['units_per_class']}, lr {fmt(best['lr'], 'g')})"])
    return (f"### landscape: 100% training accuracy within {trials[0]['steps']} steps, whole grid\n\n"
            + table(["bits", "STE", "successes", "rate", "best cell"], rows))


def repelled_summary(records: list[dict]) -> str:
    cells = end_points(records)
    if not cells:
        return ""
    at0 = [r for r in records if r["study"] == "repelled_point" and r["step"] == 0]
    rows = []
    for c in cells:
        g0 = [r["grad_norm_first"] for r in at0 if (r["bits"], r["lr"], r["ste"]) == (c["bits"], c["lr"], c["ste"])]
        rows.append([str(c["bits"]), fmt(c["lr"], "g"), c["ste"],
                     f"{mean(c['start_test_acc']) * 100:.2f} → {mean(c['end_test_acc']) * 100:.2f}",
                     mean_std(c["delta_test_acc"], "+.2f", 100), mean_std(g0, ".4f"), f"{c['diverged']}/{c['n']}"])
    steps = next(r["steps"] for r in records if r["study"] == "repelled_point")
    return (f"### repelled: continuing from a good minimum θ₀ for {steps} SGD steps with each STE\n\n"
            f"Mean (± std) over n = {cells[0]['n']} seeds.\n\n"
            + table(["bits", "η", "STE", "test acc % θ₀ → end", "Δ (points)", "‖g_μ‖ before σ at θ₀",
                     "diverged"], rows))


SECTIONS = {"angles": angles_summary, "geometry": geometry_summary, "landscape": landscape_summary,
            "repelled": repelled_summary}


def theory_summary(records: Mapping[str, list[dict]]) -> str:
    """"## Theory lab" markdown from ``{study: records}``; "" when no study has records."""
    parts = [SECTIONS[study](rs) for study, rs in records.items() if study in SECTIONS and rs]
    parts = [p for p in parts if p]
    if not parts:
        return ""
    return ("## Theory lab\n\nMade from OUT/theory/<study>/results.json (full tables and plots in each "
            "folder).\n\n" + "\n".join(parts))
