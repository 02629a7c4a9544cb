"""One sweep trial, as run by a worker: a run record under ``trials/<id>/`` and one result.

The result (a line of ``trials.jsonl``, a :class:`~coarsegrad.io.results.TrialRecord` as a dict)::

    {"id", "params", "seed", "config", "status": "ok" | "failed", "error": str | None,
     "metrics": {steps, final_loss, train_acc, perfect, perfect_step, test_loss, test_acc,
                 train_seconds, diverged_step} | None,
     "run": run-record folder, "seconds": wall time in the worker, "host", "pid", "attempts",
     "schema_version"}

Bad input (``ConfigError``/``DataError``) or any other exception in the trial is a
``failed`` result, never an exception out of the worker; a diverged run is ``ok`` with
``diverged_step`` set (it is an outcome, and re-running it would diverge again). The
worker first writes ``trials/<id>/worker.json`` = {pid, host, started} (which process ran
what). A retried trial resumes from its checkpoint when the spec sets ``checkpoint_every``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from coarsegrad.config import DataConfig, ModelConfig
from coarsegrad.errors import TrainingDiverged
from coarsegrad.io.records import atomic_write_json
from coarsegrad.io.results import TrialMetrics, TrialRecord
from coarsegrad.training.loop import TrainConfig
from coarsegrad.training.run import resolved_config, run_training


def base_record(trial: dict[str, Any], run_dir: Path | str) -> TrialRecord:
    """The fields every result has, before the outcome is known."""
    return TrialRecord(id=trial["id"], params=trial["params"], seed=trial["seed"], config=trial["config"],
                       run=str(run_dir), host=socket.gethostname(), pid=os.getpid())


def failed_record(trial: dict[str, Any], run_dir: Path | str, error: str, attempts: int) -> dict[str, Any]:
    """The result of a trial the driver gave up on (its worker died ``attempts`` times)."""
    record = base_record(trial, run_dir)
    record.error, record.attempts, record.host, record.pid = error, attempts, None, None
    return record.to_dict()


def _same_config(run_dir: Path, config: dict) -> bool:
    try:
        return json.loads((run_dir / "config.json").read_text(encoding="utf-8")) == json.loads(json.dumps(config))
    except (OSError, json.JSONDecodeError):
        return False


def run_trial(trial: dict[str, Any], trials_dir: str, checkpoint_every: int = 0) -> dict[str, Any]:
    """Run ``trial`` (a :class:`~coarsegrad.sweep.spec.Trial` as a dict) into ``trials_dir/<id>``.

    A complete or checkpointed run of the same config already there is resumed (so a
    retry after a killed worker does not start over); returns the result dict.
    """
    started = time.perf_counter()
    run_dir = Path(trials_dir) / trial["id"]
    record = base_record(trial, run_dir)
    try:
        atomic_write_json(run_dir / "worker.json", {"pid": os.getpid(), "host": record.host, "started": time.time()})
        tables = trial["config"]
        data, model, train = DataConfig(**tables["data"]), ModelConfig(**tables["model"]), TrainConfig(**tables["train"])
        resume = _same_config(run_dir, resolved_config(data, model, train))
        try:
            summary = run_training(data, model, train, run_dir, progress=False,
                                   checkpoint_every=checkpoint_every, resume=resume)
            metrics = TrialMetrics(
                steps=summary.steps, final_loss=summary.final_loss, train_acc=summary.train_acc,
                perfect=summary.train_acc == 1.0, perfect_step=summary.perfect_step, test_loss=summary.test_loss,
                test_acc=summary.test_acc, train_seconds=summary.seconds)
        except TrainingDiverged as exc:
            metrics = TrialMetrics(diverged_step=exc.step)
        record.status, record.metrics = "ok", metrics
    except Exception as exc:  # noqa: BLE001 - every failure is a result, never a lost trial
        record.error = f"{type(exc).__name__}: {exc}"
    record.seconds = time.perf_counter() - started
    return record.to_dict()
