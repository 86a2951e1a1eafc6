"""Query records + corpus -> Tevatron training rows, with the reason for every dropped sample and statistics
(spec ``specs/training.md`` §5–§6, stage S6).

For each record, in the order question, cot, llmq, lexical (so a q_CoT whose partial solution is empty
counts as a duplicate of the q_question it equals), the first failing check names the drop reason:

1. the record's own status (``unparsable_llm_output``, ``empty_query``, ``llm_error``, ...);
2. ``empty_query``;
3. ``positive_missing_from_corpus``;
4. ``failed_lexical_filter`` (lexical only): BM25 did not rank the source theorem within ``lexical_top_k``;
5. ``duplicate``: same problem (or, for lexical, corpus), positive and query text as a kept sample, for
   records whose de-duplication key is ``text`` (records made once per node or per trajectory occurrence,
   ``--dedup_key``, are kept as they are: that is the mix asked for);
6. ``too_few_negatives``: fewer than ``min_negatives`` after the false-negative filter and optional back-fill
   (Tevatron crashes on zero negatives and samples with replacement below ``train_group_size - 1``, §5.3).

Negatives: reasoning queries take the record's self-reflection rejects (§5.1); lexical queries a seeded
sample of BM25 ranks 31–50 plus the dense top-10 (§4.4 L4). Both lose any id known to be relevant to the
problem (§5.4) and ids missing from the corpus, then are capped at ``max_negatives``. Sampling uses
``random.Random(f"{seed}:{query_id}")``, so the output depends on the seed and the records, not on their order.

Output row (Tevatron legacy format, §6.1; extra columns are ignored by Tevatron's loader)::

    {"query_id": "MATH:17:4:20113:llmq", "query": "...",
     "positive_passages": [{"docid": "20113", "title": "", "text": "..."}],
     "negative_passages": [{"docid": "4410", "title": "", "text": "..."}],
     "query_type": "llmq", "source": "MATH", "relevant_doc_ids": ["20113"]}

``relevant_doc_ids`` lists every id known to be relevant to the query's problem, so a trainer can mask
in-batch false negatives (§5.4; off in Tevatron).
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from statistics import mean
from typing import Any

from models.retrieval.corpus import Corpus
from models.retrieval.theorem_text import statement_for_prompt
from run_src.query_synthesis.negatives import backfill, lexical_negatives
from run_src.query_synthesis.records import (
    QUERY_TYPES,
    QueryRecord,
    compare_with_table9,
    normalize_query,
    ordered_union,
    table9_markdown,
    word_count,
)

logger = logging.getLogger(__name__)

DEDUP_PRIORITY = ("question", "cot", "llmq", "lexical")
PASSAGE_TEXTS = ("raw", "statement")
BACKFILL_SOURCES = ("none", "bm25")
CorpusKey = tuple[str, str]  # (source, split)
BM25Search = Callable[[CorpusKey, Sequence[str], int], list[list[str]]]


@dataclass(frozen=True)
class AssemblyConfig:
    """How records become training rows; paper values cited where they exist."""

    query_types: tuple[str, ...] = QUERY_TYPES
    min_negatives: int = 1  # §5.3 [REC]: drop samples Tevatron cannot group
    max_negatives: int | None = None  # None keeps all; Tevatron samples train_group_size - 1 of them
    lexical_top_k: int = 20  # §4.4: round trip kept if BM25 ranks the theorem in its top 20
    lexical_bm25_rank_start: int = 31  # §4.4 L4: BM25 ranks 31-50 ...
    lexical_bm25_rank_end: int = 50
    lexical_bm25_negatives: int = 10  # ... sample 10
    lexical_dense_negatives: int = 10  # §4.4 L4: RepLLaMA top-10
    backfill: str = "none"  # §5.3 [REC] option: "bm25" tops negatives up from BM25 on the query
    backfill_depth: int = 50
    backfill_to: int = 11  # train_group_size 12 = 1 positive + 11 negatives (§5.1)
    passage_text: str = "raw"  # §5.1: raw corpus content (with proofs); "statement" cuts at \begin{proof}
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [t for t in self.query_types if t not in QUERY_TYPES]
        if unknown or not self.query_types:
            raise ValueError(f"query_types must be a non-empty subset of {QUERY_TYPES}, got {self.query_types}")
        if self.min_negatives < 0:
            raise ValueError(f"min_negatives must be >= 0, got {self.min_negatives}")
        if self.max_negatives is not None and self.max_negatives < max(self.min_negatives, 1):
            raise ValueError(f"max_negatives ({self.max_negatives}) must be >= max(min_negatives, 1)")
        if not 1 <= self.lexical_bm25_rank_start <= self.lexical_bm25_rank_end:
            raise ValueError("need 1 <= lexical_bm25_rank_start <= lexical_bm25_rank_end")
        if self.passage_text not in PASSAGE_TEXTS:
            raise ValueError(f"passage_text must be one of {PASSAGE_TEXTS}, got {self.passage_text!r}")
        if self.backfill not in BACKFILL_SOURCES:
            raise ValueError(f"backfill must be one of {BACKFILL_SOURCES}, got {self.backfill!r}")


@dataclass
class Drop:
    query_id: str
    query_type: str
    reason: str
    query: str
    detail: str = ""


@dataclass
class AssemblyResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    drops: list[Drop] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Candidate:
    record: QueryRecord
    corpus: Corpus
    negatives: list[str]
    excluded: list[str]


def _corpus_key(record: QueryRecord) -> CorpusKey:
    return (record.corpus["source"], record.corpus["split"])


def _dedup_key(record: QueryRecord) -> tuple[str, str, str]:
    scope = record.problem_id or f"corpus:{record.corpus['split']}"
    return (scope, record.positive_id, normalize_query(record.query))


class Assembler:
    """Turns records into rows; ``corpora`` maps (source, split) to a loaded corpus, ``bm25_search`` is
    needed only for ``backfill="bm25"``."""

    def __init__(
        self, config: AssemblyConfig, corpora: dict[CorpusKey, Corpus], bm25_search: BM25Search | None = None
    ) -> None:
        if config.backfill == "bm25" and bm25_search is None:
            raise ValueError("backfill='bm25' needs a BM25 search function")
        self.config = config
        self.corpora = corpora
        self.bm25_search = bm25_search
        self.missing_negatives = 0

    def assemble(self, records: Sequence[QueryRecord]) -> AssemblyResult:
        config = self.config
        selected = [r for r in records if r.query_type in config.query_types]
        ignored = len(records) - len(selected)
        if ignored:
            logger.info("ignoring %d records of query types not in %s", ignored, list(config.query_types))
        selected.sort(key=lambda r: (DEDUP_PRIORITY.index(r.query_type), r.query_id))
        result = AssemblyResult()
        seen: dict[tuple[str, str, str], str] = {}
        candidates: list[_Candidate] = []
        for record in selected:
            reason, detail = self._check(record, seen)
            if reason:
                result.drops.append(Drop(record.query_id, record.query_type, reason, record.query, detail))
                continue
            seen.setdefault(_dedup_key(record), record.query_id)
            candidates.append(self._negatives(record))
        if config.backfill == "bm25":
            self._backfill(candidates)
        for candidate in candidates:
            record = candidate.record
            if len(candidate.negatives) < config.min_negatives:
                detail = f"{len(candidate.negatives)} < --min_negatives {config.min_negatives}"
                result.drops.append(Drop(record.query_id, record.query_type, "too_few_negatives", record.query, detail))
                continue
            result.rows.append(self._row(candidate))
        result.stats = self._stats(selected, result)
        return result

    def _check(self, record: QueryRecord, seen: dict[tuple[str, str, str], str]) -> tuple[str, str]:
        if record.status != "ok":
            detail = (record.generation or {}).get("error") or ""
            return record.status, str(detail)[:300]
        if not record.query.strip():
            return "empty_query", ""
        corpus = self.corpora[_corpus_key(record)]
        if record.positive_id not in corpus:
            return "positive_missing_from_corpus", f"{record.positive_id!r} not in corpus {corpus.name!r}"
        if record.query_type == "lexical":
            rank = record.bm25_rank
            if rank is None or rank > self.config.lexical_top_k:
                shown = "not retrieved" if rank is None else f"rank {rank}"
                return "failed_lexical_filter", f"BM25 {shown}; needs <= {self.config.lexical_top_k}"
        first = seen.get(_dedup_key(record))
        if first is not None and record.dedup_key == "text":
            return "duplicate", f"same problem, positive and query as {first}"
        return "", ""

    def _negatives(self, record: QueryRecord) -> _Candidate:
        config = self.config
        corpus = self.corpora[_corpus_key(record)]
        if record.query_type == "lexical":
            rng = random.Random(f"{config.seed}:{record.query_id}")
            pool = lexical_negatives(
                record.bm25_ids,
                record.dense_ids,
                record.positive_id,
                rng,
                bm25_rank_start=config.lexical_bm25_rank_start,
                bm25_rank_end=config.lexical_bm25_rank_end,
                num_bm25=config.lexical_bm25_negatives,
                num_dense=config.lexical_dense_negatives,
            )
        else:
            pool = list(record.negative_ids)
        excluded = ordered_union([record.positive_id], record.relevant_ids)
        banned = set(excluded)
        negatives: list[str] = []
        for doc_id in ordered_union(pool):
            if doc_id in banned:
                continue
            if doc_id not in corpus:
                self.missing_negatives += 1
                continue
            negatives.append(doc_id)
        if config.max_negatives is not None:
            negatives = negatives[: config.max_negatives]
        return _Candidate(record, corpus, negatives, excluded)

    def _backfill(self, candidates: list[_Candidate]) -> None:
        assert self.bm25_search is not None
        target = self.config.backfill_to
        if self.config.max_negatives is not None:
            target = min(target, self.config.max_negatives)
        short: dict[CorpusKey, list[_Candidate]] = defaultdict(list)
        for candidate in candidates:
            if len(candidate.negatives) < target:
                short[_corpus_key(candidate.record)].append(candidate)
        for key, group in short.items():
            ranked = self.bm25_search(key, [c.record.query for c in group], self.config.backfill_depth)
            for candidate, ids in zip(group, ranked, strict=True):
                ids = [d for d in ids if d in candidate.corpus]
                candidate.negatives = backfill(
                    candidate.negatives, ids, candidate.record.positive_id, candidate.excluded, target
                )
        logger.info("back-filled negatives from BM25 for %d samples", sum(len(g) for g in short.values()))

    def _passage(self, corpus: Corpus, doc_id: str) -> dict[str, str]:
        text = corpus.text_of(doc_id)
        if self.config.passage_text == "statement":
            text = statement_for_prompt(text)
        return {"docid": doc_id, "title": "", "text": text}

    def _row(self, candidate: _Candidate) -> dict[str, Any]:
        record = candidate.record
        return {
            "query_id": record.query_id,
            "query": record.query.strip(),
            "positive_passages": [self._passage(candidate.corpus, record.positive_id)],
            "negative_passages": [self._passage(candidate.corpus, doc_id) for doc_id in candidate.negatives],
            "query_type": record.query_type,
            "source": record.source,
            "relevant_doc_ids": candidate.excluded,
        }

    def _stats(self, selected: list[QueryRecord], result: AssemblyResult) -> dict[str, Any]:
        """Table 9 analogue: kept samples per type and source, negatives and query lengths, drops by reason."""
        by_type: dict[str, Any] = {}
        for query_type in [*self.config.query_types, "all"]:
            rows = [r for r in result.rows if query_type in ("all", r["query_type"])]
            drops = [d for d in result.drops if query_type in ("all", d.query_type)]
            negatives = [len(r["negative_passages"]) for r in rows]
            by_type[query_type] = {
                "records": sum(1 for r in selected if query_type in ("all", r.query_type)),
                "kept": len(rows),
                "dropped": dict(sorted(Counter(d.reason for d in drops).items())),
                "avg_negatives": round(mean(negatives), 3) if negatives else 0.0,
                "min_negatives": min(negatives, default=0),
                "max_negatives": max(negatives, default=0),
                "avg_query_words": round(mean(word_count(r["query"]) for r in rows), 2) if rows else 0.0,
                "avg_query_chars": round(mean(len(r["query"]) for r in rows), 1) if rows else 0.0,
                "unique_positives": len({r["positive_passages"][0]["docid"] for r in rows}),
            }
        by_source: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(self.config.query_types, 0))
        for row in result.rows:
            by_source[row["source"]][row["query_type"]] += 1
        return {
            "config": asdict(self.config),
            "by_type": by_type,
            "by_source": {
                source: {**counts, "all": sum(counts.values())} for source, counts in sorted(by_source.items())
            },
            "table9": compare_with_table9({t: by_type[t]["kept"] for t in self.config.query_types}),
            "negatives_missing_from_corpus": self.missing_negatives,
        }


def stats_markdown(stats: dict[str, Any]) -> str:
    """The statistics as Markdown: samples per source and type (paper Table 9 layout), then per-type details."""
    types = list(stats["config"]["query_types"])
    lines = ["# Training set statistics", "", "| source | " + " | ".join(f"q_{t}" for t in types) + " | all |"]
    lines.append("|---" * (len(types) + 2) + "|")
    for source, counts in stats["by_source"].items():
        lines.append(f"| {source} | " + " | ".join(str(counts[t]) for t in types) + f" | {counts['all']} |")
    lines += [
        "",
        "| query type | records | kept | avg negatives | avg query words | dropped |",
        "|---|---|---|---|---|---|",
    ]
    for query_type, item in stats["by_type"].items():
        dropped = ", ".join(f"{reason} {n}" for reason, n in item["dropped"].items()) or "-"
        lines.append(
            f"| {query_type} | {item['records']} | {item['kept']} | {item['avg_negatives']} | "
            f"{item['avg_query_words']} | {dropped} |"
        )
    if "table9" in stats:
        lines += ["", "## Query-type mix against paper Table 9", "", table9_markdown(stats["table9"]).rstrip()]
    return "\n".join(lines) + "\n"
