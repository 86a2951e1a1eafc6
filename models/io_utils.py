"""Atomic file writes and JSON Lines helpers shared by every stage.

A stage that is killed must never leave a half-written file that a rerun would mistake for a
finished one, so every complete-file write goes through a temporary file in the same directory
followed by ``os.replace``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> Path:
    """JSON with ``allow_nan=False``: ``Infinity``/``NaN`` are not JSON and break other readers."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike[str], records: Iterable[Any]) -> Path:
    lines = [json.dumps(r, ensure_ascii=False, allow_nan=False) for r in records]
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def append_jsonl(path: str | os.PathLike[str], record: Any) -> None:
    """Append one record; a line is written with a single ``write`` so lines never interleave."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield records; see :func:`read_jsonl_numbered` for the error behaviour."""
    for _, record in read_jsonl_numbered(path):
        yield record


def read_jsonl_numbered(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)``; a malformed line raises ``ValueError`` naming the file and line.

    Reads ``.gz`` files transparently and skips blank lines. A truncated last line (a killed
    appender) is reported too: callers that resume decide whether to drop it.
    """
    import gzip

    source = Path(path)
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rt", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{source} line {line_no} is not valid JSON: {err.msg}") from err
            if not isinstance(record, dict):
                raise ValueError(f"{source} line {line_no} must be a JSON object, got {type(record).__name__}")
            yield line_no, record
