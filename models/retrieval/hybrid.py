"""BM25 hybrid (paper §6.1): per-query z-normalised ``alpha·dense + (1−alpha)·bm25``.

The paper says neither which documents the z-scores are taken over nor what a document missing from
one list gets (specs/evaluation.md §4). Two populations, chosen per run and recorded:

* ``corpus`` (default, the spec's recommendation): both retrievers score the *full* corpus and the
  z-score population is every non-excluded document, so no document is ever missing from one list. On a
  large corpus most BM25 scores are 0, so the few documents sharing a query term get large z-values.
* ``topk:N``: each retriever's own top ``N`` (excluded ids removed) is its population, as in fusion over
  two first-stage runs; candidates are the union of both lists and a document absent from one list gets
  that list's lowest z-score (the usual "missing = minimum" rule of run fusion).

Std is the population std (ddof 0); a constant score list maps to z = 0. At ``alpha = 1`` callers keep
the raw dense run instead (no z-scores).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from models.retrieval.bm25 import BM25Index
from models.retrieval.corpus import Example
from models.retrieval.dense_search import DenseIndex
from models.retrieval.retrievers import BM25Retriever, DenseRetriever

logger = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]  # query id -> doc id -> score, as models.evaluation.metrics reads it

_HYBRID_QUERY_CHUNK = 8  # queries per full-corpus dense search (bounds memory on 400k-doc corpora)
CORPUS_POPULATION = "corpus"


def parse_population(value: str) -> int | None:
    """``"corpus"`` -> ``None``; ``"topk:N"`` -> ``N`` (the spellings of ``--hybrid_population``)."""
    if value == CORPUS_POPULATION:
        return None
    kind, sep, number = value.partition(":")
    if kind == "topk" and sep and number.isdigit() and int(number) >= 1:
        return int(number)
    raise ValueError(f"hybrid population {value!r}: use 'corpus' or 'topk:N' with N >= 1 (e.g. topk:1000)")


def zscore(scores: np.ndarray) -> np.ndarray:
    """z-scores over the finite entries (population std); NaN stays NaN; a constant list maps to 0."""
    return _zscore(scores)[0]


def _zscore(scores: np.ndarray) -> tuple[np.ndarray, bool]:
    """:func:`zscore` and whether the list was constant (one pass; no copy when every entry is finite)."""
    mask = np.isfinite(scores)
    if mask.all():
        values = scores.astype(np.float64, copy=False)
        if not values.size:
            return np.zeros(values.shape), True
        # numpy's own std, spelled out so the deviations are computed once: sqrt(sum(d * d) / n) with
        # d = values - mean, the same operations (hence the same bits) as values.std().
        deviations = values - values.mean()
        std = float(np.sqrt(np.add.reduce(deviations * deviations) / values.size))
        if not std > 0:
            return np.zeros(values.shape), True
        deviations /= std  # in place: the same bits as deviations / std, one 100k-float allocation fewer
        return deviations, False
    out = np.full(scores.shape, np.nan, dtype=np.float64)
    values = scores[mask].astype(np.float64)
    std = values.std() if values.size else 0.0
    if values.size:
        out[mask] = (values - values.mean()) / std if std > 0 else 0.0
    return out, not std > 0


def fuse_scores(dense: np.ndarray, bm25: np.ndarray, alpha: float) -> np.ndarray:
    """``alpha·z(dense) + (1−alpha)·z(bm25)`` over one query's full-corpus score vectors (NaN = excluded)."""
    if dense.shape != bm25.shape:
        raise ValueError(f"score vectors differ in length: dense {dense.shape}, bm25 {bm25.shape}")
    return alpha * zscore(dense) + (1.0 - alpha) * zscore(bm25)


