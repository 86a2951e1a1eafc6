"""Atomic writes leave either the old or the new file; JSONL errors name file and line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from models.io_utils import append_jsonl, atomic_write_json, atomic_write_jsonl, read_jsonl


def test_atomic_write_json_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    atomic_write_json(target, {"x": 1})
    atomic_write_json(target, {"x": 2})
    assert json.loads(target.read_text()) == {"x": 2}
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_failed_write_keeps_previous_content(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    atomic_write_json(target, {"ok": True})
    with pytest.raises(ValueError):
        atomic_write_json(target, {"bad": math.inf})  # Infinity is not JSON
    assert json.loads(target.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_jsonl_round_trip_and_append(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    atomic_write_jsonl(path, [{"id": "1"}, {"id": "2"}])
    append_jsonl(path, {"id": "3"})
    assert [r["id"] for r in read_jsonl(path)] == ["1", "2", "3"]


def test_read_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1}\n{"id": \n')
    with pytest.raises(ValueError, match=r"bad.jsonl line 2"):
        list(read_jsonl(path))
    path.write_text('[1, 2]\n')
    with pytest.raises(ValueError, match=r"line 1 must be a JSON object"):
        list(read_jsonl(path))
