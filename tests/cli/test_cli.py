import json

import pytest

from coarsegrad.cli.main import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_writes_a_run_record(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "train", "--data", "synthetic", "--num-classes", "3", "--dim", "12",
                              "--subspace-dim", "3", "--samples-per-class", "20", "--bits", "2", "--ste",
                              "relu", "--lr", "0.5", "--steps", "15", "--seed", "2", "--out", str(out), "--quiet")
    assert code == 0 and str(out) in stdout
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["bits"] == 2 and config["model"]["ste"] == "relu"
    assert config["model"]["alpha"] == pytest.approx(0.6508, abs=1e-3)  # resolved, not None
    assert config["train"]["seed"] == 2 and config["data"]["num_classes"] == 3
    env = json.loads((out / "env.json").read_text())
    assert {"coarsegrad", "git_commit", "torch", "device"} <= set(env)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines and {"step", "loss", "train_acc"} <= set(lines[0])
    from coarsegrad.io.tensorfile import load

    tensors, meta = load(out / "model.safetensors")
    assert tensors["W"].shape == (60, 12) and json.loads(meta["config"]) == config


def test_train_with_preset_and_override(tmp_path, capsys):
    code, stdout, _ = run_cli(capsys, "train", "--config", "synthetic", "--epochs", "3", "--bits", "4",
                              "--out", str(tmp_path / "r"), "--quiet")
    assert code == 0
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["train"]["epochs"] == 3 and config["train"]["steps"] is None
    assert config["model"]["units_per_class"] == 20 and config["model"]["bits"] == 4


@pytest.mark.parametrize("argv,needle", [
    (["--bits", "0"], "bits"), (["--bits", "9"], "bits"), (["--bits", "2.5"], "--bits"),
    (["--alpha", "0"], "alpha"), (["--alpha", "-1"], "alpha"), (["--alpha", "nan"], "alpha"),
    (["--ste", "tanh"], "clipped_relu"), (["--lr", "0"], "lr"), (["--lr", "-3"], "lr"),
    (["--samples-per-class", "0"], "samples_per_class"), (["--samples-per-class", "3"], "samples_per_class"),
    (["--dim", "4"], "dim"), (["--optimizer", "rmsprop"], "optimizer"), (["--config", "missing.toml"], "config"),
    (["--model", "cnn"], "model"), (["--steps", "0"], "steps"), (["--no-such-flag"], "no-such-flag"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    code, _, err = run_cli(capsys, "train", "--out", str(tmp_path / "r"), "--quiet", *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err


def test_bad_preset_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nbits = 2")
    code, _, err = run_cli(capsys, "train", "--config", str(bad), "--quiet")
    assert code == 2 and "not valid TOML" in err and len(err.strip().splitlines()) == 1
    bad.write_text("[optimizer]\nlr = 2")
    code, _, err = run_cli(capsys, "train", "--config", str(bad), "--quiet")
    assert code == 2 and "unknown section" in err
    bad.write_text("[model]\nbitz = 2")
    code, _, err = run_cli(capsys, "train", "--config", str(bad), "--quiet")
    assert code == 2 and "bitz" in err


def test_divergence_exits_1(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--model", "mlp", "--ste", "identity", "--lr", "1e38", "--rounding", "ceil",
                           "--steps", "30", "--out", str(tmp_path / "r"), "--quiet", "--no-stop-at-perfect")
    assert code == 1 and "non-finite loss" in err and "step" in err


def test_env(capsys):
    code, out, _ = run_cli(capsys, "env", "--json")
    assert code == 0 and json.loads(out)["torch"]


def test_reproduce_smoke(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "reproduce", "--quick", "--out", str(tmp_path), "--seeds", "1",
                           "--workers", "1", "--quiet", "--only", "synthetic")
    assert code == 0
    records = json.loads((tmp_path / "results.json").read_text())
    assert len(records) == 13  # 4 STEs × 3 bits × 1 seed + the float baseline
    floats = [r for r in records if r["bits"] is None]
    assert len(floats) == 1 and floats[0]["ste"] == "float" and floats[0]["config"]["model"]["act"] == "float"
    required = {"experiment", "dataset", "model", "ste", "bits", "seed", "train_acc", "test_acc",
                "final_loss", "epochs", "seconds", "device"}
    assert all(required <= set(r) for r in records)
    assert (tmp_path / "synthetic_curves.png").stat().st_size > 1000
    table = (tmp_path / "tables.md").read_text()
    assert "| clipped_relu |" in table and "/1" in table and "Float baseline (plain ReLU" in table


@pytest.mark.parametrize("argv", [["--only", "cifar"], ["--seeds", "0"], ["--device", "tpu"], ["--workers", "0"],
                                  ["--dataset", "cifar"], ["--dataset", "kmnist"]])
def test_reproduce_bad_input(tmp_path, capsys, argv):
    code, _, err = run_cli(capsys, "reproduce", "--out", str(tmp_path), "--quiet", *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
