"""The intermediate query record: one candidate training sample, written by ``generate_queries`` per query type
(``queries_<type>.jsonl``) and read by ``build_training_data``.

A record keeps everything the assembly step needs to decide and explain: the query (or why there is none),
the positive theorem id, the hard-negative candidates, the ids known to be relevant to the same problem (for
false-negative filtering), where the corpus comes from, and how an LLM query was produced. Texts of theorems
are not stored; the assembly step fetches them from the corpus by id.

Example record (q_llmq)::

    {"schema_version": 1, "query_id": "MATH:17:4:20113:llmq", "query_type": "llmq", "status": "ok",
     "query": "How can the square of a sum of two numbers be expanded?", "positive_id": "20113",
     "negative_ids": ["4410"], "relevant_ids": ["20113"], "source": "MATH", "problem_id": "MATH:17",
     "corpus": {"source": "hf", "split": "theoremqa_theorems"}, "node_ids": ["MATH:17:4:20113"],
     "bm25_rank": null, "bm25_ids": [], "dense_ids": [],
     "generation": {"model": "Qwen/Qwen2.5-7B-Instruct", "prompt": {"name": "q_llmq", "version": "3f2a..."},
                    "params": {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "max_tokens": 512, "seed": 1234},
                    "text": "Need: ...\\nQuery: ...", "finish_reason": "stop", "error": null}}

``status`` is ``ok`` or the reason the sample cannot be used (see :data:`STATUSES`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.io_utils import atomic_write_jsonl, read_jsonl_numbered

SCHEMA_VERSION = 1
QUERY_TYPES = ("llmq", "cot", "question", "lexical")
REASONING_TYPES = ("llmq", "cot", "question")
# How samples of one type are told apart (``--dedup_key TYPE=KEY``): ``text`` merges samples with the same
# problem, positive and query text; ``node`` keeps one per retrieval node (lexical: per theorem and sample);
# ``occurrence`` one per trajectory that passes through the node (reasoning types only).
DEDUP_KEYS = ("text", "node", "occurrence")
# Paper Table 9: training samples per query type.
PAPER_TABLE9 = {
    "MATH": {"llmq": 18586, "cot": 7312, "question": 7312, "lexical": 9910},
    "NuminaMath": {"llmq": 39639, "cot": 24280, "question": 10241, "lexical": 4158},
}
# Why a record has no usable query (set at generation time; the assembly step adds its own reasons).
STATUSES = (
    "ok",
    "empty_query",  # the LLM reply parsed to nothing
    "unparsable_llm_output",  # no query line could be found in the reply
    "query_too_short",  # fewer words than the generation config requires
    "query_too_long",  # more words than the generation config allows
    "prompt_echo",  # the reply repeats a few-shot example or the question instead of writing a query
    "theorem_name_leak",  # a q_llmq query names the positive theorem (spec §4.3 [REC])
    "llm_error",  # the request failed after all retries (a rerun tries again)
    "positive_missing_from_corpus",  # the theorem id is not in the corpus, so no prompt could be built
)


def queries_file(directory: str | Path, query_type: str) -> Path:
    """``<dir>/queries_<type>.jsonl``: the per-type intermediate file."""
    if query_type not in QUERY_TYPES:
        raise ValueError(f"unknown query type {query_type!r}; choose from {list(QUERY_TYPES)}")
    return Path(directory) / f"queries_{query_type}.jsonl"


def normalize_query(text: str) -> str:
    """Case- and whitespace-insensitive form used for duplicate detection."""
    return " ".join(text.split()).casefold()


def ordered_union(*groups: Iterable[str]) -> list[str]:
    """Concatenate id lists keeping the first occurrence of each id."""
    seen: set[str] = set()
    merged: list[str] = []
    for group in groups:
        for item in group:
            if item not in seen:
                seen.add(item)
                merged.append(item)
    return merged


def word_count(text: str) -> int:
    return len(re.findall(r"\S+", text))


@dataclass
class QueryRecord:
    """One candidate training sample (see the module docstring for an example)."""

    query_id: str
    query_type: str
    status: str
    query: str
    positive_id: str
    source: str
    corpus: dict[str, str]
    negative_ids: list[str] = field(default_factory=list)
    relevant_ids: list[str] = field(default_factory=list)
    problem_id: str | None = None
    node_ids: list[str] = field(default_factory=list)
    bm25_rank: int | None = None
    bm25_ids: list[str] = field(default_factory=list)
    dense_ids: list[str] = field(default_factory=list)
    generation: dict[str, Any] | None = None
    dedup_key: str = "text"  # one of DEDUP_KEYS: whether the assembly step may drop it as a text duplicate
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        for name in ("query_id", "query_type", "status", "query", "positive_id", "source", "dedup_key"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"record {self.query_id!r}: {name} must be a string, got {getattr(self, name)!r}")
        for name in ("negative_ids", "relevant_ids", "node_ids", "bm25_ids", "dense_ids"):
            value = getattr(self, name)
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"record {self.query_id!r}: {name} must be a list of ids (strings), got {value!r}")
        if self.bm25_rank is not None and (isinstance(self.bm25_rank, bool) or not isinstance(self.bm25_rank, int)):
            raise ValueError(f"record {self.query_id!r}: bm25_rank must be an integer or null, got {self.bm25_rank!r}")
        if self.query_type not in QUERY_TYPES:
            raise ValueError(f"record {self.query_id!r}: unknown query_type {self.query_type!r}")
        if self.status not in STATUSES:
            raise ValueError(f"record {self.query_id!r}: unknown status {self.status!r}; known: {list(STATUSES)}")
        if self.dedup_key not in DEDUP_KEYS:
            raise ValueError(f"record {self.query_id!r}: unknown dedup_key {self.dedup_key!r}; known: {list(DEDUP_KEYS)}")
        if set(self.corpus) != {"source", "split"}:
            raise ValueError(f"record {self.query_id!r}: corpus must be {{'source', 'split'}}, got {self.corpus!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "record") -> QueryRecord:
        """Validate and build; unknown or missing fields raise ``ValueError`` naming ``where``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{where}: unknown fields {unknown}; a QueryRecord has {sorted(names)}")
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ValueError(f"{where}: schema_version {version} is not {SCHEMA_VERSION}; regenerate the queries")
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in data
        ]
        if missing:
            raise ValueError(f"{where}: missing fields {missing}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from err


def write_records(path: str | Path, records: Iterable[QueryRecord]) -> Path:
    """Write records atomically, sorted by ``query_id`` so reruns produce identical files."""
    ordered = sorted(records, key=lambda record: record.query_id)
    return atomic_write_jsonl(path, [record.to_dict() for record in ordered])


def read_records(path: str | Path) -> Iterator[QueryRecord]:
    for line_no, data in read_jsonl_numbered(path):
        yield QueryRecord.from_dict(data, where=f"{path} line {line_no}")


def compare_with_table9(counts: dict[str, int]) -> dict[str, Any]:
    """Produced samples per type next to paper Table 9's, as shares of all types present in ``counts``."""
    total = sum(counts.values())
    result: dict[str, Any] = {"produced": {}, "paper": {}}
    for query_type, count in counts.items():
        result["produced"][query_type] = {"samples": count, "share": round(count / total, 4) if total else 0.0}
    for dataset, paper in PAPER_TABLE9.items():
        paper_total = sum(paper[t] for t in counts)
        result["paper"][dataset] = {
            t: {"samples": paper[t], "share": round(paper[t] / paper_total, 4) if paper_total else 0.0} for t in counts
        }
    return result


def table9_markdown(comparison: dict[str, Any]) -> str:
    """The comparison as a Markdown table: produced shares beside the paper's MATH and NuminaMath shares."""
    types = list(comparison["produced"])
    lines = ["| query type | produced | share | paper MATH share | paper NuminaMath share |", "|---|---|---|---|---|"]
    for t in types:
        produced = comparison["produced"][t]
        math, numina = comparison["paper"]["MATH"][t], comparison["paper"]["NuminaMath"][t]
        lines.append(f"| q_{t} | {produced['samples']} | {produced['share']:.3f} | {math['share']:.3f} | {numina['share']:.3f} |")
    return "\n".join(lines) + "\n"
