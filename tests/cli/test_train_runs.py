"""``coarsegrad train`` as a user runs it: summaries, data defaults, signals, resume,
divergence, eval's dataset, threads, TensorBoard, and where records go."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from coarsegrad.cli.main import build_parser, main
from coarsegrad.cli.train import resolve_configs
from coarsegrad.io.checkpoint import load_checkpoint
from coarsegrad.training.state import load_train_state

TINY = ["--data", "synthetic", "--num-classes", "3", "--dim", "12", "--subspace-dim", "3",
        "--samples-per-class", "20", "--units-per-class", "10", "--quiet"]
MNIST = Path(os.environ.get("COARSEGRAD_DATA", "/nonexistent")) / "mnist"


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def summary(folder):
    return json.loads((Path(folder) / "summary.json").read_text())


SUMMARY_KEYS = {"schema_version", "status", "steps", "final_loss", "train_acc", "test_loss", "test_acc",
                "perfect_step", "seconds", "data", "resumed_from_step", "diverged_step", "diverged_parameter"}


def test_summaries_do_not_depend_on_log_every(tmp_path, capsys):
    results = []
    for k in (1, 7, 300):
        code, out, _ = run_cli(capsys, "train", *TINY, "--steps", 300, "--lr", 0.5, "--log-every", k,
                               "--no-stop-at-perfect", "--out", tmp_path / f"k{k}")
        assert code == 0
        s = summary(tmp_path / f"k{k}")
        assert set(s) == SUMMARY_KEYS and s["status"] == "completed"
        s.pop("seconds")
        results.append(s)
        assert f"loss={s['final_loss']:.4g}" in out
    assert results[0] == results[1] == results[2]


def test_data_defaults_fill_only_unset_fields():
    parse = build_parser().parse_args
    data, model, train = resolve_configs(parse(["train", "--data", "synthetic"]))
    assert (train.lr, train.steps, train.batch_size, train.stop_at_perfect) == (1.0, 10000, None, True)
    assert (model.model, model.units_per_class, model.second_layer) == ("two_layer", 20, "fixed")
    data, model, train = resolve_configs(parse(["train"]))
    assert (data.data, train.lr, train.steps) == ("synthetic", 1.0, 10000)
    data, model, train = resolve_configs(parse(["train", "--data", "mnist", "--lr", "0.01"]))
    assert (train.optimizer, train.batch_size, train.schedule, train.lr) == ("momentum", 128, "cosine", 0.01)
    assert train.epochs == 3 and train.steps is None and model.model == "mlp"
    _, _, train = resolve_configs(parse(["train", "--data", "kmnist", "--steps", "5", "--model", "lenet5"]))
    assert train.steps == 5 and train.epochs is None
    _, _, train = resolve_configs(parse(["train", "--config", "synthetic", "--data", "synthetic", "--lr", "0.3"]))
    assert (train.lr, train.steps) == (0.3, 10000)


def test_help_lists_every_choice(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    for needle in ("synthetic|mnist|fashion-mnist|kmnist", "two_layer|mlp|lenet5",
                   "identity|relu|clipped_relu|log_tailed_relu", "sgd|momentum|adam", "constant|cosine",
                   "quant|float", "--threads", "--tensorboard"):
        assert needle in text, needle


def test_float_baseline_run_is_recorded(tmp_path, capsys):
    code, _, _ = run_cli(capsys, "train", *TINY, "--act", "float", "--steps", 40, "--lr", 0.5, "--out", tmp_path / "f")
    assert code == 0
    config = json.loads((tmp_path / "f" / "config.json").read_text())
    assert config["model"]["act"] == "float"
    model, _ = load_checkpoint(tmp_path / "f" / "model.safetensors")
    assert isinstance(model.act, torch.nn.ReLU)


def test_divergence_after_the_last_update_exits_1_with_status(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", *TINY, "--lr", "1e308", "--steps", 1, "--out", tmp_path / "d")
    assert code == 1 and "'W'" in err and "learning rate" in err and len(err.strip().splitlines()) == 1
    s = summary(tmp_path / "d")
    assert set(s) == SUMMARY_KEYS
    assert (s["status"], s["diverged_step"], s["diverged_parameter"]) == ("diverged", 0, "W")
    assert not (tmp_path / "d" / "model.safetensors").exists()  # nothing for eval to report 25% on


def test_resume_a_run_killed_before_its_first_checkpoint(tmp_path, capsys):
    out = tmp_path / "r"
    assert run_cli(capsys, "train", *TINY, "--steps", 120, "--lr", 0.5, "--no-stop-at-perfect", "--out", out)[0] == 0
    complete = summary(out)
    # the state a SIGKILL leaves before any checkpoint: config, env, a few lines (the last cut)
    (out / "summary.json").unlink()
    (out / "model.safetensors").unlink()
    lines = (out / "metrics.jsonl").read_text().splitlines(keepends=True)
    (out / "metrics.jsonl").write_text("".join(lines[:3]) + lines[3][:7])
    code, stdout, _ = run_cli(capsys, "train", "--resume", out, "--quiet")
    assert code == 0 and "steps=120" in stdout
    again = summary(out)
    assert again["resumed_from_step"] is None and again["status"] == "completed"
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in complete.items() if k != "seconds"}
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 12  # log_every 10: the synthetic default


def test_resume_accepts_a_config_written_before_the_new_fields(tmp_path, capsys):
    out = tmp_path / "old"
    assert run_cli(capsys, "train", *TINY, "--steps", 30, "--lr", 0.5, "--out", out)[0] == 0
    config = json.loads((out / "config.json").read_text())
    del config["model"]["act"], config["train"]["stop_at_perfect_every"]  # as an older version wrote it
    (out / "config.json").write_text(json.dumps(config))
    (out / "summary.json").unlink()
    code, stdout, err = run_cli(capsys, "train", "--resume", out, "--quiet")
    assert code == 0 and "steps=" in stdout, err


def _start(out, *extra):
    cmd = [sys.executable, "-m", "coarsegrad.cli.main", "train", *TINY, "--steps", "100000000", "--lr", "0.05",
           "--no-stop-at-perfect", "--log-every", "1", "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_training(proc, out):
    """Until the first batch of metrics lines is written (training is under way)."""
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists() or (out / "metrics.jsonl").stat().st_size == 0:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_resumable_checkpoint_model_and_summary(tmp_path, signum, code):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_training(proc, out)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "interrupted at step" in stdout and f"--resume {out}" in stdout
    s = summary(out)
    assert s["status"] == "interrupted" and s["steps"] > 0 and s["train_acc"] is not None
    state = load_train_state(out / "checkpoint.safetensors")
    assert state.step == s["steps"]
    model, _ = load_checkpoint(out / "model.safetensors")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state.model[name])
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == s["steps"] and json.loads(lines[-1])["step"] == s["steps"] - 1
    if signum == signal.SIGTERM:  # resume, then interrupt again: continues from the checkpoint
        inode = (out / "metrics.jsonl").stat().st_ino
        proc = subprocess.Popen([sys.executable, "-m", "coarsegrad.cli.main", "train", "--resume", str(out), "--quiet"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while (out / "metrics.jsonl").stat().st_ino == inode:  # resume rewrites it (after installing handlers)
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 130, stderr
        again = summary(out)
        assert again["status"] == "interrupted" and again["resumed_from_step"] == state.step
        assert again["steps"] >= state.step


def test_eval_defaults_to_the_runs_dataset(tmp_path, capsys):
    out = tmp_path / "s"
    assert run_cli(capsys, "train", *TINY, "--steps", 30, "--lr", 0.5, "--out", out)[0] == 0
    code, stdout, _ = run_cli(capsys, "eval", out, "--repeats", 1)
    assert code == 0 and "on synthetic" in stdout and "NOT the dataset" not in stdout


@pytest.mark.skipif(not MNIST.is_dir(), reason="needs MNIST in $COARSEGRAD_DATA")
def test_eval_on_another_dataset_says_so(tmp_path, capsys):
    out = tmp_path / "m"
    assert run_cli(capsys, "train", "--data", "mnist", "--steps", 2, "--quiet", "--out", out)[0] == 0
    s = summary(out)
    assert s["test_acc"] is not None and s["train_acc"] is not None
    code, stdout, _ = run_cli(capsys, "eval", out, "--repeats", 1)
    assert code == 0 and "on mnist test split" in stdout and "NOT" not in stdout
    # the Fashion-MNIST files have MNIST's names: point it at the MNIST folder to have a second set
    code, stdout, _ = run_cli(capsys, "eval", out, "--repeats", 1, "--data", "fashion-mnist", "--data-dir", MNIST)
    assert code == 0 and "NOT the dataset the model was trained on: mnist" in stdout


def test_threads_are_set_and_recorded(tmp_path, capsys):
    assert run_cli(capsys, "train", *TINY, "--steps", 3, "--threads", 2, "--out", tmp_path / "t2")[0] == 0
    assert json.loads((tmp_path / "t2" / "env.json").read_text())["torch_threads"] == 2
    assert run_cli(capsys, "train", *TINY, "--steps", 3, "--out", tmp_path / "t1")[0] == 0
    assert json.loads((tmp_path / "t1" / "env.json").read_text())["torch_threads"] == 1  # small problem
    code, _, err = run_cli(capsys, "train", *TINY, "--threads", 0, "--out", tmp_path / "t0")
    assert code == 2 and "threads" in err


def test_tensorboard_without_the_package_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    code, _, err = run_cli(capsys, "train", *TINY, "--steps", 3, "--tensorboard", "--out", tmp_path / "tb")
    assert code == 2 and "tensorboard" in err and len(err.strip().splitlines()) == 1


def test_tensorboard_logs_scalars(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    code, _, _ = run_cli(capsys, "train", *TINY, "--steps", 20, "--tensorboard", "--out", tmp_path / "tb")
    assert code == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "train/lr", "final/train_acc"} <= tags


def test_theory_default_out_is_not_results(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run_cli(capsys, "theory", "geometry", "--quick")
    assert code == 0
    assert (tmp_path / "runs" / "theory" / "geometry" / "results.json").is_file()
    assert not (tmp_path / "results").exists()
