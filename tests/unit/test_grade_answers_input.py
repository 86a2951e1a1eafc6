"""``grade_answers`` refuses bad input before it grades or writes anything: one error line naming the file,
the line and the field (or byte), exit 2, the traceback only with ``--debug``, and no output files."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from run_src import grade_answers
from tests.conftest import REPO_ROOT

GOOD = '{"id": "a", "prediction": "\\\\boxed{2}", "gold": "2"}'

# (label, second line of the input, text the error must contain)
BAD_LINES = [
    ("not json", '{"id": "b", "prediction": ', "line 2 is not valid JSON: Expecting value at column"),
    ("not an object", '["b", "1", "1"]', "line 2 must be a JSON object, got list"),
    ("no gold", '{"id": "b", "prediction": "1"}', "line 2 has no 'gold' field"),
    ("no id", '{"prediction": "1", "gold": "1"}', "line 2 has no 'id' field"),
    ("id object", '{"id": {"n": 1}, "prediction": "1", "gold": "1"}', "line 2: 'id' must be a non-empty string or an integer"),
    ("id null", '{"id": null, "prediction": "1", "gold": "1"}', "line 2: 'id' must be"),
    ("id empty", '{"id": "", "prediction": "1", "gold": "1"}', "line 2: 'id' must be"),
    ("id bool", '{"id": true, "prediction": "1", "gold": "1"}', "line 2: 'id' must be"),
    ("prediction list", '{"id": "b", "prediction": [1], "gold": "1"}', "line 2: 'prediction' must be a string or number"),
    ("gold object", '{"id": "b", "prediction": "1", "gold": {}}', "line 2: 'gold' must be a string or number"),
    ("NaN prediction", '{"id": "b", "prediction": NaN, "gold": "1"}', "line 2: field 'prediction' holds nan"),
    ("Infinity nested", '{"id": "b", "prediction": "1", "gold": "1", "meta": {"t": [1, Infinity]}}',
     "line 2: field 'meta.t[1]' holds inf"),
    ("1e999", '{"id": "b", "prediction": "1", "gold": 1e999}', "line 2: field 'gold' holds inf"),
    ("lone surrogate", '{"id": "b", "prediction": "\\ud800", "gold": "1"}', "line 2: field 'prediction' holds a lone surrogate"),
    ("surrogate key", '{"id": "b", "prediction": "1", "gold": "1", "x": {"\\udfff": 1}}', "line 2: field 'x' holds a key with"),
    ("deep nesting", '{"id": "b", "prediction": "1", "gold": "1", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
     "line 2 nests arrays or objects too deeply"),
    ("huge integer", '{"id": "b", "prediction": ' + "9" * 5_000 + ', "gold": "1"}', "line 2 holds a number too long to read"),
]  # fmt: skip


def _run(tmp_path: Path, content: bytes, *extra: str) -> tuple[int, Path]:
    source, target = tmp_path / "preds.jsonl", tmp_path / "out" / "graded.jsonl"
    source.write_bytes(content)
    return grade_answers.main(["--input", str(source), "--output", str(target), *extra]), target


@pytest.mark.parametrize(("label", "line", "message"), BAD_LINES, ids=[row[0] for row in BAD_LINES])
def test_a_bad_line_is_one_error_naming_file_line_and_field(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, label: str, line: str, message: str
) -> None:
    code, target = _run(tmp_path, f"{GOOD}\n{line}\n{GOOD.replace('a', 'c')}\n".encode())
    assert code == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert str(tmp_path / "preds.jsonl") in errors[0].getMessage() and message in errors[0].getMessage()
    assert not target.parent.exists()  # nothing written: no output, no stage record


def test_non_utf8_input_is_named_by_line_and_byte_offset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    second = b'{"id": "b", "prediction": "caf\xe9", "gold": "1"}'  # Latin-1, not UTF-8
    code, target = _run(tmp_path, GOOD.encode() + b"\n" + second + b"\n")
    assert code == 2
    offset = len(GOOD) + 1 + second.index(b"\xe9")
    assert f"preds.jsonl line 2 is not UTF-8: byte 0xe9 at byte offset {offset}" in caplog.text
    assert not target.parent.exists()


def test_a_repeated_id_is_refused_naming_both_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = [GOOD, '{"id": 7, "prediction": "1", "gold": "1"}', '{"id": "b", "prediction": "1", "gold": "1"}',
             '{"id": "7", "prediction": "2", "gold": "2"}']  # fmt: skip
    code, target = _run(tmp_path, "\n".join(lines).encode())
    assert code == 2
    assert "preds.jsonl line 4: id '7' is already the id of line 2" in caplog.text
    assert not target.parent.exists()


def test_good_input_with_a_bom_integer_ids_and_blank_lines_is_graded(tmp_path: Path) -> None:
    lines = ["\ufeff" + GOOD, "", '{"id": 2, "prediction": "3", "gold": "4", "note": null}']
    code, target = _run(tmp_path, "\n".join(lines).encode("utf-8"), "--quiet")
    assert code == 0
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(r["id"], r["correct"]) for r in rows] == [("a", True), (2, False)]


def test_a_corrupt_gzip_is_one_error_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "preds.jsonl.gz"
    lines = "".join(f'{{"id": {i}, "prediction": "{i}", "gold": "{i}"}}\n' for i in range(200))
    source.write_bytes(gzip.compress(lines.encode())[:-30])  # cut short
    assert grade_answers.main(["--input", str(source), "--output", str(tmp_path / "out" / "g.jsonl")]) == 2
    assert f"{source} cannot be read" in caplog.text
    assert not (tmp_path / "out").exists()


def test_the_cli_prints_one_line_and_the_traceback_only_with_debug(tmp_path: Path) -> None:
    source = tmp_path / "preds.jsonl"
    source.write_text(f"{GOOD}\n{GOOD}\n")
    command = [
        sys.executable,
        "-m",
        "run_src.grade_answers",
        "--input",
        str(source),
        "--output",
        str(tmp_path / "g.jsonl"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    plain = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2
    errors = [line for line in plain.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "preds.jsonl line 2: id 'a' is already the id of line 1" in errors[0]
    assert "Traceback" not in plain.stderr
    debug = subprocess.run([*command, "--debug"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert debug.returncode == 2 and "Traceback" in debug.stderr and "StageError" in debug.stderr
    assert not (tmp_path / "g.jsonl").exists() and not (tmp_path / "g.config.json").exists()
