"""Resumable training: a TrainState taken at any step, saved and loaded, continues bit-identically.

In-process: checkpoint at every step of a reference run, resume from several of them.
End to end: ``coarsegrad train --checkpoint-every`` killed with SIGKILL at a random step,
then ``--resume``; the weights equal an uninterrupted run's, byte for byte.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import coarsegrad as cg
from coarsegrad.cli.main import main
from coarsegrad.io import tensorfile
from coarsegrad.training.state import load_train_state, save_train_state, truncate_metrics

CASES = {
    "sgd-full": dict(optimizer="sgd", lr=0.5),
    "momentum-mini": dict(optimizer="momentum", lr=0.05, batch_size=16),
    "adam-mini-cosine": dict(optimizer="adam", lr=0.01, batch_size=20, schedule="cosine", log_every=3),
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one thread is faster on a shared 2-core machine, and it matches the
    subprocesses (OMP_NUM_THREADS=1), so in-process references are bit-comparable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def problem():
    X, y = cg.orthogonal_subspaces(3, 12, 3, 40, generator=torch.Generator().manual_seed(0))
    net = cg.TwoLayerNet(12, 3, 5, bits=2, ste="clipped_relu", second_layer="trained",
                         generator=torch.Generator().manual_seed(1))
    return X, y, net


@pytest.mark.parametrize("case", sorted(CASES))
def test_resume_from_any_step_is_bit_identical(case, tmp_path):
    config = cg.TrainConfig(steps=40, stop_at_perfect=False, seed=3, **CASES[case])
    X, y, net = problem()
    states, logs = {}, []
    reference = cg.train(net, X, y, config, on_log=logs.append, checkpoint_every=1,
                         on_checkpoint=lambda s: states.__setitem__(s.step, s))
    assert sorted(states) == list(range(1, 40))  # every step but the last
    for step in (1, 7, 13, 39):
        path = tmp_path / f"{step}.safetensors"
        save_train_state(path, states[step])
        X, y, resumed_net = problem()
        resumed_logs = []
        history = cg.train(resumed_net, X, y, config, on_log=resumed_logs.append, resume=load_train_state(path))
        for name, tensor in net.state_dict().items():
            assert torch.equal(tensor, resumed_net.state_dict()[name]), (step, name)
        assert history.step == reference.step and history.loss == reference.loss
        assert resumed_logs == [r for r in logs if r["step"] >= step]


def test_resume_rejects_other_data(tmp_path):
    X, y, net = problem()
    states = []
    cg.train(net, X, y, cg.TrainConfig(steps=3, batch_size=8), checkpoint_every=1, on_checkpoint=states.append)
    with pytest.raises(cg.ConfigError, match="resume"):
        cg.train(net, X[:50], y[:50], cg.TrainConfig(steps=3, batch_size=8), resume=states[0])
    with pytest.raises(cg.ConfigError, match="checkpoint_every"):
        cg.train(net, X, y, cg.TrainConfig(steps=3), checkpoint_every=-1)
    bad = tmp_path / "bad.safetensors"
    tensorfile.save(bad, {"x": torch.zeros(2)})
    with pytest.raises(cg.DataError):
        load_train_state(bad)


def test_truncate_metrics_drops_later_and_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(6)) + '{"step": 6, "lo')
    assert truncate_metrics(path, 4) == 4
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0, 1, 2, 3]


# -- end to end: kill -9 and --resume ---------------------------------------------------------

STEPS = 160
SMALL = ["--num-classes", "3", "--dim", "12", "--subspace-dim", "3", "--samples-per-class", "40",
         "--units-per-class", "5", "--second-layer", "trained", "--steps", str(STEPS), "--log-every", "1",
         "--no-stop-at-perfect", "--seed", "4", "--quiet"]

KILL_CASES = {  # flags, checkpoint interval
    "sgd-full": (["--optimizer", "sgd", "--lr", "0.5"], 7),
    "momentum-mini": (["--optimizer", "momentum", "--lr", "0.05", "--batch-size", "16"], 5),
    "adam-mini": (["--optimizer", "adam", "--lr", "0.01", "--batch-size", "20"], 11),
}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "coarsegrad.cli.main", "train", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count for every run


def _last_step(metrics: Path) -> int:
    try:
        lines = metrics.read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else -1
    except (OSError, ValueError):
        return -1


def _kill_at(targets: list[tuple[subprocess.Popen, Path, int]], timeout: float = 90.0) -> None:
    """SIGKILL each process as soon as its metrics.jsonl shows step >= its kill step (all watched at once)."""
    waiting = list(targets)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for target in list(waiting):
            proc, metrics, step = target
            if _last_step(metrics) >= step or proc.poll() is not None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                waiting.remove(target)
        time.sleep(0.005)
    for proc, _, _ in waiting:  # timed out: never leave a process behind
        proc.kill()
        proc.wait()
    for proc, metrics, _ in targets:
        assert proc.returncode == -signal.SIGKILL, metrics
        assert not (metrics.parent / "summary.json").exists(), f"{metrics.parent} finished before the kill"


def test_kill_9_then_resume_is_bit_identical(tmp_path):
    rng = random.Random(2024)
    env = _env()
    procs = {}
    for case, (flags, every) in KILL_CASES.items():  # all at once: 2 cores, mostly start-up time
        procs[case, "cut"] = subprocess.Popen(
            _cli(*SMALL, *flags, "--checkpoint-every", str(every), "--out", str(tmp_path / case / "cut")), env=env)
    kill_steps = {case: rng.randrange(15, 90) for case in KILL_CASES}
    _kill_at([(procs[case, "cut"], tmp_path / case / "cut" / "metrics.jsonl", kill_steps[case]) for case in KILL_CASES])
    resumed = {case: subprocess.Popen(_cli("--resume", str(tmp_path / case / "cut")), env=env,
                                      stdout=subprocess.PIPE, text=True) for case in KILL_CASES}
    # one case is cut twice: its resumed run is killed again, later
    _kill_at([(resumed["adam-mini"], tmp_path / "adam-mini" / "cut" / "metrics.jsonl", kill_steps["adam-mini"] + 40)])
    resumed["adam-mini"] = subprocess.Popen(_cli("--resume", str(tmp_path / "adam-mini" / "cut")), env=env,
                                            stdout=subprocess.PIPE, text=True)
    for case, (flags, _) in KILL_CASES.items():  # uninterrupted references, here (one thread too)
        assert main(["train", *SMALL, *flags, "--out", str(tmp_path / case / "full")]) == 0
    for case in KILL_CASES:
        assert resumed[case].wait(timeout=120) == 0, case
        full, cut = tmp_path / case / "full", tmp_path / case / "cut"
        assert (full / "model.safetensors").read_bytes() == (cut / "model.safetensors").read_bytes(), case
        steps = [json.loads(line)["step"] for line in (cut / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(STEPS)), f"{case}: duplicate or missing steps after resume"
        assert (full / "metrics.jsonl").read_text() == (cut / "metrics.jsonl").read_text()
        summary = json.loads((cut / "summary.json").read_text())
        assert 0 < summary["resumed_from_step"] < STEPS  # resumed from a checkpoint, not restarted
        assert not (cut / "checkpoint.safetensors").exists()  # removed once the run completed


def test_resume_cli_errors(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nothing"), "--quiet"]) == 2
    assert "resume" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(["train", *SMALL[:-1], "--steps", "3", "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--lr", "3", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lr" in err[0]
    before = (out / "model.safetensors").read_bytes()
    assert main(["train", "--resume", str(out), "--quiet"]) == 0  # completed: nothing to do
    assert (out / "model.safetensors").read_bytes() == before
