"""Markdown tables and PNG plots, made only from the flat records of :mod:`.studies`.

matplotlib is imported lazily (Agg backend) inside the plot functions.
"""

from __future__ import annotations

import math
from pathlib import Path
from statistics import median
from typing import Any

from coarsegrad.io.plots import pyplot, save_png
from coarsegrad.theory.landscape import heatmap_grid, success_rates


def fmt(x: object, spec: str = ".3f") -> str:
    """A table cell: '—' for None/NaN, else ``format(x, spec)``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    return format(x, spec) if isinstance(x, (int, float)) else str(x)


def table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _sign(x: float, se: float = 0.0) -> str:
    if abs(x) <= 4 * se + 1e-15:
        return "0"
    return "+" if x > 0 else "−"


def _order(records: list[dict], key: str) -> list:
    seen: list = []
    for r in records:
        if r[key] not in seen:
            seen.append(r[key])
    return seen


def angles_markdown(records: list[dict]) -> str:
    grid = [r for r in records if r["study"] == "angle_grid"]
    stes, bits = _order(grid, "ste"), sorted(_order(grid, "bits"))
    first = grid[0]
    out = ["# Coarse gradient vs true gradient, Gaussian teacher model\n",
           f"m = {first['m']} hidden units, n = {first['n']}, ‖w‖ = {first['r']}, ‖w*‖ = "
           f"{first['r_star']}, v* ~ N(0, I) (seed {grid[0]['seed']}), α = optimal_alpha(b)·‖w*‖. "
           "Exact for identity / relu / clipped_relu; log_tailed_relu by Monte Carlo "
           f"({max(r['samples'] for r in grid)} samples, s.e. in results.json). "
           "θ = π is the limit θ → π⁻.\n"]
    for v_mode, title in (("teacher", "v = v*"), ("optimal", "v = argmin_v f(v, w)")):
        rows_src = [r for r in grid if r["v_mode"] == v_mode]
        thetas = sorted({r["theta"] for r in rows_src})
        cell = {(r["theta"], r["ste"], r["bits"]): r for r in rows_src}
        header = ["θ/π"] + [f"{s} b={b}" for b in bits for s in stes]
        rows = [[fmt(t / math.pi, ".4f")] + [fmt(cell[(t, s, b)]["cosine"], "+.3f") for b in bits for s in stes]
                for t in thetas]
        out.append(f"\n## cosine(E[g_μ], ∂f/∂w) versus θ, {title}\n\n" + table(header, rows))
    near = [r for r in grid if r["theta"] >= math.pi - 0.011]
    near_cell = {(r["v_mode"], r["theta"] > math.pi - 1e-9, r["ste"], r["bits"]): r for r in near}
    rows = []
    for s in stes:
        for b in bits:
            row = [s, str(b)]
            for v_mode in ("teacher", "optimal"):
                for at_pi in (False, True):
                    r = near_cell[(v_mode, at_pi, s, b)]
                    row.append(f"{_sign(r['inner'], r['inner_se'])} ({fmt(r['inner'], '+.2e')})")
            rows.append(row)
    out.append("\n## Sign of ⟨E[g_μ], ∂f/∂w⟩ near θ = π (+ means −E[g_μ] is a descent direction)\n\n"
               + table(["STE", "bits", "v*: θ=π−0.01", "v*: θ=π", "v opt: θ=π−0.01", "v opt: θ=π"], rows))
    spur = [r for r in records if r["study"] == "spurious"]
    rows = [[r["ste"], str(r["bits"]), fmt(r["r"], ".2f"), fmt(r["coarse_norm"], ".3e"),
             fmt(r["coarse_radial"], "+.3e"), fmt(r["grad_w_norm"], ".3e"), fmt(r["grad_w_radial"], "+.3e"),
             fmt(r["grad_v_norm"], ".1e"), fmt(r["vTv_star"], "+.3f")] for r in spur]
    out.append("\n## At the spurious point θ = π, v = argmin_v f (Yin et al.'s spurious minimiser for b = 1)\n\n"
               + table(["STE", "bits", "‖w‖", "‖E[g_μ]‖", "E[g_μ]·ŵ", "‖∂f/∂w‖ (limit)", "∂f/∂r",
                        "‖∂f/∂v‖", "vᵀv*"], rows))
    sweep = [r for r in records if r["study"] == "sign_sweep"]
    if sweep:
        rows = []
        for v_mode in ("teacher", "optimal"):
            for s in stes:
                for b in bits:
                    rs = [r for r in sweep if (r["v_mode"], r["ste"], r["bits"]) == (v_mode, s, b)]
                    if not rs:
                        continue
                    cos = [r["min_cosine"] for r in rs if r["min_cosine"] is not None]
                    rows.append([v_mode, s, str(b), f"{sum(r['negative'] for r in rs)}/{sum(r['points'] for r in rs)}",
                                 f"{sum(r['negative_near_pi'] for r in rs)}/{sum(r['points_near_pi'] for r in rs)}",
                                 fmt(min(cos) if cos else None, "+.3f")])
        r0 = sweep[0]
        radii = ", ".join(fmt(r, "g") for r in sorted({r["r"] for r in sweep}))
        out.append(f"\n## Sign sweep: {r0['seeds']} teacher seeds × ‖w‖ ∈ {{{radii}}} × θ grid\n\n"
                   "Points where ⟨E[g_μ], ∂f/∂w⟩ < 0 beyond 4 standard errors.\n\n"
                   + table(["v", "STE", "bits", "negative / points", "negative / points with θ ≥ 0.9π",
                            "min cosine"], rows))
    traj = [r for r in records if r["study"] == "trajectory" and not r.get("collapsed")]
    if traj:
        rows = []
        for b in bits:
            for t0 in _order([r for r in traj if r["bits"] == b], "theta0"):
                for s in stes:
                    rs = [r for r in traj if (r["bits"], r["theta0"], r["ste"]) == (b, t0, s)]
                    if not rs:
                        continue
                    last = rs[-1]
                    rows.append([str(b), fmt(t0 / math.pi, ".3f"), s, str(last["step"]),
                                 fmt(last["theta"] / math.pi, ".3f"), fmt(last["r"], ".3f"),
                                 fmt(rs[0]["loss"], ".4f"), fmt(last["loss"], ".4f"),
                                 f"{sum(r['inner'] < 0 for r in rs)}/{len(rs)}"])
        out.append("\n## Expected coarse gradient descent (v by ∂f/∂v, w by E[g_μ]; v₀ = argmin_v f)\n\n"
                   + table(["bits", "θ₀/π", "STE", "steps", "final θ/π", "final ‖w‖", "f start", "f end",
                            "records with inner < 0"], rows))
    return "".join(out)


def plot_angles(records: list[dict], path: Path) -> None:
    plt = pyplot()
    grid = [r for r in records if r["study"] == "angle_grid"]
    stes, bits = _order(grid, "ste"), sorted(_order(grid, "bits"))
    fig, axes = plt.subplots(2, len(bits), figsize=(4.2 * len(bits), 7), squeeze=False, sharey=True,
                             layout="constrained")
    for i, v_mode in enumerate(("teacher", "optimal")):
        for j, b in enumerate(bits):
            ax = axes[i][j]
            for s in stes:
                rs = sorted((r for r in grid if (r["v_mode"], r["bits"], r["ste"]) == (v_mode, b, s)),
                            key=lambda r: r["theta"])
                ax.plot([r["theta_over_pi"] for r in rs], [r["cosine"] for r in rs], marker=".", label=s)
            ax.axhline(0.0, color="k", lw=0.6)
            ax.set_title(f"bits={b}, v={'v*' if v_mode == 'teacher' else 'argmin f'}")
            ax.set_xlabel("θ/π")
            if j == 0:
                ax.set_ylabel("cos(E[g_μ], ∂f/∂w)")
    axes[0][0].legend(fontsize=8)
    save_png(fig, path, bbox_inches="tight")


def geometry_groups(records: list[dict]) -> list[tuple[tuple[Any, ...], list[dict]]]:
    """The geometry runs grouped by (bits, ste, units_per_class, lr), in first-seen order."""
    runs = [r for r in records if r["study"] == "geometry_run"]
    keys = _order([{"k": (r["bits"], r["ste"], r["units_per_class"], r["lr"])} for r in runs], "k")
    return [(key, [r for r in runs if (r["bits"], r["ste"], r["units_per_class"], r["lr"]) == key]) for key in keys]


def geometry_markdown(records: list[dict]) -> str:
    rows = []
    groups = geometry_groups(records)
    for key, rs in groups:
        reached = [r for r in rs if r["first_step"] is not None]
        comparable = [r for r in reached if r["speedup"] is not None]
        perfect_with = sum(r["perfect_step"] is not None for r in reached)
        perfect_without = sum(r["perfect_step"] is not None for r in rs if r["first_step"] is None)
        before = [r["slope_before"] for r in comparable]
        after = [r["slope_after"] for r in comparable]
        rows.append([str(key[0]), key[1], str(key[2]), fmt(key[3], "g"), str(len(rs)),
                     f"{len(reached)} ({sum(bool(r['holds_at_start']) for r in rs)} at start)",
                     fmt(median([r["first_step"] for r in reached]) if reached else None, "g"),
                     f"{sum(bool(r['speedup']) for r in comparable)}/{len(comparable)}",
                     fmt(median(before) if before else None, "+.2e"), fmt(median(after) if after else None, "+.2e"),
                     f"{perfect_with}/{len(reached)}", f"{perfect_without}/{len(rs) - len(reached)}"])
    r0 = groups[0][1][0]
    return ("# Geometric condition during coarse gradient descent\n\n"
            f"K = {r0['num_classes']} classes, d = {r0['dim']}, subspace dim {r0['subspace_dim']}, "
            f"{r0['samples_per_class']} samples/class, full batch, ≤ {r0['steps']} steps (stop at 100%), "
            f"init scale {r0['init_scale']}; seeds 0..{len(rs) - 1}. Condition: for every class, 0 ∈ conv of "
            "its units' directions projected on its subspace. Slopes of log(loss) per step, least squares "
            f"over the {r0['window']} logged steps before / from the first step where it holds.\n\n"
            + table(["bits", "STE", "units/class", "lr", "runs", "condition reached", "median first step",
                     "faster after", "median slope before", "median slope after",
                     "100% acc (reached)", "100% acc (not reached)"], rows))


def plot_geometry(records: list[dict], path: Path) -> None:
    plt = pyplot()
    trace = [r for r in records if r["study"] == "geometry_trace"]
    runs = {(r["bits"], r["ste"], r["units_per_class"], r["lr"], r["seed"]): r
            for r in records if r["study"] == "geometry_run"}
    keys = _order([{"k": (r["bits"], r["ste"], r["units_per_class"], r["lr"])} for r in trace], "k")
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False,
                             layout="constrained")
    for ax, key in zip(axes[0], keys, strict=False):
        rs = [r for r in trace if (r["bits"], r["ste"], r["units_per_class"], r["lr"]) == key]
        for seed in _order(rs, "seed"):
            pts = [r for r in rs if r["seed"] == seed]
            line, = ax.semilogy([r["step"] for r in pts], [r["loss"] for r in pts], label=f"seed {seed}")
            run = runs.get((*key, seed))
            first = run["first_step"] if run else next((r["step"] for r in pts if r["all_hold"]), None)
            if first is not None:
                ax.axvline(first, color=line.get_color(), ls="--", lw=0.8)
        ax.set_title(f"bits={key[0]} {key[1]} m={key[2]} lr={key[3]:g}", fontsize=9)
        ax.set_xlabel("step (dashed: condition holds for all classes)")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=7)
    save_png(fig, path, bbox_inches="tight")


def landscape_markdown(records: list[dict]) -> str:
    trials = [r for r in records if r["study"] == "landscape_trial"]
    rates = success_rates(trials)
    rows = [[str(r["bits"]), r["ste"], str(r["units_per_class"]), fmt(r["lr"], "g"),
             f"{r['successes']}/{r['n']}", fmt(r["rate"], ".2f"), fmt(r["median_perfect_step"], "g"),
             str(r["diverged"])] for r in rates]
    t0 = trials[0]
    return ("# Landscape: success rate of coarse gradient descent\n\n"
            f"Success = 100% training accuracy within {t0['steps']} full-batch steps. Data: K = "
            f"{t0['num_classes']}, d = {t0['dim']}, subspace dim {t0['subspace_dim']}, "
            f"{t0['samples_per_class']} samples/class; init scale {t0['init_scale']}; second layer "
            f"{t0['second_layer']}; α = optimal_alpha(bits). Seeds listed in results.json.\n\n"
            + table(["bits", "STE", "units/class", "lr", "successes", "rate", "median perfect step",
                     "diverged"], rows))


def plot_landscape(records: list[dict], path: Path) -> None:
    plt = pyplot()
    trials = [r for r in records if r["study"] == "landscape_trial"]
    grids = heatmap_grid(success_rates(trials))
    bits = sorted({k[0] for k in grids})
    stes = _order([{"s": k[1]} for k in grids], "s")
    fig, axes = plt.subplots(len(bits), len(stes), figsize=(3.2 * len(stes), 2.8 * len(bits)), squeeze=False,
                             layout="constrained")
    image = None
    for i, b in enumerate(bits):
        for j, s in enumerate(stes):
            ax = axes[i][j]
            if (b, s) not in grids:
                ax.axis("off")
                continue
            units, lrs, rate = grids[(b, s)]
            image = ax.imshow(rate, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
            for yi in range(len(units)):
                for xi in range(len(lrs)):
                    ax.text(xi, yi, fmt(rate[yi][xi], ".2f"), ha="center", va="center", color="w", fontsize=8)
            ax.set_xticks(range(len(lrs)), [f"{x:g}" for x in lrs])
            ax.set_yticks(range(len(units)), [str(u) for u in units])
            ax.set_title(f"{s}, bits={b}", fontsize=9)
            ax.set_xlabel("step size")
            ax.set_ylabel("units per class")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="success rate")
    save_png(fig, path, bbox_inches="tight")
