"""Compiled BM25 scoring: posting lists added into a score array, then a heap picks the top k.

A query touches only the documents on its terms' posting lists, so the kernel never looks at the
others: it adds ``w_q(t) * w_d(t)`` posting by posting (float32, query terms in ascending id, the
order scipy's sparse product and so gensim use, hence bit-identical scores), remembers which
documents it touched, and keeps the best ``k`` of those in a size-``k`` heap whose root is the
current threshold. Untouched documents all score 0 and come after every touched one in corpus
order, which is where a stable sort of the full score vector puts them; they are read only when
fewer than ``k`` documents match. Every BM25 contribution is positive (idf = ln(N+1) - ln(df+0.5)
> 0, and the smallest product of two float32 weights is far above float32's range), so a score of
exactly 0 means untouched.

The index passes offsets as uint64 and document numbers as uint32, so the posting loops index without
numba's negative-index wraparound check. The kernels release the GIL (``nogil``), so server threads
search in parallel; they are compiled on first use and cached next to this file by numba.
"""

from __future__ import annotations

import numba
import numpy as np

_EXCLUDED = np.float32(-1.0)  # below every real score (all >= 0)


@numba.njit(cache=True, nogil=True, inline="always")
def _worse(score_a: float, doc_a: int, score_b: float, doc_b: int) -> bool:
    """True when (score_a, doc_a) ranks below (score_b, doc_b): lower score, or equal and later in corpus."""
    return score_a < score_b or (score_a == score_b and doc_a > doc_b)


@numba.njit(cache=True, nogil=True)
def _sift_down(heap_scores: np.ndarray, heap_docs: np.ndarray, size: int, start: int) -> None:
    """Restore the min-heap (root = worst kept hit) below ``start``."""
    i = start
    while True:
        left = 2 * i + 1
        if left >= size:
            return
        worst = left
        right = left + 1
        if right < size and _worse(heap_scores[right], heap_docs[right], heap_scores[left], heap_docs[left]):
            worst = right
        if not _worse(heap_scores[worst], heap_docs[worst], heap_scores[i], heap_docs[i]):
            return
        heap_scores[i], heap_scores[worst] = heap_scores[worst], heap_scores[i]
        heap_docs[i], heap_docs[worst] = heap_docs[worst], heap_docs[i]
        i = worst


@numba.njit(cache=True, nogil=True, inline="always")
def _offer(heap_scores: np.ndarray, heap_docs: np.ndarray, size: int, k: int, score: float, doc: int) -> int:
    """Offer one hit to the size-``k`` min-heap (root = worst kept hit); return the new size."""
    if size < k:  # grow the heap: sift the new hit up
        i = size
        heap_scores[i] = score
        heap_docs[i] = doc
        while i > 0:
            parent = (i - 1) // 2
            if not _worse(heap_scores[i], heap_docs[i], heap_scores[parent], heap_docs[parent]):
                break
            heap_scores[i], heap_scores[parent] = heap_scores[parent], heap_scores[i]
            heap_docs[i], heap_docs[parent] = heap_docs[parent], heap_docs[i]
            i = parent
        return size + 1
    if _worse(heap_scores[0], heap_docs[0], score, doc):  # better than the threshold at the root
        heap_scores[0] = score
        heap_docs[0] = doc
        _sift_down(heap_scores, heap_docs, size, 0)
    return size


