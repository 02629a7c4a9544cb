"""Sweeps: a TOML spec of axes × seeds, run as independent trials on a local process
pool or a Ray cluster, with one durable result line per trial (see ``docs/sweeps.md``).

    spec = load_spec("configs/sweeps/synthetic_landscape.toml")
    run_sweep(spec, "runs/sweep", backend="local")     # or backend="ray", ray_address=...
    summarize("runs/sweep")                            # summary.md + plots/
"""

from coarsegrad.sweep.runner import SweepResult, run_sweep
from coarsegrad.sweep.spec import Axis, SweepSpec, Trial, load_spec, parse_spec
from coarsegrad.sweep.store import append_record, latest_records, read_records
from coarsegrad.sweep.summary import summarize

__all__ = ["Axis", "SweepResult", "SweepSpec", "Trial", "append_record", "latest_records", "load_spec",
           "parse_spec", "read_records", "run_sweep", "summarize"]
