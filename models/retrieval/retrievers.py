"""Retrievers behind one interface: a corpus in, ranked ``(doc_id, score)`` lists out.

Used by the retriever servers, MCTS (through the servers), hard-negative mining and evaluation.
``BM25Retriever`` wraps BRIGHT's BM25 (:mod:`models.retrieval.bm25`); ``DenseRetriever`` wraps an encoder,
its document-embedding cache (:mod:`models.retrieval.embedding_cache`) and exact search
(:mod:`models.retrieval.dense_search`). Both are thread-safe for concurrent ``search_batch`` calls.

Usage::

    retriever = BM25Retriever.from_corpus(corpus, cache_dir="BRIGHT_cache/bm25/champ")
    hits = retriever.search_batch(["Fermat little theorem"], k=5)[0]   # [(doc_id, score), ...]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from models.retrieval.bm25 import BM25Index, build_or_load_bm25
from models.retrieval.corpus import Corpus
from models.retrieval.dense_search import DenseIndex
from models.retrieval.embedding_cache import build_or_load_doc_embeddings
from models.retrieval.encoders import Encoder

logger = logging.getLogger(__name__)

Hit = tuple[str, float]


class Retriever(Protocol):
    """What servers and stages need from a retriever."""

    name: str
    corpus: Corpus

    def search_batch(
        self, queries: Sequence[str], k: int, excluded_ids: Sequence[Iterable[str]] | None = None
    ) -> list[list[Hit]]: ...

    def describe(self) -> dict[str, object]: ...


class BM25Retriever:
    """BRIGHT's BM25 (Lucene English analysis, k1 0.9, b 0.4, query-side weighting)."""

    def __init__(self, index: BM25Index) -> None:
        self.index = index
        self.corpus = index.corpus
        self.name = "bm25"

    @classmethod
    def from_corpus(cls, corpus: Corpus, cache_dir: str | Path | None = None) -> BM25Retriever:
        """Build the index, or load it from ``cache_dir`` when one was saved there for this corpus."""
        index = build_or_load_bm25(corpus, cache_dir) if cache_dir else BM25Index.build(corpus)
        return cls(index)

    def search_batch(
        self, queries: Sequence[str], k: int, excluded_ids: Sequence[Iterable[str]] | None = None
    ) -> list[list[Hit]]:
        return self.index.search_batch(queries, k, excluded_ids)

    def describe(self) -> dict[str, object]:
        return {"retriever": "bm25", "k1": self.index.k1, "b": self.index.b, "corpus": self.corpus.name}


class DenseRetriever:
    """Encoder + cached document embeddings + exact inner-product search (cosine when normalised)."""

    def __init__(self, encoder: Encoder, corpus: Corpus, index: DenseIndex, name: str, task: str | None = None) -> None:
        if index.doc_ids != corpus.doc_ids:
            raise ValueError(f"dense index ids do not match corpus {corpus.name!r}; rebuild the embedding cache")
        self.encoder = encoder
        self.corpus = corpus
        self.index = index
        self.name = name
        self.task = task
        # One forward pass at a time: torch modules are not re-entrant across threads.
        self._encode_lock = threading.Lock()

    @classmethod
    def from_cache(
        cls,
        encoder: Encoder,
        corpus: Corpus,
        cache_root: str | Path,
        model_name: str,
        task: str | None = None,
        show_progress: bool = True,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> DenseRetriever:
        """Load (or build, then cache) the corpus embeddings for ``encoder`` under ``model_name``."""
        cached = build_or_load_doc_embeddings(
            encoder, corpus, cache_root, model_name, show_progress=show_progress, on_progress=on_progress
        )
        return cls(encoder, corpus, DenseIndex(cached.embeddings, cached.ids), name=model_name, task=task)

    def search_batch(
        self, queries: Sequence[str], k: int, excluded_ids: Sequence[Iterable[str]] | None = None
    ) -> list[list[Hit]]:
        with self._encode_lock:
            query_embs = self.encoder.encode_queries(list(queries), task=self.task)
        ids, scores = self.index.search(query_embs, k, excluded_ids)
        return [list(zip(q_ids, q_scores, strict=True)) for q_ids, q_scores in zip(ids, scores, strict=True)]

    def describe(self) -> dict[str, object]:
        return {"retriever": "dense", "model_name": self.name, "task": self.task, "encoder": self.encoder.describe("query")}