def top_k_stable(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` best finite scores, descending, ties in position order (a stable sort)."""
    finite_mask = np.isfinite(scores)
    finite = None if finite_mask.all() else np.flatnonzero(finite_mask)
    values = scores if finite is None else scores[finite]  # no gather when nothing is excluded
    if k < values.size:
        kth = np.partition(values, values.size - k)[values.size - k]  # the k-th largest (4x faster than negating)
        above = np.flatnonzero(values > kth)
        chosen = np.concatenate([above, np.flatnonzero(values == kth)[: k - above.size]])
    else:
        chosen = np.arange(values.size)
    ranked = chosen[np.lexsort((chosen, -values[chosen]))]
    return ranked if finite is None else finite[ranked]


def hybrid_search(
    dense: DenseRetriever,
    bm25: BM25Retriever,
    examples: Sequence[Example],
    alpha: float,
    top_k: int,
    population: int | None = None,
) -> Run:
    """Fuse a ``DenseRetriever`` and a ``BM25Retriever`` over the same corpus (module docstring).

    ``population`` is ``None`` for the whole corpus or ``N`` for each retriever's top ``N``.
    """
    if bm25.corpus.doc_ids != dense.corpus.doc_ids:
        raise ValueError(f"hybrid: BM25 corpus {bm25.corpus.name!r} is not the dense corpus {dense.corpus.name!r}")
    query_embs = dense.encoder.encode_queries([e.query for e in examples], task=dense.task)
    return fuse_runs(dense.index, bm25.index, examples, query_embs, alpha, top_k, population)


def fuse_top_lists(dense_scores: np.ndarray, bm25_scores: np.ndarray, alpha: float, n: int) -> np.ndarray:
    """The ``topk:N`` fusion of one query (module docstring): NaN outside the union of the two top-``n`` lists.

    Inputs are full-corpus score vectors with NaN at excluded documents.
    """
    fused = np.full(dense_scores.shape, np.nan, dtype=np.float64)
    sides = []
    for scores in (dense_scores, bm25_scores):
        top = top_k_stable(scores, n)
        z = zscore(scores[top])
        side = np.full(scores.shape, z.min() if z.size else 0.0, dtype=np.float64)
        side[top] = z
        sides.append((top, side))
    union = np.union1d(sides[0][0], sides[1][0])
    fused[union] = alpha * sides[0][1][union] + (1.0 - alpha) * sides[1][1][union]
    return fused


def fuse_runs(
    dense: DenseIndex,
    bm25: BM25Index,
    examples: Sequence[Example],
    query_embs: np.ndarray,
    alpha: float,
    top_k: int,
    population: int | None = None,
) -> Run:
    """The fusion behind :func:`hybrid_search`, from query vectors already encoded.

    Both sides are full-corpus score vectors in corpus order (one matrix product, BM25 ``score_all``), so
    fusion and the top-k cut stay in numpy.
    """
    doc_ids = bm25.corpus.doc_ids
    run: Run = {}
    constant = 0
    for start in range(0, len(examples), _HYBRID_QUERY_CHUNK):
        chunk = examples[start : start + _HYBRID_QUERY_CHUNK]
        dense_block = dense.score_all(query_embs[start : start + len(chunk)], [e.excluded_ids for e in chunk])
        for example, dense_scores32 in zip(chunk, dense_block, strict=True):
            dense_scores = dense_scores32.astype(np.float64)
            bm25_scores = bm25.score_all(example.query).astype(np.float64)
            if example.excluded_ids:  # the same excluded documents on both sides
                bm25_scores[np.isnan(dense_scores)] = np.nan
            if population is None:
                z_dense, dense_constant = _zscore(dense_scores)
                z_bm25, bm25_constant = _zscore(bm25_scores)
                constant += int(dense_constant) + int(bm25_constant)
                # fuse_scores with the z-scores at hand, in place (same operations, no temporaries)
                fused = np.multiply(z_dense, alpha, out=z_dense)
                fused += np.multiply(z_bm25, 1.0 - alpha, out=z_bm25)
            else:
                fused = fuse_top_lists(dense_scores, bm25_scores, alpha, population)
            best = top_k_stable(fused, top_k)
            run[example.query_id] = dict(zip([doc_ids[i] for i in best.tolist()], fused[best].tolist(), strict=True))
    if constant:
        logger.warning(
            "hybrid: %d score lists were constant (e.g. no query term in the BM25 vocabulary); z = 0", constant
        )
    where = f"each retriever's top {population}" if population else f"all {len(doc_ids)} documents"
    logger.info("hybrid alpha %.2f: fused %d queries, z-scores over %s", alpha, len(run), where)
    return run
