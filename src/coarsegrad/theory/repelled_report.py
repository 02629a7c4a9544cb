"""Tables and plots of the repelled study (:mod:`.repelled`), made only from its records.

Every number is mean ± std over the seeds of a cell (sample std, n − 1; "—" for n = 1).
"End" is a run's last recorded point (step ``steps``, or where the loss became non-finite).
"""

from __future__ import annotations

import math
from pathlib import Path
from statistics import mean, stdev

from coarsegrad.io.plots import pyplot, save_png
from coarsegrad.theory.report import _order, fmt, table


def mean_std(values: list[float], spec: str = ".4f", scale: float = 1.0) -> str:
    """'m ± s' of ``scale``·values (s: sample std; '—' when fewer than 2 finite values)."""
    xs = [scale * v for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return "—"
    s = format(stdev(xs), spec.lstrip("+")) if len(xs) > 1 else "—"
    return f"{format(mean(xs), spec)} ± {s}"


def runs(records: list[dict]) -> dict[tuple, list[dict]]:
    """{(bits, lr, ste, seed): point records sorted by step}."""
    out: dict[tuple, list[dict]] = {}
    for r in records:
        if r["study"] == "repelled_point":
            out.setdefault((r["bits"], r["lr"], r["ste"], r["seed"]), []).append(r)
    return {k: sorted(v, key=lambda r: r["step"]) for k, v in out.items()}


def end_points(records: list[dict]) -> list[dict]:
    """Per (bits, lr, ste): start/end train loss, accuracies and Δ test accuracy, over seeds."""
    by_run = runs(records)
    cells = _order([{"k": k[:3]} for k in by_run], "k")
    out = []
    for bits, lr, ste in cells:
        rs = [v for k, v in by_run.items() if k[:3] == (bits, lr, ste)]
        out.append({"bits": bits, "lr": lr, "ste": ste, "n": len(rs),
                    "seeds": [r[0]["seed"] for r in rs],
                    "start_train_loss": [r[0]["train_loss"] for r in rs],
                    "end_train_loss": [r[-1]["train_loss"] for r in rs],
                    "start_train_acc": [r[0]["train_acc"] for r in rs],
                    "end_train_acc": [r[-1]["train_acc"] for r in rs],
                    "start_test_acc": [r[0]["test_acc"] for r in rs],
                    "end_test_acc": [r[-1]["test_acc"] for r in rs],
                    "delta_test_acc": [r[-1]["test_acc"] - r[0]["test_acc"] for r in rs],
                    "start_grad_norm": [r[0]["grad_norm"] for r in rs],
                    "end_grad_norm": [r[-1]["grad_norm"] for r in rs],
                    "end_distance": [r[-1]["distance"] for r in rs],
                    "diverged": sum(bool(r[-1]["diverged"]) for r in rs)})
    return out


def repelled_markdown(records: list[dict]) -> str:
    starts = [r for r in records if r["study"] == "repelled_start"]
    points = [r for r in records if r["study"] == "repelled_point"]
    s0 = starts[0]
    seeds = sorted({r["seed"] for r in starts})
    epochs = s0["steps"] * (s0["batch_size"] or s0["n_train"]) / s0["n_train"]
    out = ["# Repelled from a good minimum? Continuing training with each STE\n\n",
           f"Model `{s0['model']}`, α = optimal_alpha(b). θ₀: {s0['pretrain_epochs']} epochs of "
           f"{s0['pretrain_optimizer']} (lr {s0['pretrain_lr']}, {s0.get('pretrain_schedule', 'constant')}, "
           f"batch {s0['pretrain_batch_size']}) with {s0['pretrain_ste']}. Continuation from a copy of θ₀: "
           f"plain SGD θ ← θ − η·g_μ, batch {s0['batch_size'] or 'full'}, {s0['steps']} steps (≈ {epochs:.2f} "
           f"epochs), the same batch sequence for every STE and η. {s0['n_train']} training / {s0['n_test']} "
           f"test images. n = {len(seeds)} seeds ({', '.join(map(str, seeds))}); mean ± std (n − 1).\n"]
    rows = []
    for b in sorted({r["bits"] for r in starts}):
        rs = [r for r in starts if r["bits"] == b]
        rows.append([str(b), str(len(rs)), mean_std([r["train_loss"] for r in rs]),
                     mean_std([r["train_acc"] for r in rs], ".2f", 100), mean_std([r["test_loss"] for r in rs]),
                     mean_std([r["test_acc"] for r in rs], ".2f", 100)])
    out.append("\n## Start point θ₀\n\n" + table(["bits", "seeds", "train loss", "train acc %", "test loss",
                                                  "test acc %"], rows))
    at0 = [r for r in points if r["step"] == 0]
    rows = []
    for b in sorted({r["bits"] for r in at0}):
        ref = [r["grad_norm_first"] for r in at0 if r["bits"] == b and r["ste"] == s0["pretrain_ste"]]
        for ste in _order([r for r in at0 if r["bits"] == b], "ste"):
            rs = [r for r in at0 if (r["bits"], r["ste"]) == (b, ste) and r["lr"] == at0[0]["lr"]]
            ratio = (mean_std([r["grad_norm_first"] / mean(ref) for r in rs], ".2f") if ref else "—")
            rows.append([str(b), ste, mean_std([r["grad_norm"] for r in rs]),
                         mean_std([r["grad_norm_first"] for r in rs]), mean_std([r["grad_norm_rest"] for r in rs]),
                         ratio])
    out.append("\n## Full-batch coarse gradient at θ₀\n\n‖g_μ‖ over all parameters; \"before σ\": the first "
               "layer (the part μ′ changes); \"after σ\": the rest (a true gradient, the same for every STE).\n\n"
               + table(["bits", "STE", "‖g_μ‖", "‖g_μ‖ before σ", "‖g‖ after σ",
                        f"before σ / {s0['pretrain_ste']}'s"], rows))
    rows = [[str(c["bits"]), fmt(c["lr"], "g"), c["ste"],
             f"{mean_std(c['start_train_loss'])} → {mean_std(c['end_train_loss'])}",
             f"{mean_std(c['start_train_acc'], '.2f', 100)} → {mean_std(c['end_train_acc'], '.2f', 100)}",
             f"{mean_std(c['start_test_acc'], '.2f', 100)} → {mean_std(c['end_test_acc'], '.2f', 100)}",
             mean_std(c["delta_test_acc"], "+.2f", 100), mean_std(c["end_grad_norm"]),
             mean_std(c["end_distance"], ".3f"), f"{c['diverged']}/{c['n']}"] for c in end_points(records)]
    out.append("\n## Start → end of the continuation\n\n"
               + table(["bits", "η", "STE", "train loss", "train acc %", "test acc %", "Δ test acc (points)",
                        "‖g_μ‖ end", "‖θ − θ₀‖ end", "diverged"], rows))
    return "".join(out)


def _curve(rs: list[list[dict]], key: str) -> tuple[list[int], list[float], list[float]]:
    """Steps, mean and std (0 for one seed) of ``key`` over runs, on the steps all runs reached."""
    steps = sorted(set.intersection(*({p["step"] for p in r} for r in rs)))
    vals = [[next(p[key] for p in r if p["step"] == s) for r in rs] for s in steps]
    return steps, [mean(v) for v in vals], [stdev(v) if len(v) > 1 else 0.0 for v in vals]


def plot_repelled(records: list[dict], path: Path) -> None:
    """Training loss and test accuracy vs step, per STE (mean ± std over seeds); rows bits, columns η."""
    plt = pyplot()
    by_run = runs(records)
    bits = sorted({k[0] for k in by_run})
    lrs = sorted({k[1] for k in by_run})
    stes = _order([{"s": k[2]} for k in by_run], "s")
    fig, axes = plt.subplots(2 * len(bits), len(lrs), figsize=(4.2 * len(lrs), 3.0 * 2 * len(bits)),
                             squeeze=False, layout="constrained")
    for i, b in enumerate(bits):
        for j, lr in enumerate(lrs):
            for row, key, label in ((2 * i, "train_loss", "training loss"), (2 * i + 1, "test_acc", "test accuracy")):
                ax = axes[row][j]
                for s in stes:
                    rs = [v for k, v in by_run.items() if k[:3] == (b, lr, s)]
                    if rs:
                        x, m, sd = _curve(rs, key)
                        ax.errorbar(x, m, yerr=sd, marker=".", capsize=2, label=s)
                ax.set_title(f"bits={b}, η={lr:g}", fontsize=9)
                ax.set_xlabel("SGD step from θ₀")
                ax.set_ylabel(label)
    axes[0][0].legend(fontsize=7)
    save_png(fig, path, bbox_inches="tight")


def plot_grad_norms(records: list[dict], path: Path) -> None:
    """‖g_μ‖ before σ at θ₀ per STE (bars, mean ± std), one panel per bits; dashed: ‖g‖ after σ."""
    plt = pyplot()
    at0 = [r for r in records if r["study"] == "repelled_point" and r["step"] == 0]
    at0 = [r for r in at0 if r["lr"] == at0[0]["lr"]]
    bits = sorted({r["bits"] for r in at0})
    stes = _order(at0, "ste")
    fig, axes = plt.subplots(1, len(bits), figsize=(4.2 * len(bits), 3.4), squeeze=False, layout="constrained")
    for ax, b in zip(axes[0], bits, strict=False):
        vals = [[r["grad_norm_first"] for r in at0 if (r["bits"], r["ste"]) == (b, s)] for s in stes]
        ax.bar(range(len(stes)), [mean(v) for v in vals],
               yerr=[stdev(v) if len(v) > 1 else 0.0 for v in vals], capsize=3)
        ax.axhline(mean(r["grad_norm_rest"] for r in at0 if r["bits"] == b), color="k", ls="--", lw=0.8,
                   label="‖g‖ after σ")
        ax.set_xticks(range(len(stes)), stes, rotation=20, fontsize=8)
        ax.set_title(f"bits={b}: full-batch coarse gradient at θ₀", fontsize=9)
        ax.set_ylabel("‖g_μ‖ on the first layer")
        ax.legend(fontsize=7)
    save_png(fig, path, bbox_inches="tight")
