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
