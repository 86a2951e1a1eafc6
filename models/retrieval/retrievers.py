"""Retrievers behind one interface: a corpus in, ranked ``(doc_id, score)`` lists out.

Used by the retriever servers, MCTS (through the servers), hard-negative mining and evaluation.
``BM25Retriever`` wraps BRIGHT's BM25 (:mod:`models.retrieval.bm25`); ``DenseRetriever`` wraps an encoder,
its document-embedding cache (:mod:`models.retrieval.embedding_cache`) and exact search
(:mod:`models.retrieval.dense_search`). Both are thread-safe for concurrent ``search_batch`` calls, and
neither starves a small request behind a large one: BM25 searches run in parallel (its kernel releases the
GIL), and a dense retriever encodes one encoder batch per turn of a first-come-first-served lock
(:class:`FifoLock`), so a query that arrives while a 256-query batch encodes waits for one encoder batch,
not for the whole request. The turns are the encoder's own batches, so the vectors are bit-identical to
encoding the request in one call.

Usage::

    retriever = BM25Retriever.from_corpus(corpus, cache_dir="BRIGHT_cache/bm25/champ")
    hits = retriever.search_batch(["Fermat little theorem"], k=5)[0]   # [(doc_id, score), ...]
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from models.retrieval.bm25 import BM25Index, build_or_load_bm25
from models.retrieval.corpus import Corpus
from models.retrieval.dense_search import DenseIndex
from models.retrieval.embedding_cache import build_or_load_doc_embeddings
from models.retrieval.encoders import Encoder, TransformersEncoder
from models.retrieval.text_formats import format_query

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


class FifoLock:
    """A mutex handed to waiters in arrival order (``threading.Lock`` favours the thread that just released it,
    so a request taking it once per encoder batch would keep it until it is done)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[threading.Event] = deque()

    def __enter__(self) -> FifoLock:
        with self._mutex:
            if not self._held:
                self._held = True
                return self
            turn = threading.Event()
            self._waiters.append(turn)
        turn.wait()  # the releasing thread hands the lock over directly: it stays held
        return self

    def __exit__(self, *exc: object) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().set()
            else:
                self._held = False


def encoder_batches(encoder: Encoder, queries: Sequence[str], task: str | None) -> list[list[int]]:
    """The query positions of each forward pass ``encoder.encode_queries(queries, task)`` makes.

    The in-process encoder sorts its inputs longest first (by token count) before cutting batches, a server
    client cuts them in input order. Encoding these batches one call each gives the very vectors of one call.
    """
    size = encoder.config.batch_size
    order = list(range(len(queries)))
    if len(queries) > size and isinstance(encoder, TransformersEncoder):
        formatted = [format_query(q, encoder.text_format, task, with_eos=False) for q in queries]
        lengths = [len(ids) for ids in encoder.token_ids(formatted, encoder.config.query_max_len)]
        order.sort(key=lambda i: -lengths[i])
    return [order[start : start + size] for start in range(0, len(order), size)]


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
        # One forward pass at a time (torch modules are not re-entrant across threads), taken in arrival order.
        self._encode_lock = FifoLock()

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
        """Load (or build, then cache) the corpus embeddings for ``encoder`` under ``model_name``.

        The cache is memory-mapped: faiss keeps its own copy of the vectors, so reading the file into memory
        as well would hold a 7B model's corpus (LeetCode: 5.9 GB at 3,584-d) twice."""
        cached = build_or_load_doc_embeddings(
            encoder, corpus, cache_root, model_name, show_progress=show_progress, on_progress=on_progress, mmap=True
        )
        return cls(encoder, corpus, DenseIndex(cached.embeddings, cached.ids), name=model_name, task=task)

    def search_batch(
        self, queries: Sequence[str], k: int, excluded_ids: Sequence[Iterable[str]] | None = None
    ) -> list[list[Hit]]:
        query_embs = np.empty((len(queries), self.encoder.dim), dtype=np.float32)
        for batch in encoder_batches(self.encoder, queries, self.task):
            with self._encode_lock:  # one encoder batch per turn: requests that came meanwhile go next
                query_embs[batch] = self.encoder.encode_queries([queries[i] for i in batch], task=self.task)
        ids, scores = self.index.search(query_embs, k, excluded_ids)
        return [list(zip(q_ids, q_scores, strict=True)) for q_ids, q_scores in zip(ids, scores, strict=True)]

    def describe(self) -> dict[str, object]:
        return {"retriever": "dense", "model_name": self.name, "task": self.task, "encoder": self.encoder.describe("query")}
