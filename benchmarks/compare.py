"""Our retrieval kernels side by side with the libraries a user would otherwise pick, in one process.

    .venv/bin/pip install -r requirements-bench.txt       # bm25s (the other anchors are runtime deps)
    python -m benchmarks.compare                          # 100k documents, every comparison
    python -m benchmarks.compare --docs 20000 --only bm25 dense

Each comparison runs both sides on the same inputs, alternating ours/anchor for ``--repeats`` rounds,
and reports the median and minimum seconds of each; ``ratio`` = anchor median / our median, so > 1
means we are faster. Results are checked equal before timing (same top ids), so a fast wrong kernel
cannot win.

* ``bm25``: :class:`models.retrieval.bm25.BM25Index` vs bm25s (numba backend), both given the same
  Lucene tokens (analysis is not timed on either side), top 10; one query per call, then one batch.
* ``pyserini``: the same ``BM25Index`` from query text (analysis included) vs pyserini's ``LuceneSearcher``
  (Anserini's ``SimpleSearcher``; BM25, same k1 and b) over a Lucene index of the same documents, one query per call, top 10. Lucene's
  scoring differs from BRIGHT's gensim BM25 that ours reproduces, so only the top-10 overlap is logged.
* ``dense``: :class:`models.retrieval.dense_search.DenseIndex` vs a raw faiss ``IndexFlatIP`` forced onto
  its BLAS path, ``--dense_batch`` queries per call, top 10.
* ``hybrid``: :func:`models.retrieval.hybrid.fuse_runs` vs the same fusion written directly in numpy
  (one matrix product, BM25 ``score_all``, z-scores, one top-k, the run's id -> score dicts), top 1000.
* ``encode``: our MiniLM :class:`~models.retrieval.encoders.TransformersEncoder` vs
  ``SentenceTransformer.encode``, same documents and batch size: eager, and with ``--encoder_compile``
  (``torch.compile``, timed once its warm-up call has compiled it).

The MCTS's use of a generator server needs a running vLLM and is measured by
``python -m benchmarks.mcts_throughput``. After the table comes a paper-scale extrapolation: the
measured per-item costs times BRIGHT's corpus and query counts.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from benchmarks.retrieval_bench import pseudo_words, random_unit_vectors, word_salad
from models.retrieval.bm25 import BM25Index
from models.retrieval.corpus import Corpus, Example
from models.retrieval.dense_search import DenseIndex
from models.retrieval.hybrid import fuse_runs, zscore

logger = logging.getLogger(__name__)

COMPARISONS = ("bm25", "pyserini", "dense", "hybrid", "encode")
# BRIGHT's 12 splits: documents and queries (dataset card), for the paper-scale extrapolation.
BRIGHT_SIZES = {
    "biology": (57_359, 103), "earth_science": (121_249, 116), "economics": (50_220, 103),
    "psychology": (52_835, 101), "robotics": (61_961, 101), "stackoverflow": (107_081, 117),
    "sustainable_living": (60_792, 108), "leetcode": (413_932, 142), "pony": (7_894, 112),
    "aops": (188_002, 111), "theoremqa_questions": (188_002, 194), "theoremqa_theorems": (23_839, 76),
}  # fmt: skip


@dataclass
class Row:
    figure: str
    ours_median_s: float
    ours_min_s: float
    anchor: str
    anchor_median_s: float
    anchor_min_s: float
    items: int  # queries or documents per call

    @property
    def ratio(self) -> float:
        return self.anchor_median_s / self.ours_median_s

    def line(self) -> str:
        ours, anchor = self.items / self.ours_median_s, self.items / self.anchor_median_s
        return (
            f"| {self.figure} | {ours:,.1f} (min {self.ours_min_s * 1e3:.2f} ms) | {self.anchor}: {anchor:,.1f} "
            f"(min {self.anchor_min_s * 1e3:.2f} ms) | **{self.ratio:.2f}** |"
        )


def alternate(ours: Callable[[], object], anchor: Callable[[], object], repeats: int) -> tuple[list[float], list[float]]:
    """Seconds per call of each side, measured in alternation after one warm-up call each."""
    ours()
    anchor()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((ours, times[0]), (anchor, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return times


def _row(figure: str, anchor: str, items: int, times: tuple[list[float], list[float]]) -> Row:
    ours, theirs = times
    return Row(figure, statistics.median(ours), min(ours), anchor, statistics.median(theirs), min(theirs), items)


# ------------------------------------------------------------------------------------------------ bm25


def compare_bm25(index: BM25Index, query_tokens: list[list[str]], repeats: int) -> list[Row]:
    import bm25s

    corpus_tokens = index.analyzer.analyze_batch(list(index.corpus.texts))
    anchor = bm25s.BM25(method="lucene", k1=index.k1, b=index.b, backend="numba")
    anchor.index(corpus_tokens, show_progress=False)
    # Our idf differs from bm25s' "lucene" variant, so rankings are compared on the matched-term sets only.
    ours_top = [[d for d, _ in hits] for hits in index.search_tokens(query_tokens, 10)]
    theirs_docs, _ = anchor.retrieve(query_tokens, k=10, show_progress=False, n_threads=1)
    overlap = np.mean([len(set(a) & {index.corpus.doc_ids[i] for i in b}) / 10 for a, b in zip(ours_top, theirs_docs, strict=True)])
    logger.info("bm25: top-10 overlap with bm25s %.2f (different idf variants)", overlap)
    single = alternate(
        lambda: [index.search_tokens([q], 10) for q in query_tokens],
        lambda: [anchor.retrieve([q], k=10, show_progress=False, n_threads=1) for q in query_tokens],
        repeats,
    )
    batch = alternate(
        lambda: index.search_tokens(query_tokens, 10),
        lambda: anchor.retrieve(query_tokens, k=10, show_progress=False, n_threads=-1),
        repeats,
    )
    return [
        _row("BM25 query, one per call (qps)", "bm25s numba", len(query_tokens), single),
        _row("BM25 query, one batch (qps)", "bm25s numba, all threads", len(query_tokens), batch),
    ]


def compare_pyserini(index: BM25Index, queries: list[str], repeats: int) -> list[Row]:
    import tempfile

    from pyserini.index.lucene import LuceneIndexer
    from pyserini.pyclass import autoclass

    # pyserini.search.lucene.LuceneSearcher is a thin wrapper of this Java class, but importing that module
    # pulls in pyserini's neural encoders (onnxruntime, faiss); the class itself needs only the JVM.
    lucene_searcher = autoclass("io.anserini.search.SimpleSearcher")

    with tempfile.TemporaryDirectory() as tmp:
        indexer = LuceneIndexer(f"{tmp}/lucene", threads=1)
        corpus = index.corpus
        indexer.add_batch_dict([{"id": d, "contents": t} for d, t in zip(corpus.doc_ids, corpus.texts, strict=True)])
        indexer.close()
        searcher = lucene_searcher(f"{tmp}/lucene")
        searcher.set_bm25(index.k1, index.b)
        ours_top = [{d for d, _ in index.search(q, 10)} for q in queries]
        theirs_top = [{hit.docid for hit in searcher.search(q, 10)} for q in queries]
        overlap = np.mean([len(a & b) / 10 for a, b in zip(ours_top, theirs_top, strict=True)])
        logger.info("pyserini: top-10 overlap with LuceneSearcher %.2f (Lucene's BM25, not BRIGHT's)", overlap)
        times = alternate(
            lambda: [index.search(q, 10) for q in queries], lambda: [searcher.search(q, 10) for q in queries], repeats
        )
        searcher.close()
    return [_row("BM25 query from text, one per call (qps)", "pyserini/Anserini SimpleSearcher", len(queries), times)]


# ------------------------------------------------------------------------------------------------ dense


def compare_dense(vectors: np.ndarray, queries: np.ndarray, repeats: int) -> list[Row]:
    import faiss

    ours = DenseIndex(vectors, [str(i) for i in range(len(vectors))], backend="faiss")
    raw = faiss.IndexFlatIP(vectors.shape[1])
    raw.add(vectors)

    def anchor() -> tuple[np.ndarray, np.ndarray]:
        faiss.cvar.distance_compute_blas_threshold = 1  # BLAS for every batch
        return raw.search(queries, 10)

    ids, _ = ours.search(queries, 10)
    _, rows = anchor()
    assert [list(map(int, r)) for r in ids] == rows.tolist(), "dense: top-10 differs from faiss"
    return [_row(f"dense search {len(vectors):,}x{vectors.shape[1]}, batch {len(queries)} (qps)", "faiss IndexFlatIP + BLAS",
                 len(queries), alternate(lambda: ours.search(queries, 10), anchor, repeats))]  # fmt: skip


# ------------------------------------------------------------------------------------------------ hybrid


def numpy_hybrid(
    vectors: np.ndarray, index: BM25Index, queries: list[str], embs: np.ndarray, top_k: int, ids: np.ndarray
) -> dict[str, dict[str, float]]:
    """The anchor: the fusion written straight in numpy, delivering what ours does (a run: id -> score per
    query, for pytrec_eval); ``ids`` is the corpus's id array, built once outside the timing."""
    dense = embs @ vectors.T
    run = {}
    for i, (q, row) in enumerate(zip(queries, dense, strict=True)):
        fused = 0.5 * zscore(row.astype(np.float64)) + 0.5 * zscore(index.score_all(q).astype(np.float64))
        top = np.argpartition(-fused, top_k - 1)[:top_k]
        top = top[np.lexsort((top, -fused[top]))]
        run[f"q{i}"] = dict(zip(ids[top].tolist(), fused[top].tolist(), strict=True))
    return run


