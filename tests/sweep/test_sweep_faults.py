"""Sweeps survive killed workers: SIGKILL a pool worker, SIGKILL a Ray worker on a real local
Ray head (127.0.0.1 only); every trial still ends up in trials.jsonl exactly once, ok.

The Ray test starts its own head (``ray start --head`` on a free port, token auth with a
fresh token, a private temp dir) and stops it in teardown (``ray stop``), so CI needs no
service; it is skipped when ray is not installed.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from coarsegrad.config import DataConfig, ModelConfig
from coarsegrad.sweep import read_records
from coarsegrad.training.loop import TrainConfig
from coarsegrad.training.run import run_training

SPEC = """
base = "synthetic"
seeds = 2
checkpoint_every = 25
[data]
samples_per_class = 30
[train]
steps = 250
stop_at_perfect = false
log_every = 1
[axes]
lr = [0.5]
ste = ["relu", "identity"]
"""


def _sweep(spec: Path, out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "coarsegrad.cli.main", "sweep", str(spec), "--out", str(out),
            "--quiet", "--no-summary", *extra]
    return subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _kill_a_running_trial(out: Path, driver: subprocess.Popen, timeout: float = 90.0) -> tuple[str, int]:
    """SIGKILL the worker of a trial that is training (worker.json pid, metrics written, no result)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and driver.poll() is None:
        finished = {r["id"] for r in read_records(out / "trials.jsonl")}
        for marker in sorted((out / "trials").glob("*/worker.json")):
            run = marker.parent
            metrics = run / "metrics.jsonl"
            size = metrics.stat().st_size if metrics.is_file() else 0
            if run.name in finished or not 200 < size < 5000:  # training, far from done
                continue
            try:
                pid = json.loads(marker.read_text())["pid"]
                os.kill(pid, signal.SIGKILL)
            except (ValueError, KeyError, ProcessLookupError):
                continue
            return run.name, pid
        time.sleep(0.02)
    raise AssertionError(f"no running trial to kill (driver rc={driver.poll()})")


def _check_every_trial_once_ok(out: Path, killed: str) -> dict:
    records = read_records(out / "trials.jsonl")
    ids = [r["id"] for r in records]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 4, ids
    assert all(r["status"] == "ok" for r in records), [(r["id"], r["error"]) for r in records]
    by_id = {r["id"]: r for r in records}
    assert by_id[killed]["attempts"] == 2
    return by_id


def test_local_pool_worker_killed_mid_sweep(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    out = tmp_path / "sweep"
    driver = _sweep(spec, out, "--workers", "2", env={"OMP_NUM_THREADS": "1"})
    killed, pid = _kill_a_running_trial(out, driver)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 0, err
    by_id = _check_every_trial_once_ok(out, killed)
    assert by_id[killed]["pid"] != pid
    # the retry resumed from the trial's checkpoint: same weights as a run never killed
    tables = by_id[killed]["config"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the pool workers
    try:
        run_training(DataConfig(**tables["data"]), ModelConfig(**tables["model"]), TrainConfig(**tables["train"]),
                     tmp_path / "reference", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "reference" / "model.safetensors").read_bytes() == \
        (out / "trials" / killed / "model.safetensors").read_bytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_processes(temp: str = "/nonexistent") -> set[int]:
    """PIDs of Ray's daemons and workers (by process name, or ``temp`` in the command line)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit():
                continue
            name = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if name in ("raylet", "gcs_server") or name.startswith("ray::") or temp.encode() in cmdline:
            pids.add(int(entry.name))
    return pids


@pytest.fixture
def ray_head():
    """A real single-node Ray cluster on 127.0.0.1 for this test; (address, env) for clients."""
    pytest.importorskip("ray")
    ray_bin = Path(sys.executable).with_name("ray")
    temp = tempfile.mkdtemp(prefix="cgray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    before = _ray_processes(temp)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    port = _free_port()
    start = subprocess.run([str(ray_bin), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                            "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                            f"--temp-dir={temp}"], env=env, capture_output=True, text=True, timeout=120)
    try:
        assert start.returncode == 0, start.stderr[-2000:]
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([str(ray_bin), "stop"], env=env, capture_output=True, timeout=60)
        leaked = _ray_processes(temp) - before
        if leaked:
            subprocess.run([str(ray_bin), "stop", "--force"], env=env, capture_output=True, timeout=60)
            time.sleep(1)
        shutil.rmtree(temp, ignore_errors=True)
        assert not (_ray_processes(temp) - before), "ray processes leaked"


def test_ray_worker_killed_mid_sweep(tmp_path, ray_head):
    address, env = ray_head
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    out = tmp_path / "sweep"
    driver = _sweep(spec, out, "--backend", "ray", "--ray-address", address, env=env)
    killed, pid = _kill_a_running_trial(out, driver)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 0, err[-3000:]
    by_id = _check_every_trial_once_ok(out, killed)
    assert by_id[killed]["pid"] != pid  # ran again in another Ray worker
    assert all(r["host"] == socket.gethostname() for r in by_id.values())
