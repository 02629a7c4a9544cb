import json

import pytest

from coarsegrad.io.records import append_jsonl, atomic_write_json, environment


def test_atomic_json_replaces_whole_file(tmp_path):
    path = tmp_path / "a" / "r.json"
    atomic_write_json(path, {"x": 1})
    atomic_write_json(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"x": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"x": object()})
    assert json.loads(path.read_text()) == {"x": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_jsonl_and_environment(tmp_path):
    append_jsonl(tmp_path / "m.jsonl", {"step": 0})
    append_jsonl(tmp_path / "m.jsonl", {"step": 1})
    assert [json.loads(x)["step"] for x in (tmp_path / "m.jsonl").read_text().splitlines()] == [0, 1]
    env = environment()
    assert env["device"] == "cpu" and env["torch"] and env["python"]


def test_remove_stale_temporaries(tmp_path):
    from coarsegrad.io.records import remove_stale_temporaries

    for name in (".model.safetensors.abc123.tmp", ".summary.json.x.tmp", "keep.tmp", ".hidden", "model.safetensors"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in remove_stale_temporaries(tmp_path, "model.safetensors")] == [".model.safetensors.abc123.tmp"]
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == [".summary.json.x.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "keep.tmp", "model.safetensors"]


def test_a_run_removes_temporaries_an_interrupted_write_left(tmp_path):
    from coarsegrad.config import DataConfig, ModelConfig
    from coarsegrad.training.loop import TrainConfig
    from coarsegrad.training.run import run_training

    (tmp_path / ".checkpoint.safetensors.k1ll3d.tmp").write_bytes(b"half a file")
    data = DataConfig(num_classes=2, dim=4, subspace_dim=1, samples_per_class=4)
    run_training(data, ModelConfig(units_per_class=2), TrainConfig(steps=2), tmp_path, progress=False)
    assert not list(tmp_path.glob(".*.tmp"))
