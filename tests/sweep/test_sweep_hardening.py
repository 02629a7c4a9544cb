"""A killed driver leaves no workers and no lock; a spec is fully checked before any trial
runs (non-finite numbers, wrong types, dates, arrays of tables, deep nesting)."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coarsegrad.cli.main import main
from coarsegrad.errors import ConfigError
from coarsegrad.sweep import load_spec, parse_spec
from coarsegrad.sweep.store import LOCK_FILE

SLOW = """
seeds = 2
[data]
samples_per_class = 30
[train]
steps = 100000
stop_at_perfect = false
[axes]
lr = [0.5]
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_die_with_a_killed_driver_and_the_lock_is_free(tmp_path):
    spec, out = tmp_path / "slow.toml", tmp_path / "out"
    spec.write_text(SLOW)
    driver = subprocess.Popen([sys.executable, "-m", "coarsegrad.cli.main", "sweep", str(spec), "--out", str(out),
                               "--quiet", "--no-summary", "--workers", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 120
        markers: list[Path] = []
        while time.monotonic() < deadline and len(markers) < 2 and driver.poll() is None:
            markers = sorted((out / "trials").glob("*/worker.json")) if (out / "trials").is_dir() else []
            time.sleep(0.2)
        assert len(markers) == 2, driver.stderr.read().decode() if driver.poll() is not None else "no workers"
        pids = [json.loads(m.read_text())["pid"] for m in markers]
        assert all(_alive(pid) for pid in pids)
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in pids), "pool workers outlived their driver"
        fd = os.open(out / LOCK_FILE, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError if still held
        finally:
            os.close(fd)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for pid in pids:  # should be gone; never leave a stray worker behind on failure
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_pool_worker_does_not_hold_the_lock_fd():
    """The worker initializer closes the descriptors it is told to (the sweep lock)."""
    from coarsegrad.parallel import process_pool

    read, write = os.pipe()
    try:
        with process_pool(1, close_fds=(write,)) as pool:
            assert pool.submit(os.getpid).result(timeout=60) != os.getpid()
            os.close(write)
            write = -1
            # the only other copy of the write end was the worker's, closed by init_worker: EOF
            assert os.read(read, 1) == b""
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)


@pytest.mark.parametrize("spec, field", [
    ({"axes": {"lr": [0.1, float("inf"), 0.2]}}, "axes.lr"),
    ({"axes": {"lr": [0.1, float("nan")]}}, "axes.lr"),
    ({"axes": {"lr": {"log_start": 0, "log_stop": 400, "num": 2}}}, "axes.lr"),
    ({"axes": {"batchnorm": [1e6]}}, "axes.batchnorm"),
    ({"axes": {"steps": [10, 2.5]}}, "axes.steps"),
    ({"train": {"stop_at_perfect": "yes"}}, "train.stop_at_perfect"),
    ({"model": {"batchnorm": 1}}, "model.batchnorm"),
    ({"train": {"lr": float("inf")}}, "train.lr"),
    ({"train": [{"lr": 1}]}, "train"),
    ({"data": 1}, "data"),
    ({"seeds": 10**9}, "seeds"),
    ({"seeds": [2**64]}, "seeds"),
    ({"axes": {"lr": {"start": 0.1, "stop": 1, "num": 10**9}}}, "axes.lr"),
    ({"axes": {"lr": [0.1] * 1, "units_per_class": list(range(1, 1001))}, "seeds": 200}, "axes"),
    ({"description": 5}, "description"),
])
def test_bad_values_are_refused_when_the_spec_is_read(spec, field):
    with pytest.raises(ConfigError) as info:
        parse_spec(spec)
    assert info.value.field == field


@pytest.mark.parametrize("text, field", [
    ("[[train]]\nlr = 0.1\n", "train"),
    ("data = 1\n", "data"),
    ("description = 1979-05-27\n", "spec.description"),
    ("[axes]\nlr = " + "[" * 1000 + "]" * 1000 + "\n", "spec"),
    ("[axes]\nlr = [0.1, inf, 0.2]\n", "axes.lr"),
])
def test_bad_spec_files_one_line_exit_2_and_nothing_written(tmp_path, capsys, text, field):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert info.value.field == field
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
