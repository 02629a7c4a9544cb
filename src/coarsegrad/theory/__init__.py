"""Theory of coarse gradients: how good is each STE's coarse gradient?

Gaussian teacher model of Yin et al., ICLR 2019 (arXiv 1903.05662), generalised to
b-bit staircases, and the geometric condition of Long, Yin & Xin (arXiv 2011.11256)::

    from coarsegrad import theory as th
    t = th.make_teacher(m=6, n=3, bits=2)               # v* ~ N(0, I), w* = e1, α = optimal_alpha(2)
    th.population_loss(v, w, t)                         # f = ½ E_Z[(y − y*)²], exact
    th.population_grad_w(v, w, t)                       # ∂f/∂w, exact
    th.expected_coarse_grad(v, w, t, "clipped_relu")    # E_Z[g_μ] (exact or Monte Carlo ± s.e.)
    th.geometric_condition(W, bases, units_per_class)   # 0 ∈ conv of projected unit directions
    th.run_repelled(th.RepelledConfig())                # MNIST: continue from a minimum with each STE
    th.run_study("landscape", cfg, "out/landscape", cmd) # records + config/env + report (runner)

Importing this package needs only torch and numpy; SciPy (the ``theory`` extra) is
imported lazily by the convex-hull test.
"""

from coarsegrad.theory.bivariate import (
    bvn_cdf,
    bvn_density,
    bvn_upper,
    bvn_upper_dh,
    norm_cdf,
    norm_pdf,
)
from coarsegrad.theory.diagnostics import (
    angle_grid,
    make_teacher,
    point_record,
    spurious_records,
    trajectory,
)
from coarsegrad.theory.expected import (
    CoarseExpectation,
    expected_coarse_grad,
    expected_coarse_grad_at,
    indicator_interval,
)
from coarsegrad.theory.geometry import (
    GeometryTrace,
    class_directions,
    geometric_condition,
    hull_residual,
    log_loss_slope,
    origin_in_hull,
    track_geometry,
)
from coarsegrad.theory.landscape import make_trials, run_trial, run_trials, success_rates
from coarsegrad.theory.montecarlo import MonteCarloEstimate, monte_carlo, sample_loss_and_coarse_grad
from coarsegrad.theory.population import (
    PlaneFrame,
    Teacher,
    cross_moment,
    optimal_v_at,
    plane_frame,
    population_grad_v,
    population_grad_v_at,
    population_grad_w,
    population_grad_w_at,
    population_loss,
    population_loss_at,
    sigma_moments,
)
from coarsegrad.theory.repelled import RepelledConfig, coarse_gradient_norms, run_repelled
from coarsegrad.theory.runner import STUDIES, make_config, render, run_study
from coarsegrad.theory.summary import theory_summary

__all__ = [
    "CoarseExpectation", "GeometryTrace", "MonteCarloEstimate", "PlaneFrame", "RepelledConfig", "STUDIES",
    "Teacher", "coarse_gradient_norms", "make_config", "render", "run_repelled", "run_study", "theory_summary",
    "angle_grid", "bvn_cdf", "bvn_density", "bvn_upper", "bvn_upper_dh", "class_directions",
    "cross_moment", "expected_coarse_grad", "expected_coarse_grad_at", "geometric_condition",
    "hull_residual", "indicator_interval", "log_loss_slope", "make_teacher", "make_trials",
    "monte_carlo", "norm_cdf", "norm_pdf", "optimal_v_at", "origin_in_hull", "plane_frame",
    "point_record", "population_grad_v", "population_grad_v_at", "population_grad_w",
    "population_grad_w_at", "population_loss", "population_loss_at", "run_trial", "run_trials",
    "sample_loss_and_coarse_grad", "sigma_moments", "spurious_records", "success_rates",
    "trajectory", "track_geometry",
]
