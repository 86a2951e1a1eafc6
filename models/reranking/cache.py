"""The per-query score cache of a rerank run, so that a killed run resumes where it stopped.

``rerank_cache.jsonl`` holds one record per scored query, appended as soon as its scores exist::

    {"query_id": "q1", "doc_ids": ["d3", "d1"], "items": [{"score": 0.8, "status": "ok", ...}, ...]}

and ``rerank_cache_meta.json`` the settings that shaped those scores (the caller's ``identity``); a cache
made with other settings is refused unless the run overwrites it. The last record of a query wins, and a
torn last line (a run killed mid-write) is skipped.

Usage::

    cached = prepare_cache(run_dir, identity, overwrite=False)
    todo = [qid for qid, doc_ids in candidates.items() if not reusable(cached.get(qid), doc_ids)]
    append_query(run_dir / CACHE_NAME, "q1", ["d3", "d1"], items)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from models.io_utils import append_jsonl, atomic_write_json

logger = logging.getLogger(__name__)

CACHE_SCHEMA_VERSION = 1
CACHE_NAME = "rerank_cache.jsonl"
CACHE_META_NAME = "rerank_cache_meta.json"

CacheRecord = dict[str, Any]


def prepare_cache(run_dir: Path, identity: Mapping[str, Any], overwrite: bool) -> dict[str, CacheRecord]:
    """Check or start the cache of ``run_dir``; return the cached records by query id."""
    cache, meta_path = run_dir / CACHE_NAME, run_dir / CACHE_META_NAME
    identity = {"schema_version": CACHE_SCHEMA_VERSION, **identity}
    if overwrite:
        cache.unlink(missing_ok=True)
    elif meta_path.is_file():
        stored = json.loads(meta_path.read_text(encoding="utf-8"))
        differing = sorted(k for k in stored.keys() | identity.keys() if stored.get(k) != identity.get(k))
        if differing:
            details = "; ".join(f"{k}: cached {stored.get(k)!r}, now {identity.get(k)!r}" for k in differing)
            raise ValueError(
                f"{cache} holds scores made with other settings ({details}); pass --overwrite to score again, "
                "or --model_name to write a separate run"
            )
    elif cache.is_file():
        raise ValueError(f"{cache} exists without {CACHE_META_NAME}; pass --overwrite to score again")
    atomic_write_json(meta_path, identity)
    return read_cache(cache)


def read_cache(path: Path) -> dict[str, CacheRecord]:
    """Cached query records; a torn last line (the run was killed mid-write) is skipped."""
    records: dict[str, CacheRecord] = {}
    if not path.is_file():
        return records
    lines = path.read_text(encoding="utf-8").splitlines()
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if line_no == len(lines):
                logger.warning("%s: ignoring a torn last line (the previous run stopped while writing)", path)
                continue
            raise ValueError(f"{path} line {line_no} is not JSON; delete the file or pass --overwrite") from None
        records[record["query_id"]] = record
    return records


def reusable(record: CacheRecord | None, doc_ids: list[str]) -> bool:
    """A cached query counts if it scored exactly these candidates and no request of it failed."""
    return (
        record is not None
        and record.get("doc_ids") == doc_ids
        and all(item["status"] != "error" for item in record["items"])
    )


def append_query(path: Path, query_id: str, doc_ids: Sequence[str], items: Sequence[Mapping[str, Any]]) -> None:
    """Append one query's scores (one item per document, in ``doc_ids`` order)."""
    if len(items) != len(doc_ids):
        raise ValueError(f"query {query_id}: {len(items)} scores for {len(doc_ids)} documents")
    append_jsonl(path, {"query_id": query_id, "doc_ids": list(doc_ids), "items": list(items)})
