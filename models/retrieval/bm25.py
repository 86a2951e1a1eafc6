"""BM25 exactly as BRIGHT scores it: gensim's LuceneBM25Model with query-side weighting and a dot product.

BRIGHT's ``retrieval_bm25`` (specs/evaluation.md §3.1) analyses every text with the Lucene English
analyser, builds a gensim ``Dictionary``, weights documents *and the query* with
``LuceneBM25Model(k1=0.9, b=0.4)`` and ranks by the unnormalised dot product::

    idf(t)   = ln(N + 1) - ln(df_t + 0.5)
    w_x(t)   = idf(t) * tf / (tf + k1 * (1 - b + b * |x| / avgdl))      # no (k1 + 1) factor
    score    = sum_t w_q(t) * w_d(t)                                      # avgdl = corpus tokens / N

where ``|x|`` is the bag's token count (for the query: in-vocabulary tokens only; out-of-vocabulary query
terms are dropped). This module reproduces it bit for bit: term ids are assigned in gensim's order,
weights are computed in float64 with gensim's operation order and stored as float32 (gensim's
``SparseMatrixSimilarity`` dtype), and scores accumulate in float32 over query terms in ascending term
id, as scipy does inside gensim. Ties rank in corpus order (BRIGHT's stable sort). Scoring and top-k
selection run in the compiled kernels of :mod:`models.retrieval.bm25_kernel`.

A cache directory holds the analysed term-frequency matrix (``tf.npz``), the vocabulary
(``vocabulary.json``) and ``meta.json`` (corpus fingerprint, k1, b, analyser name), written last.

Usage::

    index = build_or_load_bm25(corpus, "BRIGHT_cache/bm25/biology")
    hits = index.search("why do cats purr", k=10, excluded_ids=example.excluded_ids)  # [(doc_id, score), ...]
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from models.io_utils import atomic_write_bytes, atomic_write_json
from models.retrieval.bm25_kernel import accumulate_scores, top_k_many
from models.retrieval.corpus import NA, Corpus
from models.retrieval.text_analysis import TextAnalyzer, default_analyzer

logger = logging.getLogger(__name__)

# BRIGHT retrieval_bm25: LuceneBM25Model(dictionary, k1=0.9, b=0.4) (specs/evaluation.md §3.1).
DEFAULT_K1 = 0.9
DEFAULT_B = 0.4
CACHE_FORMAT_VERSION = 1
# Documents per analysis step; also the interval at which gensim's Dictionary checks its size (_count_terms).
_ANALYSIS_CHUNK_DOCS = 10_000
# gensim Dictionary(documents) default prune_at: past this many terms it drops the rarest ones.
_GENSIM_PRUNE_AT = 2_000_000
_SEARCH_THREADS = max(1, os.cpu_count() or 1)  # search_batch splits large batches over this many threads
_PARALLEL_MIN_QUERIES = 16  # smaller batches are not worth a thread pool

Hit = tuple[str, float]


class QueryRows(NamedTuple):
    """Queries as CSR rows: row ``i`` is ``term_ids/weights[indptr[i]:indptr[i + 1]]``, ids ascending."""

    indptr: np.ndarray
    term_ids: np.ndarray
    weights: np.ndarray


class BM25Index:
    """An in-memory BM25 index over one :class:`Corpus`; build with :meth:`build` or :meth:`load`."""

    def __init__(
        self,
        corpus: Corpus,
        analyzer: TextAnalyzer,
        vocabulary: list[str],
        term_freqs: sp.csr_matrix,
        k1: float = DEFAULT_K1,
        b: float = DEFAULT_B,
    ) -> None:
        """Prefer :meth:`build` / :meth:`load`; ``term_freqs`` is documents x terms, ids as in ``vocabulary``."""
        if term_freqs.shape != (len(corpus), len(vocabulary)):
            raise ValueError(
                f"term-frequency matrix has shape {term_freqs.shape}, expected ({len(corpus)}, {len(vocabulary)})"
            )
        if len(corpus) == 0:
            raise ValueError(f"corpus {corpus.name!r} is empty; BM25 needs at least one document")
        self.corpus = corpus
        self.analyzer = analyzer
        self.k1 = float(k1)
        self.b = float(b)
        self.vocabulary = vocabulary
        self.term_ids = {term: i for i, term in enumerate(vocabulary)}
        self.term_freqs = term_freqs
        self.num_docs = len(corpus)
        self.total_tokens = int(term_freqs.sum())
        # gensim Dictionary: avgdl = num_pos / num_docs (empty documents count in N).
        self.avgdl = self.total_tokens / self.num_docs
        doc_freqs = np.bincount(term_freqs.indices, minlength=len(vocabulary))
        self.idf = _lucene_idf(doc_freqs, self.num_docs)
        doc_lengths = np.asarray(term_freqs.sum(axis=1)).ravel()
        weights = self._weights(
            term_freqs.data, np.repeat(doc_lengths, np.diff(term_freqs.indptr)), self.idf[term_freqs.indices]
        )
        weighted = sp.csr_matrix((weights.astype(np.float32), term_freqs.indices, term_freqs.indptr), term_freqs.shape)
        # Posting lists (terms x documents, CSR): the kernel adds query terms in ascending id, as gensim's
        # scipy product does, so scores are bit-identical to BRIGHT's.
        term_doc = weighted.T.tocsr()
        term_doc.sort_indices()
        # Unsigned offsets and document numbers: numba then indexes without a negative-index check per
        # posting (measured: 28 % less time per query at 100k documents), with the same additions in the same order.
        self._postings = (term_doc.indptr.astype(np.uint64), term_doc.indices.astype(np.uint32), term_doc.data)

    # ------------------------------------------------------------------------------------------ build/cache

    @classmethod
    def build(
        cls,
        corpus: Corpus,
        k1: float = DEFAULT_K1,
        b: float = DEFAULT_B,
        analyzer: TextAnalyzer | None = None,
        *,
        show_progress: bool = True,
    ) -> BM25Index:
        """Analyse every document and build the index (``analyzer`` defaults to the Lucene English one)."""
        analyzer = analyzer if analyzer is not None else default_analyzer()
        _check_params(k1, b)
        vocabulary, term_freqs = _count_terms(corpus, analyzer, show_progress)
        index = cls(corpus, analyzer, vocabulary, term_freqs, k1=k1, b=b)
        logger.info(
            "built BM25 index for %s: %d documents, %d terms, %d tokens (avgdl %.2f)",
            corpus.name,
            index.num_docs,
            len(vocabulary),
            index.total_tokens,
            index.avgdl,
        )
        return index

    def save(self, directory: str | Path) -> Path:
        """Write the cache; ``meta.json`` goes last so that a half-written cache is never loaded."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        (target / "meta.json").unlink(missing_ok=True)  # an old meta must not vouch for new files mid-write
        buffer = io.BytesIO()
        sp.save_npz(buffer, self.term_freqs, compressed=False)  # zlib is slow on 10^7+ entries
        atomic_write_bytes(target / "tf.npz", buffer.getvalue())
        atomic_write_json(target / "vocabulary.json", self.vocabulary, indent=None)
        atomic_write_json(target / "meta.json", self._meta())
        logger.info("saved BM25 index for %s to %s", self.corpus.name, target)
        return target

    @classmethod
    def load(
        cls,
        directory: str | Path,
        corpus: Corpus,
        *,
        k1: float = DEFAULT_K1,
        b: float = DEFAULT_B,
        analyzer: TextAnalyzer | None = None,
    ) -> BM25Index:
        """Load a cache built for exactly this corpus, k1, b and analyser; anything else is refused."""
        source = Path(directory)
        meta_path = source / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"no BM25 cache in {source} (meta.json missing); build one with build_or_load_bm25(corpus, {str(source)!r})"
            )
        analyzer = analyzer if analyzer is not None else default_analyzer()
        _check_params(k1, b)
        with open(meta_path, encoding="utf-8") as handle:
            meta = json.load(handle)
        expected = {
            "format_version": CACHE_FORMAT_VERSION,
            "corpus_fingerprint": corpus.fingerprint(),
            "num_docs": len(corpus),
            "k1": float(k1),
            "b": float(b),
            "analyzer": analyzer.name,
        }
        mismatches = [
            f"{key}: cached {meta.get(key)!r}, wanted {value!r}"
            for key, value in expected.items()
            if meta.get(key) != value
        ]
        if mismatches:
            raise ValueError(
                f"BM25 cache {source} was built for a different setting ({'; '.join(mismatches)}); delete the "
                "directory to rebuild it, or give another cache directory"
            )
        with open(source / "vocabulary.json", encoding="utf-8") as handle:
            vocabulary = json.load(handle)
        term_freqs = sp.load_npz(source / "tf.npz").tocsr()
        index = cls(corpus, analyzer, vocabulary, term_freqs, k1=k1, b=b)
        logger.info("loaded BM25 index for %s from %s (%d terms)", corpus.name, source, len(vocabulary))
        return index

    def _meta(self) -> dict[str, object]:
        return {
            "format_version": CACHE_FORMAT_VERSION,
            "corpus_name": self.corpus.name,
            "corpus_fingerprint": self.corpus.fingerprint(),
            "num_docs": self.num_docs,
            "num_terms": len(self.vocabulary),
            "total_tokens": self.total_tokens,
            "k1": self.k1,
            "b": self.b,
            "analyzer": self.analyzer.name,
        }

    @property
    def postings_nbytes(self) -> int:
        """Bytes held by the posting lists the kernels read (offsets, document numbers, weights)."""
        return sum(array.nbytes for array in self._postings)

    # ------------------------------------------------------------------------------------------ scoring

    def score_all(self, query: str) -> np.ndarray:
        """float32 score of every document, in corpus order."""
        rows = self._query_rows(self.analyzer.analyze_batch([query]))
        return accumulate_scores(rows.term_ids, rows.weights, self._postings, self.num_docs)

    def search(self, query: str, k: int, excluded_ids: Iterable[str] = ()) -> list[Hit]:
        """Top ``k`` ``(doc_id, score)`` by score, ties in corpus order, ``excluded_ids`` removed.

        Zero-score documents fill the list when fewer than ``k`` match, as in BRIGHT's ranking.
        """
        return self.search_batch([query], k, [excluded_ids])[0]

    def search_batch(
        self, queries: Sequence[str], k: int, excluded_ids: Sequence[Iterable[str]] | None = None
    ) -> list[list[Hit]]:
        """:meth:`search` for many queries; texts are analysed in one batch, large batches searched on every core."""
        _check_request(k, excluded_ids, len(queries))  # before any analysis
        return self.search_tokens(self.analyzer.analyze_batch(list(queries)) if queries else [], k, excluded_ids)

    def search_tokens(
        self, token_lists: Sequence[list[str]], k: int, excluded_ids: Sequence[Iterable[str]] | None = None
    ) -> list[list[Hit]]:
        """:meth:`search_batch` for queries already analysed (what benchmarks compare against bm25s)."""
        _check_request(k, excluded_ids, len(token_lists))
        if not token_lists:
            return []
        rows = self._query_rows(token_lists)
        n = len(token_lists)
        excluded = self._excluded_rows(excluded_ids if excluded_ids is not None else [()] * n)
        k = min(k, self.num_docs)
        chunks = _chunks(n, _SEARCH_THREADS if n >= _PARALLEL_MIN_QUERIES else 1)
        if len(chunks) == 1:
            parts = [self._top_k(rows, excluded, k, 0, n)]
        else:  # the kernel releases the GIL, so threads share one index and run on separate cores
            with ThreadPoolExecutor(len(chunks)) as pool:
                parts = list(pool.map(lambda span: self._top_k(rows, excluded, k, *span), chunks))
        doc_ids = self.corpus.doc_ids
        return [
            [(doc_ids[d], float(s)) for d, s in zip(docs[i, :n].tolist(), scores[i, :n].tolist(), strict=True)]
            for docs, scores, counts in parts
            for i, n in enumerate(counts.tolist())
        ]

    def _top_k(
        self, rows: QueryRows, excluded: tuple[np.ndarray, np.ndarray], k: int, start: int, stop: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo, hi = rows.indptr[start], rows.indptr[stop]
        ex_indptr, ex_rows = excluded
        return top_k_many(
            rows.indptr[start : stop + 1] - lo, rows.term_ids[lo:hi], rows.weights[lo:hi],
            ex_indptr[start : stop + 1] - ex_indptr[start], ex_rows[ex_indptr[start] : ex_indptr[stop]],
            self._postings, self.num_docs, k,
        )  # fmt: skip

    def _weights(self, tf: np.ndarray, length: np.ndarray, idf: np.ndarray) -> np.ndarray:
        """gensim LuceneBM25Model.get_term_weights in float64, same operation order (so same rounding)."""
        k1, b, avgdl = self.k1, self.b, self.avgdl
        tf = tf.astype(np.float64)
        return idf * (tf / (tf + k1 * (1 - b + b * length.astype(np.float64) / avgdl)))

    def _query_rows(self, token_lists: Sequence[list[str]]) -> QueryRows:
        """Query-side BM25 weights as CSR rows, term ids ascending; out-of-vocabulary tokens are dropped."""
        lookup = self.term_ids.get
        indptr = [0]
        term_ids: list[int] = []
        tfs: list[int] = []
        lengths: list[int] = []
        for tokens in token_lists:
            bag = Counter(i for i in map(lookup, tokens) if i is not None)
            for term_id in sorted(bag):
                term_ids.append(term_id)
                tfs.append(bag[term_id])
            # |x| = number of in-vocabulary query tokens (gensim: sum of the bag's counts after doc2bow).
            lengths.extend([sum(bag.values())] * len(bag))
            indptr.append(len(term_ids))
        ids = np.asarray(term_ids, dtype=np.int64)
        weights = self._weights(np.asarray(tfs, dtype=np.int64), np.asarray(lengths, dtype=np.int64), self.idf[ids])
        return QueryRows(np.asarray(indptr, dtype=np.int64), ids, weights.astype(np.float32))

    def _excluded_rows(self, excluded_ids: Sequence[Iterable[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Excluded ids as CSR rows of corpus positions; "N/A" dropped, unknown ids skipped with a warning."""
        if not any(excluded_ids):
            return np.zeros(len(excluded_ids) + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
        indptr, rows, unknown = [0], [], 0
        for ids in excluded_ids:
            for doc_id in set(ids):
                if doc_id == NA:
                    continue
                if doc_id in self.corpus:
                    rows.append(self.corpus.index_of(doc_id))
                else:
                    unknown += 1
            indptr.append(len(rows))
        if unknown:
            # DEVIATION: BRIGHT raises KeyError on an excluded id missing from the corpus; we skip it.
            logger.warning("%d excluded ids are not in corpus %s; ignored", unknown, self.corpus.name)
        return np.asarray(indptr, dtype=np.int64), np.asarray(rows, dtype=np.int64)


def _check_request(k: object, excluded_ids: Sequence[Iterable[str]] | None, num_queries: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if excluded_ids is not None and len(excluded_ids) != num_queries:
        raise ValueError(f"excluded_ids has {len(excluded_ids)} entries for {num_queries} queries")


def _chunks(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``(start, stop)`` spans covering ``range(n)`` (fewer when n is small)."""
    if parts <= 1:
        return [(0, n)]
    bounds = np.linspace(0, n, min(parts, n) + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def build_or_load_bm25(
    corpus: Corpus,
    cache_dir: str | Path,
    *,
    k1: float = DEFAULT_K1,
    b: float = DEFAULT_B,
    analyzer: TextAnalyzer | None = None,
) -> BM25Index:
    """Load the index cached in ``cache_dir`` (one directory per corpus) or build and cache it.

    A cache for another corpus or setting raises ``ValueError`` instead of being rebuilt silently.
    """
    if (Path(cache_dir) / "meta.json").is_file():
        return BM25Index.load(cache_dir, corpus, k1=k1, b=b, analyzer=analyzer)
    index = BM25Index.build(corpus, k1=k1, b=b, analyzer=analyzer)
    index.save(cache_dir)
    return index


def _count_terms(corpus: Corpus, analyzer: TextAnalyzer, show_progress: bool) -> tuple[list[str], sp.csr_matrix]:
    """Vocabulary and documents x terms count matrix, term ids assigned as gensim's Dictionary does."""
    from tqdm import tqdm

    vocabulary: list[str] = []
    term_ids: dict[str, int] = {}
    doc_rows: list[np.ndarray] = []
    term_cols: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    warned = False
    chunks = range(0, len(corpus), _ANALYSIS_CHUNK_DOCS)
    for start in tqdm(chunks, desc=f"BM25 analyse {corpus.name}", unit="chunk", disable=not show_progress):
        if not warned and len(vocabulary) > _GENSIM_PRUNE_AT:
            # DEVIATION: here BRIGHT's gensim Dictionary would keep only the 2M most frequent terms (and later
            # documents would re-add some with reset counts); we keep all. BRIGHT's largest corpus (leetcode,
            # 35M tokens) is far from this size, so this should never be logged for BRIGHT.
            logger.warning(
                "vocabulary passed %d terms after %d documents: BRIGHT's gensim BM25 would prune rare terms here, "
                "so scores may differ from BRIGHT's",
                _GENSIM_PRUNE_AT,
                start,
            )
            warned = True
        batch = analyzer.analyze_batch(corpus.texts[start : start + _ANALYSIS_CHUNK_DOCS])
        rows, cols, tfs = _count_chunk(batch, vocabulary, term_ids)
        doc_rows.append(rows + start)
        term_cols.append(cols)
        counts.append(tfs)
    rows = np.concatenate(doc_rows) if doc_rows else np.zeros(0, dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(corpus)))]).astype(np.int64)
    term_freqs = sp.csr_matrix(
        (
            np.concatenate(counts).astype(np.int32) if counts else np.zeros(0, dtype=np.int32),
            np.concatenate(term_cols).astype(np.int32) if term_cols else np.zeros(0, dtype=np.int32),
            indptr,
        ),
        shape=(len(corpus), len(vocabulary)),
    )
    return vocabulary, term_freqs


def _count_chunk(
    batch: Sequence[list[str]], vocabulary: list[str], term_ids: dict[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document, term id, count) triples of one chunk, sorted by document then term id; grows the vocabulary.

    gensim's ``Dictionary.doc2bow(allow_update=True)`` gives a document's new terms ids in sorted order, so
    unseen tokens are assigned document by document; everything else is one dictionary lookup per token and
    one ``np.unique`` over (document, term) keys.
    """
    lengths = np.fromiter(map(len, batch), dtype=np.int64, count=len(batch))
    flat = list(chain.from_iterable(batch))
    lookup = term_ids.get
    ids = np.fromiter((lookup(token, -1) for token in flat), dtype=np.int64, count=len(flat))
    doc_of = np.repeat(np.arange(len(batch), dtype=np.int64), lengths)
    unseen = np.flatnonzero(ids < 0)
    if unseen.size:
        boundaries = np.flatnonzero(np.diff(doc_of[unseen])) + 1
        for positions in np.split(unseen, boundaries):
            for term in sorted({flat[p] for p in positions.tolist()} - term_ids.keys()):
                term_ids[term] = len(vocabulary)
                vocabulary.append(term)
        ids[unseen] = [term_ids[flat[p]] for p in unseen.tolist()]
    width = max(len(vocabulary), 1)
    keys, tfs = np.unique(doc_of * width + ids, return_counts=True)
    return keys // width, keys % width, tfs


def _check_params(k1: float, b: float) -> None:
    if not (math.isfinite(k1) and k1 >= 0):
        raise ValueError(f"k1 must be a finite number >= 0, got {k1!r}")
    if not (0.0 <= b <= 1.0):
        raise ValueError(f"b must be in [0, 1], got {b!r}")


def _lucene_idf(doc_freqs: np.ndarray, num_docs: int) -> np.ndarray:
    """gensim LuceneBM25Model.precompute_idfs, with Python's math.log as gensim uses it."""
    unique, inverse = np.unique(doc_freqs, return_inverse=True)
    log_n = math.log(num_docs + 1.0)
    values = np.array([log_n - math.log(float(df) + 0.5) for df in unique], dtype=np.float64)
    return values[inverse.ravel()]