def compare_hybrid(vectors: np.ndarray, index: BM25Index, queries: list[str], repeats: int) -> list[Row]:
    rng = np.random.default_rng(1)
    embs = random_unit_vectors(len(queries), vectors.shape[1], rng)
    dense = DenseIndex(vectors, index.corpus.doc_ids, backend="faiss")
    examples = [Example(f"q{i}", q, gold_ids=[]) for i, q in enumerate(queries)]
    ids = np.asarray(index.corpus.doc_ids, dtype=object)
    ours = fuse_runs(dense, index, examples, embs, 0.5, 1000)
    theirs = numpy_hybrid(vectors, index, queries, embs, 1000, ids)
    same = np.mean([len(set(ours[q]) & set(theirs[q])) / 1000 for q in theirs])
    assert same > 0.999, f"hybrid: top-1000 overlap {same}"
    return [_row(f"hybrid BM25+dense, top 1000 ({len(queries)} queries)", "numpy fusion", len(queries),
                 alternate(lambda: fuse_runs(dense, index, examples, embs, 0.5, 1000),
                           lambda: numpy_hybrid(vectors, index, queries, embs, 1000, ids), repeats))]  # fmt: skip


# ------------------------------------------------------------------------------------------------ encode


def compare_encode(texts: list[str], repeats: int, batch_size: int) -> list[Row]:
    """Eager and ``--encoder_compile`` rows; the compiled one is timed after its warm-up call compiled it."""
    from sentence_transformers import SentenceTransformer

    from models.embedded.assets import minilm_path
    from models.retrieval.encoders import EncoderConfig, build_encoder
    from models.retrieval.text_formats import PLAIN

    path = str(minilm_path())
    anchor = SentenceTransformer(path, device="cpu")

    def theirs() -> np.ndarray:
        return anchor.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)

    reference = theirs()
    rows = []
    for compiled in (False, True):
        ours = build_encoder(
            EncoderConfig(path, pooling="mean", text_format=PLAIN, batch_size=batch_size, device="cpu", compile=compiled)
        )
        vectors = ours.encode_documents(texts, show_progress=False)
        assert float(np.min(np.sum(vectors * reference, axis=1))) > 0.9999, "encode: vectors differ from sentence-transformers"
        figure = f"MiniLM encoding{', --encoder_compile' if compiled else ''}, {len(texts)} docs (docs/s)"
        times = alternate(lambda ours=ours: ours.encode_documents(texts, show_progress=False), theirs, repeats)
        rows.append(_row(figure, "SentenceTransformer.encode", len(texts), times))
    return rows


