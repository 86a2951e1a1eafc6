"""Exact top-k inner-product search over document embeddings; knows nothing about encoders.

With L2-normalised vectors the inner product is the cosine the RaDeR evaluation scores with
(evaluation.md §3.2). faiss ``IndexFlatIP`` (what Tevatron's search driver uses) is taken when
faiss imports, plain numpy otherwise; both are exact and return the same ids and scores up to
float rounding (equal scores may come back in another order). Excluded ids (BRIGHT
``excluded_ids``) are removed per query before the cut to ``k``; ids absent from the corpus,
such as BRIGHT's ``"N/A"``, are ignored.

Usage::

    from models.retrieval.dense_search import DenseIndex
    index = DenseIndex(cached.embeddings, cached.ids)
    ids, scores = index.search(query_embs, k=1000, excluded=[["doc3"], []])
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]
SearchBackend = Literal["auto", "faiss", "numpy"]


# faiss 1.15 scans query by query below 128,000 queries per call; a matrix product (BLAS) is several times
# faster from a handful of queries on. Process-wide faiss setting, applied when a faiss index is built.
FAISS_BLAS_MIN_QUERIES = 8


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


class DenseIndex:
    """Holds ``[n_docs, dim]`` float32 vectors and their ids; ``search`` is exact."""

    def __init__(
        self,
        embeddings: np.ndarray,
        doc_ids: Sequence[str],
        backend: SearchBackend = "auto",
        query_batch_size: int = 256,
    ) -> None:
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2:
            raise ValueError(f"document embeddings must be 2-D [n_docs, dim], got shape {embeddings.shape}")
        if len(doc_ids) != embeddings.shape[0]:
            raise ValueError(f"{len(doc_ids)} doc ids for {embeddings.shape[0]} embeddings")
        self.doc_ids = [str(i) for i in doc_ids]
        self._row = {doc_id: row for row, doc_id in enumerate(self.doc_ids)}
        if len(self._row) != len(self.doc_ids):
            raise ValueError("doc ids must be unique")
        if backend == "auto":
            backend = "faiss" if faiss_available() else "numpy"
        if backend == "faiss" and not faiss_available():
            raise ValueError("backend='faiss' but faiss is not installed (pip install faiss-cpu); use 'numpy'")
        if backend not in ("faiss", "numpy"):
            raise ValueError(f"backend must be 'auto', 'faiss' or 'numpy', got {backend!r}")
        self.backend = backend
        self.query_batch_size = query_batch_size
        self._embeddings = embeddings
        self._faiss_index = None
        if backend == "faiss":
            import faiss

            faiss.cvar.distance_compute_blas_threshold = FAISS_BLAS_MIN_QUERIES
            self._faiss_index = faiss.IndexFlatIP(embeddings.shape[1])
            if len(embeddings):
                self._faiss_index.add(embeddings)
        logger.info("dense index: %d docs, dim %d, %s", *embeddings.shape, backend)

    @property
    def dim(self) -> int:
        return int(self._embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.doc_ids)

    def score_all(self, query_embs: np.ndarray, excluded: Sequence[Iterable[str] | None] | None = None) -> np.ndarray:
        """``[n_queries, n_docs]`` float32 inner products in corpus order; excluded documents are NaN."""
        queries = self._check_queries(query_embs)
        scores = queries @ self._embeddings.T
        for i, ids in enumerate(excluded or ()):
            rows = [self._row[d] for d in (ids or ()) if d in self._row]
            scores[i, rows] = np.nan
        return scores

    def _check_queries(self, query_embs: np.ndarray) -> np.ndarray:
        queries = np.ascontiguousarray(query_embs, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"query embeddings must be [n_queries, {self.dim}], got shape {queries.shape}")
        return queries

    def search(
        self,
        query_embs: np.ndarray,
        k: int,
        excluded: Sequence[Iterable[str] | None] | None = None,
    ) -> tuple[list[list[str]], list[list[float]]]:
        """Top-``k`` doc ids and scores per query, best first; fewer when the corpus is smaller.

        ``excluded[i]`` lists ids that query ``i`` must not get back (ids not in the corpus are ignored).
        """
        queries = self._check_queries(query_embs)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if excluded is not None and len(excluded) != len(queries):
            raise ValueError(f"excluded has {len(excluded)} entries for {len(queries)} queries")
        excluded_rows = [
            {self._row[d] for d in (ex or ()) if d in self._row} for ex in (excluded or [None] * len(queries))
        ]
        all_ids: list[list[str]] = []
        all_scores: list[list[float]] = []
        for start in range(0, len(queries), self.query_batch_size):
            batch = queries[start : start + self.query_batch_size]
            batch_excluded = excluded_rows[start : start + len(batch)]
            depth = min(len(self), k + max((len(e) for e in batch_excluded), default=0))
            if depth == 0:
                all_ids.extend([] for _ in batch)
                all_scores.extend([] for _ in batch)
                continue
            rows, scores = self._top(batch, depth)
            for q_rows, q_scores, skip in zip(rows, scores, batch_excluded, strict=True):
                kept = [
                    (r, s) for r, s in zip(q_rows.tolist(), q_scores.tolist(), strict=True) if r >= 0 and r not in skip
                ][:k]
                all_ids.append([self.doc_ids[r] for r, _ in kept])
                all_scores.append([float(s) for _, s in kept])
        return all_ids, all_scores

    def _top(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        if self._faiss_index is not None:
            scores, rows = self._faiss_index.search(queries, depth)
            return rows, scores
        sims = queries @ self._embeddings.T
        if depth < sims.shape[1]:
            candidates = np.argpartition(-sims, depth - 1, axis=1)[:, :depth]
        else:
            candidates = np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
        cand_scores = np.take_along_axis(sims, candidates, axis=1)
        # Score descending, then row ascending: a deterministic order for ties.
        order = np.lexsort((candidates, -cand_scores), axis=1)
        return np.take_along_axis(candidates, order, axis=1), np.take_along_axis(cand_scores, order, axis=1)


def to_run(query_ids: Sequence[str], ids: list[list[str]], scores: list[list[float]]) -> Run:
    """``{query_id: {doc_id: score}}``, the BRIGHT ``score.json`` shape."""
    if not (len(query_ids) == len(ids) == len(scores)):
        raise ValueError(f"{len(query_ids)} query ids for {len(ids)} result lists")
    return {qid: dict(zip(d, s, strict=True)) for qid, d, s in zip(query_ids, ids, scores, strict=True)}
