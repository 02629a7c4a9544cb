"""The "Theory lab" summary of ``reproduce --full``, from small hand-made records (no studies run)."""

import math

from coarsegrad.experiments.reproduce import (
    EXPERIMENTS,
    FULL_EXPERIMENTS,
    QUICK_EXPERIMENTS,
    default_experiments,
    write_report,
)
from coarsegrad.theory.summary import theory_summary


def _angles():
    recs = []
    for ste, cos in (("identity", -0.6), ("clipped_relu", 0.7)):
        for v_mode in ("teacher", "optimal"):
            for theta in (math.pi / 2, math.pi - 0.01, math.pi):
                c = cos if (v_mode == "optimal" and theta == math.pi - 0.01) else 0.9
                recs.append({"study": "angle_grid", "ste": ste, "bits": 4, "v_mode": v_mode, "theta": theta,
                             "inner": c * 0.1, "inner_se": 0.0, "cosine": c})
        recs.append({"study": "sign_sweep", "ste": ste, "bits": 4, "v_mode": "optimal", "r": 1.0,
                     "negative": 7 if ste == "identity" else 0, "points": 49})
    return recs


def _landscape():
    return [{"study": "landscape_trial", "bits": 2, "ste": ste, "units_per_class": 4, "lr": lr, "seed": s,
             "steps": 100, "success": ok, "perfect_step": 50 if ok else None, "diverged": False}
            for ste, lr, s, ok in [("relu", 1.0, 0, True), ("relu", 1.0, 1, False), ("relu", 3.0, 0, True),
                                   ("relu", 3.0, 1, True), ("identity", 1.0, 0, False)]]


def _geometry():
    return [{"study": "geometry_run", "bits": 4, "ste": "relu", "units_per_class": 4, "lr": 3.0, "seed": s,
             "first_step": fs, "perfect_step": ps} for s, fs, ps in [(0, 5, 40), (1, None, 60), (2, 7, None)]]


def _repelled():
    recs = []
    for seed in (0, 1):
        recs.append({"study": "repelled_start", "bits": 2, "seed": seed, "test_acc": 0.9})
        for ste, end in (("identity", 0.8), ("clipped_relu", 0.91)):
            for step, acc in ((0, 0.9), (10, end + 0.01 * seed)):
                recs.append({"study": "repelled_point", "bits": 2, "lr": 0.5, "ste": ste, "seed": seed,
                             "steps": 10, "step": step, "train_loss": 0.1, "train_acc": acc, "test_acc": acc,
                             "grad_norm": 0.3, "grad_norm_first": 0.2 if ste == "identity" else 0.1,
                             "grad_norm_rest": 0.1, "distance": float(step), "diverged": False})
    return recs


def test_summary_has_one_table_per_study_with_the_key_numbers():
    md = theory_summary({"angles": _angles(), "geometry": _geometry(), "landscape": _landscape(),
                         "repelled": _repelled()})
    assert md.startswith("## Theory lab")
    assert "| identity | 4 | + (+0.900) | − (-0.600) | 7/49 |" in md
    assert "| clipped_relu | 4 | + (+0.900) | + (+0.700) | 0/49 |" in md
    assert "| 4 | relu | 4 | 3 | 2/3 | 2/3 |" in md
    assert "| 2 | relu | 3/4 | 0.75 | 1.00 (units 4, lr 3) |" in md
    assert "| 2 | identity | 0/1 | 0.00 |" in md
    assert "| 2 | 0.5 | identity | 90.00 → 80.50 | -9.50 ± 0.71 | 0.2000 ± 0.0000 | 0/2 |" in md
    assert "| 2 | 0.5 | clipped_relu | 90.00 → 91.50 | +1.50 ± 0.71 |" in md


def test_summary_skips_missing_or_empty_studies():
    assert theory_summary({}) == ""
    assert theory_summary({"angles": [], "repelled": []}) == ""
    md = theory_summary({"landscape": _landscape(), "bogus": [{"study": "x"}]})
    assert "### landscape" in md and "### angles" not in md and "### repelled" not in md


def test_write_report_appends_the_theory_lab(tmp_path):
    env = {"platform": "test", "cpu_count": 2, "device": "cpu", "torch": "x"}
    text = write_report([], tmp_path, env, "full", {"repelled": _repelled()})
    assert "## Theory lab" in text and (tmp_path / "tables.md").read_text() == text
    assert "Theory lab" not in write_report([], tmp_path, env, "quick")


def test_theory_runs_by_default_only_in_full_mode():
    assert "theory" in EXPERIMENTS and "theory" not in QUICK_EXPERIMENTS
    assert default_experiments(True) == FULL_EXPERIMENTS and default_experiments(False) == QUICK_EXPERIMENTS
    assert set(FULL_EXPERIMENTS) < set(EXPERIMENTS)  # the batched synthetic tables run only when named
