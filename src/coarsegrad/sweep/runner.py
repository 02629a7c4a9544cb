"""Run a sweep into a folder, skipping what is already done.

Folder layout::

    DIR/sweep.json           the parsed spec, backend and time of the last invocation
    DIR/trials.jsonl         one result line per finished trial (see store, trial)
    DIR/trials/<id>/         each trial's run record (config.json, metrics.jsonl, …, worker.json)
    DIR/summary.md, plots/   written by ``summarize``

Re-running the same spec into the same folder runs only the trials without an ``ok``
result (missing or failed). An ``ok`` result whose config differs from the spec's is a
:class:`ConfigError`: use another folder for another experiment.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coarsegrad.errors import ConfigError
from coarsegrad.io.progress import Progress
from coarsegrad.io.records import atomic_write_json
from coarsegrad.sweep.backends import run_local, run_ray
from coarsegrad.sweep.spec import SweepSpec
from coarsegrad.sweep.store import TRIALS_FILE, append_record, exclusive_sweep, latest_trials
from coarsegrad.validate import MAX_WORKERS, integer, optional_integer

BACKENDS = ("local", "ray")


@dataclass
class SweepResult:
    """Counts for one invocation: trials in the spec, skipped as done, ok, failed; wall seconds."""

    out: Path
    total: int
    skipped: int
    ok: int
    failed: int
    seconds: float


class _Tracker:
    """Appends each result to trials.jsonl and keeps the progress bar's counts."""

    def __init__(self, path: Path, bar: Progress) -> None:
        self.path, self.bar = path, bar
        self.running: set[str] = set()
        self.ok = self.failed = 0

    def started(self, trial_id: str) -> None:
        self.running.add(trial_id)
        self.bar.update(0, running=len(self.running), failed=self.failed)

    def finished(self, record: dict[str, Any]) -> None:
        append_record(self.path, record)
        self.running.discard(record["id"])
        if record["status"] == "ok":
            self.ok += 1
        else:
            self.failed += 1
        self.bar.update(1, running=len(self.running), failed=self.failed)


def pending_trials(spec: SweepSpec, out: Path) -> tuple[list[dict[str, Any]], int]:
    """(trials of ``spec`` still to run as dicts, number already ``ok`` in ``out``)."""
    done = latest_trials(out / TRIALS_FILE)
    todo, skipped = [], 0
    for trial in spec.trials():
        as_dict = json.loads(json.dumps(dataclasses.asdict(trial)))
        previous = done.get(trial.id)
        if previous is not None and previous.status == "ok":
            if previous.config != as_dict["config"]:
                raise ConfigError("out", f"{out} holds a result for {trial.id} with another config; "
                                  "use a new --out for a changed spec")
            skipped += 1
            continue
        todo.append(as_dict)
    return todo, skipped


def run_sweep(spec: SweepSpec, out: str | Path, *, backend: str = "local", workers: int | None = None,
              ray_address: str | None = None, max_retries: int = 2, progress: bool = True) -> SweepResult:
    """Run the unfinished trials of ``spec`` into ``out``; one result line per trial.

    ``workers``: processes (local) or trials in flight (ray); default all cores / the
    cluster's CPUs. ``max_retries``: re-runs of a trial whose worker died.
    """
    if backend not in BACKENDS:
        raise ConfigError("backend", f"must be one of {', '.join(BACKENDS)}, got {backend!r}")
    optional_integer("workers", workers, lo=1, hi=MAX_WORKERS)
    integer("max_retries", max_retries, lo=0, hi=1000)
    if ray_address is not None and backend != "ray":
        raise ConfigError("ray_address", "needs --backend ray")
    out = Path(out).resolve()  # workers may run in another directory
    with exclusive_sweep(out) as lock_fd:
        todo, skipped = pending_trials(spec, out)
        atomic_write_json(out / "sweep.json", {**spec.as_dict(), "backend": backend, "ray_address": ray_address,
                                               "workers": workers, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        tracker = _Tracker(out / TRIALS_FILE, Progress(len(todo), "sweep", enabled=progress))
        started = time.perf_counter()
        trials_dir = str(out / "trials")
        if todo and backend == "local":
            run_local(todo, trials_dir, spec.checkpoint_every, tracker, workers, max_retries + 1, (lock_fd,))
        elif todo:
            run_ray(todo, trials_dir, spec.checkpoint_every, tracker, workers, max_retries + 1, ray_address)
        tracker.bar.close()
        return SweepResult(out, len(todo) + skipped, skipped, tracker.ok, tracker.failed,
                           time.perf_counter() - started)