@numba.njit(cache=True, nogil=True)
def _top_k_one(
    query_terms: np.ndarray,
    query_weights: np.ndarray,
    index: tuple[np.ndarray, np.ndarray, np.ndarray],
    num_docs: int,
    excluded_rows: np.ndarray,
    k: int,
    out_docs: np.ndarray,
    out_scores: np.ndarray,
) -> int:
    """Write one query's top ``k`` (unsorted) into ``out_docs``/``out_scores``; return how many.

    A score of exactly 0 means untouched (contributions are positive); excluded documents get -1.
    When the posting lists cover a large part of the corpus, one pass over the score array is cheaper
    than remembering which documents were touched.
    """
    indptr, postings, posting_weights = index
    total = 0
    for j in range(query_terms.shape[0]):
        total += np.int64(indptr[query_terms[j] + 1] - indptr[query_terms[j]])
    sparse = total * 4 < num_docs
    touched = np.empty(total if sparse else 0, dtype=np.int64)
    num_touched = 0
    if sparse:
        scores = np.zeros(num_docs, dtype=np.float32)
        for j in range(query_terms.shape[0]):
            term = query_terms[j]
            weight = query_weights[j]
            for p in range(indptr[term], indptr[term + 1]):
                posting_doc = postings[p]  # unsigned (its own name, so numba keeps the type)
                if scores[posting_doc] == 0.0:
                    touched[num_touched] = posting_doc
                    num_touched += 1
                scores[posting_doc] += weight * posting_weights[p]
    else:
        scores = accumulate_scores(query_terms, query_weights, index, num_docs)
    for j in range(excluded_rows.shape[0]):
        scores[excluded_rows[j]] = _EXCLUDED  # never a hit, never a zero-score filler
    # The heap's root is the threshold: a candidate is offered only when it beats it (kept in locals, so
    # the common case is one float comparison per document).
    size = 0
    threshold = np.float32(0.0)
    threshold_doc = -1
    count = num_touched if sparse else num_docs
    for j in range(count):
        doc = touched[j] if sparse else j
        score = scores[doc]
        if score <= 0 or (size == k and (score < threshold or (score == threshold and doc > threshold_doc))):
            continue
        size = _offer(out_scores, out_docs, size, k, score, doc)
        if size == k:
            threshold = out_scores[0]
            threshold_doc = out_docs[0]
    doc = 0
    while size < k and doc < num_docs:  # fewer matches than k: zero-score documents in corpus order
        if scores[doc] == 0.0:
            out_scores[size] = 0.0
            out_docs[size] = doc
            size += 1
        doc += 1
    return size


@numba.njit(cache=True, nogil=True)
def top_k_many(
    query_indptr: np.ndarray,
    query_terms: np.ndarray,
    query_weights: np.ndarray,
    excluded_indptr: np.ndarray,
    excluded_rows: np.ndarray,
    index: tuple[np.ndarray, np.ndarray, np.ndarray],
    num_docs: int,
    k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top ``k`` per query for queries given as CSR rows of (term id, weight); rows sorted best first.

    Returns ``(docs [q, k], scores [q, k], counts [q])``; entries past ``counts[i]`` are unused.
    """
    num_queries = query_indptr.shape[0] - 1
    docs = np.zeros((num_queries, k), dtype=np.int64)
    scores = np.zeros((num_queries, k), dtype=np.float32)
    counts = np.zeros(num_queries, dtype=np.int64)
    for q in range(num_queries):
        lo, hi = query_indptr[q], query_indptr[q + 1]
        n = _top_k_one(
            query_terms[lo:hi], query_weights[lo:hi], index, num_docs,
            excluded_rows[excluded_indptr[q] : excluded_indptr[q + 1]], k, docs[q], scores[q],
        )  # fmt: skip
        order = np.argsort(docs[q, :n], kind="mergesort")  # corpus order first, then a stable score sort
        by_doc_docs = docs[q, :n][order]
        by_doc_scores = scores[q, :n][order]
        best = np.argsort(-by_doc_scores, kind="mergesort")
        docs[q, :n] = by_doc_docs[best]
        scores[q, :n] = by_doc_scores[best]
        counts[q] = n
    return docs, scores, counts


@numba.njit(cache=True, nogil=True)
def accumulate_scores(
    query_terms: np.ndarray,
    query_weights: np.ndarray,
    index: tuple[np.ndarray, np.ndarray, np.ndarray],
    num_docs: int,
) -> np.ndarray:
    """The full float32 score vector of one query: posting by posting, query terms in ascending id."""
    indptr, postings, posting_weights = index
    scores = np.zeros(num_docs, dtype=np.float32)
    for j in range(query_terms.shape[0]):
        term = query_terms[j]
        weight = query_weights[j]
        for p in range(indptr[term], indptr[term + 1]):
            scores[postings[p]] += weight * posting_weights[p]
    return scores