# ------------------------------------------------------------------------------------------------ main


def extrapolate(rows: dict[str, Row], docs: int, bm25_bytes: int = 0) -> list[str]:
    """Paper-scale time from the measured per-item costs (linear in corpus size for search)."""
    lines = ["", "Paper scale (BRIGHT's 12 splits), from the per-item costs above:"]
    total_docs = sum(n for n, _ in BRIGHT_SIZES.values())
    if "bm25_single" in rows:
        per_query_doc = rows["bm25_single"].ours_median_s / rows["bm25_single"].items / docs
        seconds = sum(n * q * per_query_doc for n, q in BRIGHT_SIZES.values())
        lines.append(f"- BM25, every BRIGHT query (scoring and top-k): {seconds:.1f} s")
    if "hybrid" in rows:
        per_query_doc = rows["hybrid"].ours_median_s / rows["hybrid"].items / docs
        seconds = sum(n * q * per_query_doc for n, q in BRIGHT_SIZES.values())
        lines.append(f"- hybrid fusion, every BRIGHT query, per alpha: {seconds:.1f} s")
    for key, label in (("encode", ""), ("encode_compiled", ", --encoder_compile")):
        if key in rows:
            rate = rows[key].items / rows[key].ours_median_s
            hours = total_docs / rate / 3600
            lines.append(f"- MiniLM{label} over all {total_docs:,} BRIGHT documents on this CPU: {hours:.1f} h")
    lines.append(f"- float32 embeddings of all BRIGHT corpora at 3,584-d (Qwen2.5-7B): {total_docs * 3584 * 4 / 1e9:.1f} GB")
    largest, (largest_docs, _) = max(BRIGHT_SIZES.items(), key=lambda item: item[1][0])
    lines.append(
        f"- dense index in memory, largest split ({largest}, {largest_docs:,} docs x 3,584): "
        f"{largest_docs * 3584 * 4 / 1e9:.1f} GB (one copy: faiss's; the cache file is memory-mapped)"
    )
    if "bm25_single" in rows and bm25_bytes:
        per_doc = bm25_bytes / docs
        lines.append(
            f"- BM25 postings at {per_doc:.0f} B/doc (this corpus's 120-word documents; BRIGHT's are longer): "
            f"{per_doc * largest_docs / 1e9:.2f} GB for {largest}"
        )
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=COMPARISONS, default=list(COMPARISONS))
    parser.add_argument("--docs", type=int, default=100_000, help="synthetic corpus size (BM25, dense, hybrid)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--dense_batch", type=int, default=64)
    parser.add_argument("--hybrid_queries", type=int, default=8)
    parser.add_argument("--encode_docs", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json_out", default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rng = np.random.default_rng(args.seed)
    vocabulary = pseudo_words(30_000, rng)
    rows: dict[str, Row] = {}
    index = None
    if {"bm25", "pyserini", "hybrid"} & set(args.only):
        texts = word_salad(vocabulary, args.docs, 120, rng)
        index = BM25Index.build(Corpus("bench", [str(i) for i in range(args.docs)], texts))
        lengths = rng.integers(5, 31, size=args.queries)
        queries = [" ".join(word_salad(vocabulary, 1, int(n), rng, spread=0.0)) for n in lengths]
    if "bm25" in args.only:
        assert index is not None
        query_tokens = index.analyzer.analyze_batch(queries)
        single, batch = compare_bm25(index, query_tokens, args.repeats)
        rows |= {"bm25_single": single, "bm25_batch": batch}
    if "pyserini" in args.only:
        assert index is not None
        rows["pyserini"] = compare_pyserini(index, queries, args.repeats)[0]
    if {"dense", "hybrid"} & set(args.only):
        vectors = random_unit_vectors(args.docs, args.dim, rng)
    if "dense" in args.only:
        rows["dense"] = compare_dense(vectors, random_unit_vectors(args.dense_batch, args.dim, rng), args.repeats)[0]
    if "hybrid" in args.only:
        assert index is not None
        rows["hybrid"] = compare_hybrid(vectors, index, queries[: args.hybrid_queries], args.repeats)[0]
    if "encode" in args.only:
        docs = word_salad(pseudo_words(5_000, rng), args.encode_docs, 150, rng)
        rows["encode"], rows["encode_compiled"] = compare_encode(docs, args.repeats, batch_size=32)
    print("\n| figure | ours | anchor | ratio |\n|---|---|---|---|")
    for row in rows.values():
        print(row.line())
    bm25_bytes = index.postings_nbytes if index is not None else 0
    print("\n".join(extrapolate(rows, args.docs, bm25_bytes)))
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as handle:
            json.dump({k: {**asdict(v), "ratio": v.ratio} for k, v in rows.items()}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
