"""The one process pool for independent jobs (experiments, theory studies, sweeps).

:func:`process_pool` makes a ``ProcessPoolExecutor`` whose workers (:func:`init_worker`)

- use one torch thread each, so ``workers`` processes use ``workers`` cores;
- die with the process that started them: on Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``
  (via ctypes), and a worker whose parent is already gone exits at once; so a driver
  killed with ``kill -9`` leaves no workers running (or holding its files);
- close the inherited file descriptors ``close_fds`` (e.g. the sweep lock, which only the
  driver may hold: a forked worker would otherwise keep the ``flock`` alive).

The start method is ``fork`` where the platform has it (workers inherit the imported
modules: no re-import of torch), else ``spawn``. :func:`run_jobs` maps a function over
items with a progress bar, results in item order; an exception in a job cancels the
rest and is raised in the caller. ``workers=1`` runs in this process.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterable, Sequence, TypeVar

import torch

from coarsegrad.io.progress import Progress
from coarsegrad.validate import MAX_WORKERS, integer

T = TypeVar("T")
R = TypeVar("R")
Trial = tuple[Callable[..., Any], dict[str, Any]]  # (function, kwargs): a picklable call
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int) -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; True if set);
    exit at once if the parent ``parent`` (0: not checked) is already gone."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if parent and os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    return armed


def init_worker(parent: int, close_fds: tuple[int, ...] = ()) -> None:
    """Set up a pool worker: one torch thread, death with ``parent``, ``close_fds`` closed."""
    torch.set_num_threads(1)
    die_with_parent(parent)
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass


def default_workers(workers: int | None) -> int:
    """``workers`` checked (1..MAX_WORKERS), or all cores if None."""
    return integer("workers", (os.cpu_count() or 1) if workers is None else workers, lo=1, hi=MAX_WORKERS)


def process_pool(workers: int, close_fds: Iterable[int] = (), start_method: str | None = None) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes set up by :func:`init_worker` (module docstring)."""
    if start_method is None:
        start_method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    parent = os.getpid() if start_method in ("fork", "spawn") else 0  # forkserver: the server is the parent
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(start_method),
                               initializer=init_worker, initargs=(parent, tuple(close_fds)))


def run_jobs(function: Callable[[T], R], items: Sequence[T], workers: int | None = None, *, desc: str = "jobs",
             progress: bool = False, on_result: Callable[[list[R]], None] | None = None,
             start_method: str | None = None) -> list[R]:
    """[function(item) for item in items], on ``workers`` processes (default: all cores).

    ``on_result`` receives the results finished so far (in item order) after each job.
    """
    workers = default_workers(workers)
    bar = Progress(len(items), desc, enabled=progress)
    results: list[R | None] = [None] * len(items)
    done = [False] * len(items)

    def finish(i: int, result: R) -> None:
        results[i], done[i] = result, True
        bar.update(1)
        if on_result is not None:
            on_result([r for r, d in zip(results, done, strict=True) if d])  # type: ignore[misc]

    try:
        if workers == 1 or len(items) <= 1:
            for i, item in enumerate(items):
                finish(i, function(item))
        else:
            pool = process_pool(min(workers, len(items)), start_method=start_method)
            try:
                futures = {pool.submit(function, item): i for i, item in enumerate(items)}
                for future in as_completed(futures):
                    finish(futures[future], future.result())
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown(wait=True)
    finally:
        bar.close()
    return results  # type: ignore[return-value]


def call(trial: Trial) -> Any:
    """``function(**kwargs)`` of a ``(function, kwargs)`` pair."""
    function, kwargs = trial
    return function(**kwargs)


def run_trials(trials: list[Trial], workers: int | None = None, desc: str = "trials", progress: bool = True,
               on_result: Callable[[list[Any]], None] | None = None) -> list[Any]:
    """Run ``(function, kwargs)`` pairs by :func:`run_jobs`; results in the order of ``trials``."""
    return run_jobs(call, trials, workers, desc=desc, progress=progress, on_result=on_result)
