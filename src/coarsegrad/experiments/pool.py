"""Run independent trials in a process pool, with a progress bar.

Each trial is a picklable ``(function, kwargs)`` pair; workers run with one torch
thread each so that ``workers`` processes use ``workers`` cores.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable

import torch

from coarsegrad.io.progress import Progress

Trial = tuple[Callable[..., dict], dict[str, Any]]


def _init_worker() -> None:
    torch.set_num_threads(1)


def _call(trial: Trial) -> dict:
    function, kwargs = trial
    return function(**kwargs)


def run_trials(trials: list[Trial], workers: int | None = None, desc: str = "trials",
               progress: bool = True, on_result: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Run every trial; results in the order of ``trials``. ``workers=1`` runs in-process.

    ``on_result`` receives the results finished so far after each trial (to save them).
    """
    workers = workers or os.cpu_count() or 1
    bar = Progress(len(trials), desc, enabled=progress)
    results: list[dict | None] = [None] * len(trials)
    if workers == 1:
        for i, trial in enumerate(trials):
            results[i] = _call(trial)
            bar.update(1)
            if on_result is not None:
                on_result([r for r in results if r is not None])
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
            futures = {pool.submit(_call, trial): i for i, trial in enumerate(trials)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(1)
                if on_result is not None:
                    on_result([r for r in results if r is not None])
    bar.close()
    return [r for r in results if r is not None]
