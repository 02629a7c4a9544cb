"""Where trials run: a local process pool, or Ray tasks; both survive killed workers.

Both backends call ``tracker.started(id)`` when a trial is handed to a worker and
``tracker.finished(result)`` exactly once per trial. A trial whose worker process dies
(SIGKILL, OOM, a lost Ray node) is re-run, up to ``max_attempts`` runs in all; after
that it is a ``failed`` result. A trial that fails inside the worker (bad config, any
exception) is a ``failed`` result at once: it would fail again.

``local``: a :func:`coarsegrad.parallel.process_pool` (one torch thread per worker;
workers die with the driver and do not hold the sweep lock) with at most ``workers``
trials in flight. When a worker dies the pool breaks (``BrokenProcessPool``)
and every trial in flight is lost with it; the pool is recreated and those trials count
one attempt each and are run again.

``ray``: each trial is a task (``num_cpus=1``, Ray's own retries off: the backend
resubmits on ``WorkerCrashedError``/``NodeDiedError``/… so both backends count attempts
alike). ``address`` None starts a local Ray instance bound to 127.0.0.1; otherwise
``ray.init(address)`` joins that cluster (with the token of ``RAY_AUTH_TOKEN`` or
``~/.ray/auth_token`` if it uses token authentication, ``RAY_AUTH_MODE=token``). Before
importing ray this sets, unless already set, ``RAY_USAGE_STATS_ENABLED=0``; for a local
or loopback cluster ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (Ray then keeps every
address on 127.0.0.1); for a local instance ``RAY_AUTH_MODE=token`` with a fresh random
``RAY_AUTH_TOKEN`` (so Ray writes no token file into the home directory).
"""

from __future__ import annotations

import os
import secrets
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Protocol

from coarsegrad.errors import ConfigError
from coarsegrad.parallel import default_workers, process_pool
from coarsegrad.sweep.trial import failed_record, run_trial


class Tracker(Protocol):
    """What a backend reports to: a trial went to a worker; a trial has its result."""

    def started(self, trial_id: str) -> None: ...

    def finished(self, record: dict[str, Any]) -> None: ...


def _give_up(trial: dict, trials_dir: str, attempts: int, why: str) -> dict[str, Any]:
    return failed_record(trial, Path(trials_dir) / trial["id"], f"worker died {attempts} time(s): {why}", attempts)


def _run_pool(pending: deque, trials_dir: str, checkpoint_every: int, workers: int,
              attempts: dict[str, int], tracker: Tracker, close_fds: tuple[int, ...] = ()) -> list[dict]:
    """Run from ``pending`` until it is empty or the pool breaks; returns the trials lost."""
    inflight: dict[Future, dict] = {}
    lost: list[dict] = []

    def collect(done: set[Future]) -> None:
        for future in done:
            trial = inflight.pop(future)
            try:
                record = future.result()
            except BrokenProcessPool:
                lost.append(trial)
                continue
            record["attempts"] = attempts.get(trial["id"], 0) + 1
            tracker.finished(record)

    broken = False
    with process_pool(workers, close_fds) as pool:
        try:
            while (pending or inflight) and not (lost or broken):
                while pending and len(inflight) < workers:
                    trial = pending.popleft()
                    try:
                        future = pool.submit(run_trial, trial, trials_dir, checkpoint_every)
                    except BrokenProcessPool:
                        pending.appendleft(trial)
                        broken = True
                        break
                    inflight[future] = trial
                    tracker.started(trial["id"])
                if inflight:
                    collect(wait(inflight, return_when=FIRST_COMPLETED)[0])
            collect(wait(inflight)[0])  # after a break every future fails at once
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return lost


def run_local(trials: list[dict], trials_dir: str, checkpoint_every: int, tracker: Tracker,
              workers: int | None = None, max_attempts: int = 3, close_fds: tuple[int, ...] = ()) -> None:
    """Run ``trials`` in a process pool of ``workers`` (default: all cores); the workers
    close ``close_fds`` (descriptors only the driver may hold)."""
    workers = default_workers(workers)
    pending: deque[dict[str, Any]] = deque(trials)
    attempts: dict[str, int] = {}
    while pending:
        for trial in _run_pool(pending, trials_dir, checkpoint_every, workers, attempts, tracker, close_fds):
            attempts[trial["id"]] = attempts.get(trial["id"], 0) + 1
            if attempts[trial["id"]] < max_attempts:
                pending.append(trial)
            else:
                tracker.finished(_give_up(trial, trials_dir, attempts[trial["id"]], "worker process killed"))


def _is_loopback(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def import_ray(address: str | None) -> Any:
    """``import ray`` with the environment described in the module docstring."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None or _is_loopback(address):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if address is None and "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    try:
        import ray
    except ImportError:
        raise ConfigError("backend", "ray is not installed; pip install 'coarsegrad[ray]'") from None
    return ray


def run_ray(trials: list[dict], trials_dir: str, checkpoint_every: int, tracker: Tracker,
            workers: int | None = None, max_attempts: int = 3, address: str | None = None) -> None:
    """Run ``trials`` as Ray tasks; at most ``workers`` in flight (default: the cluster's CPUs)."""
    ray = import_ray(address)
    if address is None:
        ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR", object_store_memory=256 * 2**20, _node_ip_address="127.0.0.1")
    else:
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError("ray_address", f"cannot connect to a Ray cluster at {address} ({exc})") from None
    system_failures = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                       ray.exceptions.ObjectLostError, ray.exceptions.OutOfMemoryError,
                       ray.exceptions.TaskUnschedulableError, ray.exceptions.RaySystemError)
    remote = ray.remote(num_cpus=1, max_retries=0)(run_trial)
    pending: deque[dict[str, Any]] = deque(trials)
    attempts: dict[str, int] = {}
    inflight: dict[Any, dict[str, Any]] = {}
    try:
        while pending or inflight:
            limit = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
            while pending and len(inflight) < limit:
                trial = pending.popleft()
                inflight[remote.remote(trial, trials_dir, checkpoint_every)] = trial
                tracker.started(trial["id"])
            for ref in ray.wait(list(inflight), num_returns=1)[0]:
                trial = inflight.pop(ref)
                tries = attempts.get(trial["id"], 0) + 1
                try:
                    record = ray.get(ref)
                    record["attempts"] = tries
                except system_failures as exc:
                    attempts[trial["id"]] = tries
                    if tries < max_attempts:
                        pending.append(trial)
                        continue
                    record = _give_up(trial, trials_dir, tries, type(exc).__name__)
                except ray.exceptions.RayError as exc:  # the task itself raised: it would again
                    record = failed_record(trial, Path(trials_dir) / trial["id"],
                                           str(exc).strip().splitlines()[-1][:500], tries)
                tracker.finished(record)
    finally:
        ray.shutdown()
