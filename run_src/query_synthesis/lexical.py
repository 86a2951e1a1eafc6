"""Retrieval for lexical queries (spec ``specs/training.md`` §4.4 L3): the BM25 round trip and the
candidate negatives.

For each generated lexical query, BM25 (BRIGHT's, :mod:`models.retrieval.bm25`, over the same corpus the MCTS searched)
returns its top ``depth`` documents. The positive's 1-based rank among them is stored; the assembly step keeps
the query only when that rank is within the top 20 (round-trip consistency, Promptagator-style) and samples
negatives from ranks 31–50. Documents with a BM25 score of 0 share no term with the query: they are not
"retrieved" and are left out of both the rank and the candidates (BM25 would otherwise pad a short list with
them in corpus order, and a theorem early in the corpus would pass the filter by accident).

The optional dense retriever gives the top ``k`` candidates (RepLLaMA in the paper): a retriever server
(``models/serving/retriever_client.py``) or an in-process dense retriever (``models/retrieval/retrievers.py``).

Retrieval is recomputed on every run (it is deterministic and cheap next to the LLM calls).

Usage::

    bm25 = BM25Retriever.from_corpus(corpus, cache_dir="BRIGHT_cache/bm25/theoremqa_theorems")
    results = lexical_retrieval(queries, positives, bm25, dense=None, depth=50)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tqdm import tqdm

from models.retrieval.corpus import Corpus
from models.retrieval.encoder_flags import EncoderFlags
from models.retrieval.retrievers import BM25Retriever

logger = logging.getLogger(__name__)

DenseSearch = Callable[[Sequence[str], int], list[list[str]]]
_BATCH = 64


@dataclass(frozen=True)
class LexicalRetrieval:
    """BM25 and dense candidates of one lexical query; ``bm25_rank`` is ``None`` past ``depth`` (or no match)."""

    bm25_rank: int | None
    bm25_ids: list[str] = field(default_factory=list)
    dense_ids: list[str] = field(default_factory=list)


def bm25_ranked_ids(bm25: BM25Retriever, queries: Sequence[str], depth: int) -> list[list[str]]:
    """Top ``depth`` ids per query with a positive BM25 score, best first."""
    hits = bm25.search_batch(list(queries), depth)
    return [[doc_id for doc_id, score in ranked if score > 0] for ranked in hits]


def rank_of(ranked_ids: Sequence[str], doc_id: str) -> int | None:
    try:
        return ranked_ids.index(doc_id) + 1
    except ValueError:
        return None


def lexical_retrieval(
    queries: Sequence[str],
    positives: Sequence[str],
    bm25: BM25Retriever,
    dense: DenseSearch | None,
    *,
    depth: int = 50,
    dense_k: int = 10,
    quiet: bool = False,
) -> list[LexicalRetrieval]:
    """BM25 rank of each query's positive plus BM25 and dense candidate ids, in input order.

    ``dense_k + 1`` dense hits are fetched so that ``dense_k`` remain after the positive is removed.
    """
    if len(queries) != len(positives):
        raise ValueError(f"{len(queries)} queries but {len(positives)} positives")
    results: list[LexicalRetrieval] = []
    for start in tqdm(range(0, len(queries), _BATCH), desc="lexical retrieval", disable=quiet):
        batch = list(queries[start : start + _BATCH])
        bm25_ids = bm25_ranked_ids(bm25, batch, depth)
        dense_ids = dense(batch, dense_k + 1) if dense is not None else [[] for _ in batch]
        for offset, (ranked, dense_ranked) in enumerate(zip(bm25_ids, dense_ids, strict=True)):
            positive = positives[start + offset]
            results.append(LexicalRetrieval(rank_of(ranked, positive), ranked, list(dense_ranked)))
    return results


def server_dense_search(url: str, timeout_s: float = 120.0) -> DenseSearch:
    """Dense candidates from a retriever server (``GET /health`` is checked now, before any LLM work)."""
    from models.serving.retriever_client import RetrieverClient

    client = RetrieverClient(url, timeout_s=timeout_s)
    health = client.health()
    logger.info("dense retriever server %s: %s over %s (%d docs)", url, health.retriever, health.corpus, health.n_docs)

    def search(queries: Sequence[str], k: int) -> list[list[str]]:
        return [result.doc_ids for result in client.search_batch(list(queries), k=k, include_texts=False)]

    return search


def local_dense_search(corpus: Corpus, flags: EncoderFlags, cache_root: str) -> DenseSearch:
    """Dense candidates from an in-process encoder over ``corpus`` (document embeddings cached under
    ``cache_root`` by the one naming rule, so stage 1's cache for the same flags is reused)."""
    from models.retrieval.encoder_flags import doc_cache_name
    from models.retrieval.encoders import build_encoder
    from models.retrieval.retrievers import DenseRetriever

    config = flags.encoder_config()
    encoder = build_encoder(config)
    retriever = DenseRetriever.from_cache(encoder, corpus, cache_root, doc_cache_name(config), show_progress=False)

    def search(queries: Sequence[str], k: int) -> list[list[str]]:
        return [[doc_id for doc_id, _ in ranked] for ranked in retriever.search_batch(list(queries), k)]

    return search
