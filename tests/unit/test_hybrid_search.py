"""The BM25 hybrid fuses full-corpus score vectors in numpy; its top 1000 equals the former list-based fusion.

The former path asked dense search (faiss) for every document, mapped the ranked list back to corpus order
and fused; the numpy path takes one matrix product. The two inner-product kernels round differently in
the last bit, so near-equal fused scores may swap; everything else is equal. Real MiniLM query vectors, random document vectors
(only the fusion arithmetic is under test), a real BM25 index over a Zipf word corpus.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.retrieval.bm25 import BM25Index
from models.retrieval.corpus import Corpus, Example
from models.retrieval.dense_search import DenseIndex
from models.retrieval.encoders import EncoderConfig, build_encoder
from models.retrieval.hybrid import fuse_scores, hybrid_search, top_k_stable
from models.retrieval.retrievers import BM25Retriever, DenseRetriever
from models.retrieval.text_analysis import WhitespaceAnalyzer
from models.retrieval.text_formats import PLAIN

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _list_based_hybrid(dense: DenseRetriever, bm25: BM25Retriever, examples: list[Example], alpha: float) -> dict:
    """The former fusion: ranked dense lists over all documents mapped back through their ids."""
    corpus = dense.corpus
    position = {doc_id: i for i, doc_id in enumerate(corpus.doc_ids)}
    embs = dense.encoder.encode_queries([e.query for e in examples])
    ids, scores = dense.index.search(embs, len(corpus), [e.excluded_ids for e in examples])
    run = {}
    for example, q_ids, q_scores in zip(examples, ids, scores, strict=True):
        dense_scores = np.full(len(corpus), np.nan)
        dense_scores[[position[d] for d in q_ids]] = q_scores
        bm25_scores = bm25.index.score_all(example.query).astype(np.float64)
        bm25_scores[np.isnan(dense_scores)] = np.nan
        fused = fuse_scores(dense_scores, bm25_scores, alpha)
        best = top_k_stable(fused, 1000)
        run[example.query_id] = {corpus.doc_ids[i]: float(fused[i]) for i in best}
    return run


def test_numpy_hybrid_top_1000_equals_the_list_based_fusion(minilm_dir: Path) -> None:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(400)]
    probs = 1 / np.arange(1, 401)
    probs /= probs.sum()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(3, 30)), p=probs)) for _ in range(1500)]
    corpus = Corpus("zipf", [f"d{i}" for i in range(len(texts))], texts)
    bm25 = BM25Retriever(BM25Index.build(corpus, analyzer=WhitespaceAnalyzer(), show_progress=False))
    vectors = rng.standard_normal((len(texts), 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    encoder = build_encoder(EncoderConfig(str(minilm_dir), pooling="mean", text_format=PLAIN))
    dense = DenseRetriever(encoder, corpus, DenseIndex(vectors, corpus.doc_ids), name="minilm-random-docs")
    examples = [
        Example(f"q{i}", " ".join(rng.choice(words, size=8, p=probs)), gold_ids=["d0"],
                excluded_ids=[f"d{j}" for j in rng.choice(len(texts), size=int(rng.integers(0, 5)))])
        for i in range(20)
    ]  # fmt: skip
    for alpha in (0.5, 0.8):
        got = hybrid_search(dense, bm25, examples, alpha, 1000)
        expected = _list_based_hybrid(dense, bm25, examples, alpha)
        for example in examples:
            ours, former = got[example.query_id], expected[example.query_id]
            # Same ranking up to the last bit of the dense inner products (BLAS vs faiss's own kernel):
            # position by position the scores agree, and ids differ only between near-equal scores.
            np.testing.assert_allclose(list(ours.values()), list(former.values()), rtol=0, atol=1e-5)
            for position, (a, b) in enumerate(zip(ours, former, strict=True)):
                if a != b:
                    assert abs(ours[a] - former.get(a, ours[a])) < 1e-5 and abs(former[b] - ours.get(b, former[b])) < 1e-5
                    assert abs(ours[a] - former[b]) < 2e-5, position
            assert not set(example.excluded_ids) & set(ours)
