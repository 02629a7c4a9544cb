"""coarsegrad.parallel: results in order, in-process and pooled alike; errors reach the caller;
workers use one thread and are armed to die with their parent."""

from __future__ import annotations

import os

import pytest
import torch

from coarsegrad.errors import ConfigError
from coarsegrad.parallel import process_pool, run_jobs, run_trials


def _square(x: int) -> int:
    return x * x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


def _worker_facts(_: object) -> tuple[int, int, int]:
    signal = -1
    try:  # PR_GET_PDEATHSIG = 2
        import ctypes

        value = ctypes.c_int(0)
        ctypes.CDLL(None).prctl(2, ctypes.byref(value), 0, 0, 0)
        signal = value.value
    except OSError:
        pass
    return os.getpid(), torch.get_num_threads(), signal


@pytest.mark.parametrize("workers", [1, 2])
def test_results_in_item_order_with_progress_callback(workers):
    seen = []
    assert run_jobs(_square, list(range(7)), workers, on_result=lambda done: seen.append(len(done))) == \
        [x * x for x in range(7)]
    assert seen == list(range(1, 8))
    assert run_trials([(_square, {"x": 3}), (_square, {"x": 4})], workers, progress=False) == [9, 16]


@pytest.mark.parametrize("workers", [1, 2])
def test_an_error_in_a_job_reaches_the_caller(workers):
    with pytest.raises(ValueError, match="three"):
        run_jobs(_fail_on_three, [1, 2, 3, 4], workers)


def test_workers_are_checked():
    for bad in (0, -1, True, 1.5, 10**9):
        with pytest.raises(ConfigError, match="workers"):
            run_jobs(_square, [1], bad)


@pytest.mark.skipif(not os.path.exists("/proc/self"), reason="Linux only")
def test_workers_have_one_thread_and_die_with_their_parent():
    import signal

    with process_pool(1) as pool:
        pid, threads, death_signal = pool.submit(_worker_facts, None).result(timeout=60)
    assert pid != os.getpid() and threads == 1 and death_signal == signal.SIGKILL
