"""Retrieval throughput: queries/second and latency of BM25 and dense search, direct and over HTTP.

MCTS sends one retrieval request per expanded node, from many worker threads, so what matters is
how many single-query requests a retriever server answers per second and how much the HTTP layer
costs on top of the search itself. This script (not a test) measures that on synthetic data:

* a seeded corpus of ``--docs`` word-salad documents (~``--words_per_doc`` pseudo-words each, drawn
  Zipf-like from a ``--vocab``-word vocabulary) and ``--query_pool`` 8-word queries;
* ``bm25``: :class:`models.retrieval.retrievers.BM25Retriever` over that corpus (the Lucene analysis of 100k
  documents takes about a minute; shrink with ``--docs``), its Lucene analyser
  serialises JVM calls (one Lucene Analyzer is not thread-safe);
* ``dense``: :class:`models.retrieval.dense_search.DenseIndex` over random unit vectors of width ``--dim``
  (576 = SmolLM2), queried through :class:`SyntheticDenseRetriever`, which maps each query string to a
  precomputed random vector, so only the search is timed;
* ``dense+minilm`` (``--with_encoder minilm``): the real :class:`models.retrieval.retrievers.DenseRetriever`
  with all-MiniLM-L6-v2 query encoding over random 384-d document vectors.

Each retriever is called directly by one client, then through the real FastAPI app
(:func:`models.serving.retriever_app.create_app`) served by uvicorn on 127.0.0.1 in a background
thread, by 1 and by 16 concurrent httpx clients (``GET /search?query=&k=``, ``--requests`` requests
in all, after a short warm-up). Every server answer is compared with the direct answer to the same
query (column ``wrong``). Server and clients share one process, so their Python code competes for
the GIL; treat the server numbers as a lower bound for a server in its own process.

Usage::

    python -m benchmarks.retrieval_bench --docs 20000
    python -m benchmarks.retrieval_bench --with_encoder minilm --json_out /tmp/bench.json
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import logging
import os
import platform
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from models.retrieval.corpus import Corpus
from models.retrieval.dense_search import DenseIndex
from models.retrieval.retrievers import Hit, Retriever

logger = logging.getLogger(__name__)

BACKENDS = ("bm25", "dense")
ENCODERS = ("minilm",)
_CONSONANTS = "bcdfghjklmnprstvz"
_VOWELS = "aeiou"

Caller = Callable[[int], None]


@dataclass(frozen=True)
class BenchConfig:
    docs: int
    vocab: int
    words_per_doc: int
    dim: int
    query_pool: int
    query_words: int
    requests: int
    clients: tuple[int, ...]
    warmup: int
    k: int
    backends: tuple[str, ...]
    with_encoder: str | None
    threads: int
    seed: int
    json_out: str | None


@dataclass(frozen=True)
class Measurement:
    """One row of the table; latencies are per request, in milliseconds."""

    backend: str
    path: str
    clients: int
    requests: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    wrong: int = 0  # server answers whose doc ids differ from the direct answer to the same query

    @property
    def qps(self) -> float:
        return self.requests / self.seconds

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))

    def row(self) -> dict[str, object]:
        return {
            "backend": self.backend, "path": self.path, "clients": self.clients, "requests": self.requests,
            "seconds": round(self.seconds, 3), "qps": round(self.qps, 1),
            "p50_ms": round(self.percentile_ms(50), 2), "p95_ms": round(self.percentile_ms(95), 2),
            "wrong": self.wrong,
        }


# --- synthetic data -------------------------------------------------------------------------------


def pseudo_words(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct pronounceable non-words of 2-4 consonant-vowel syllables ("tibaku")."""
    words: dict[str, None] = {}
    while len(words) < n:
        syllables = rng.integers(2, 5)
        cons = rng.integers(0, len(_CONSONANTS), size=syllables)
        vows = rng.integers(0, len(_VOWELS), size=syllables)
        words["".join(_CONSONANTS[c] + _VOWELS[v] for c, v in zip(cons, vows, strict=True))] = None
    return list(words)


def zipf_weights(n: int, exponent: float = 1.0) -> np.ndarray:
    """Word frequencies falling off like natural text, so BM25 posting lists have realistic lengths."""
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()


def word_salad(
    vocabulary: Sequence[str], n_texts: int, mean_words: int, rng: np.random.Generator, spread: float = 0.3
) -> list[str]:
    """``n_texts`` texts of about ``mean_words`` Zipf-sampled words (length uniform within +-``spread``)."""
    low, high = max(1, int(mean_words * (1 - spread))), int(mean_words * (1 + spread)) + 1
    lengths = rng.integers(low, high, size=n_texts)
    flat = rng.choice(len(vocabulary), size=int(lengths.sum()), p=zipf_weights(len(vocabulary)))
    words = np.asarray(vocabulary, dtype=object)[flat]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [" ".join(words[bounds[i] : bounds[i + 1]]) for i in range(n_texts)]


def random_unit_vectors(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


class SyntheticDenseRetriever:
    """A :class:`Retriever` over a :class:`DenseIndex` whose queries need no encoder: the query string is
    hashed to pick one of a pool of precomputed vectors, so a benchmark through the server times the
    search and the HTTP layer only (the same string always gets the same vector and ranking)."""

    def __init__(self, corpus: Corpus, index: DenseIndex, query_vectors: np.ndarray) -> None:
        if index.doc_ids != corpus.doc_ids:
            raise ValueError("the synthetic index must hold one vector per corpus document, in corpus order")
        if query_vectors.ndim != 2 or query_vectors.shape[1] != index.dim:
            raise ValueError(f"query vectors must be [n, {index.dim}], got {query_vectors.shape}")
        self.corpus = corpus
        self.index = index
        self.query_vectors = np.ascontiguousarray(query_vectors, dtype=np.float32)
        self.name = "synthetic-dense"

    def vector_row(self, query: str) -> int:
        digest = hashlib.blake2b(query.encode("utf-8"), digest_size=8).digest()
        return int.from_bytes(digest, "little") % len(self.query_vectors)

    def search_batch(
        self, queries: Sequence[str], k: int, excluded_ids: Sequence[Iterable[str]] | None = None
    ) -> list[list[Hit]]:
        embeddings = self.query_vectors[[self.vector_row(q) for q in queries]]
        ids, scores = self.index.search(embeddings, k, excluded_ids)
        return [list(zip(q_ids, q_scores, strict=True)) for q_ids, q_scores in zip(ids, scores, strict=True)]

    def describe(self) -> dict[str, object]:
        return {"retriever": self.name, "dim": self.index.dim, "backend": self.index.backend,
                "query_vectors": len(self.query_vectors)}


# --- load generation ------------------------------------------------------------------------------


def drive(make_caller: Callable[[], Caller], requests: int, clients: int) -> tuple[float, list[float]]:
    """Run ``requests`` calls from ``clients`` threads (each with its own caller); wall seconds and latencies.

    Requests are handed out one at a time from a shared counter, so fast clients take more of them.
    """
    counter = itertools.count()
    lock = threading.Lock()
    latencies = [0.0] * requests
    errors: list[BaseException] = []
    callers = [make_caller() for _ in range(clients)]  # built before the clock starts
    barrier = threading.Barrier(clients + 1)

    def worker(call: Caller) -> None:
        barrier.wait()
        while not errors:
            with lock:
                i = next(counter)
            if i >= requests:
                return
            start = time.perf_counter()
            try:
                call(i)
            except Exception as err:  # reported after the join; a benchmark with failures is void
                errors.append(err)
                return
            latencies[i] = (time.perf_counter() - start) * 1000.0

    threads = [threading.Thread(target=worker, args=(c,), name=f"bench-client-{n}") for n, c in enumerate(callers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} request(s) failed; first: {errors[0]!r}") from errors[0]
    return elapsed, latencies


def direct_caller(
    retriever: Retriever, queries: Sequence[str], k: int, answers: dict[int, list[str]]
) -> Callable[[], Caller]:
    """Single-client direct calls; records each query's doc ids in ``answers`` as the reference."""

    def make() -> Caller:
        def call(i: int) -> None:
            hits = retriever.search_batch([queries[i % len(queries)]], k)[0]
            if len(hits) != k:
                raise RuntimeError(f"query {i % len(queries)}: {len(hits)} hits for k={k}")
            answers[i % len(queries)] = [doc_id for doc_id, _ in hits]

        return call

    return make


def http_caller(
    base_url: str, queries: Sequence[str], k: int, answers: dict[int, list[str]], wrong: list[int],
    clients_out: list[object],
) -> Callable[[], Caller]:
    """Each client thread gets its own keep-alive ``httpx.Client`` (closed by the caller afterwards);
    an answer that differs from ``answers`` is counted in ``wrong``, not raised, so the row still prints."""
    import httpx

    def make() -> Caller:
        client = httpx.Client(base_url=base_url, timeout=120.0)
        clients_out.append(client)

        def call(i: int) -> None:
            q = i % len(queries)
            response = client.get("/search", params={"query": queries[q], "k": k})
            response.raise_for_status()
            if response.json()["doc_ids"] != answers.get(q):
                wrong.append(q)

        return call

    return make


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve_in_thread(retriever: Retriever, timeout_s: float = 30.0) -> Iterator[str]:
    """The real retriever app under uvicorn on a free loopback port, in a daemon thread."""
    import httpx
    import uvicorn

    from models.serving.retriever_app import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(retriever), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="bench-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port} within {timeout_s}s")
        time.sleep(0.05)
    base_url = f"http://127.0.0.1:{port}"
    try:
        httpx.get(f"{base_url}/health", timeout=10).raise_for_status()
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=timeout_s)


def measure_retriever(name: str, retriever: Retriever, queries: Sequence[str], config: BenchConfig) -> list[Measurement]:
    """Direct (1 client), then through the server with each of ``config.clients``."""
    rows: list[Measurement] = []
    answers: dict[int, list[str]] = {}
    make = direct_caller(retriever, queries, config.k, answers)
    drive(make, config.warmup, 1)
    seconds, latencies = drive(make, config.requests, 1)
    rows.append(Measurement(name, "direct", 1, config.requests, seconds, latencies))
    logger.info("%s direct: %.1f qps", name, rows[-1].qps)
    with serve_in_thread(retriever) as base_url:
        for clients in config.clients:
            http_clients: list[object] = []
            wrong: list[int] = []
            make = http_caller(base_url, queries, config.k, answers, wrong, http_clients)
            try:
                drive(make, min(config.requests, max(config.warmup, clients)), clients)
                wrong.clear()
                seconds, latencies = drive(make, config.requests, clients)
            finally:
                for client in http_clients:
                    client.close()  # type: ignore[attr-defined]
            rows.append(Measurement(name, "server", clients, config.requests, seconds, latencies, len(wrong)))
            logger.info("%s server, %d clients: %.1f qps, %d wrong answers", name, clients, rows[-1].qps, len(wrong))
    return rows


# --- orchestration --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000, help="synthetic corpus size")
    parser.add_argument("--vocab", type=int, default=30_000, help="pseudo-words in the vocabulary")
    parser.add_argument("--words_per_doc", type=int, default=60)
    parser.add_argument("--dim", type=int, default=576, help="dense vector width (576 = SmolLM2-135M)")
    parser.add_argument("--query_pool", type=int, default=256, help="distinct queries (and query vectors)")
    parser.add_argument("--query_words", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per row")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16], help="concurrent server clients")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests before each row")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--with_encoder", choices=ENCODERS, default=None,
                        help="also time a real DenseRetriever that encodes each query with this model")
    parser.add_argument("--threads", type=int, default=1,
                        help="OpenMP threads for faiss and torch; 1 avoids spin-wait stalls on a shared CPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json_out", default=None, help="also write the config and rows here as JSON")
    return parser


def parse_config(argv: list[str] | None) -> BenchConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    if min(args.docs, args.vocab, args.words_per_doc, args.dim, args.query_pool, args.requests, args.k,
           args.threads) < 1:
        parser.error("sizes, --requests and --k must be positive")
    if args.k > args.docs or min(args.clients) < 1:
        parser.error(f"--k ({args.k}) must not exceed --docs ({args.docs}) and --clients must be positive")
    values = vars(args)
    values["clients"] = tuple(args.clients)
    values["backends"] = tuple(dict.fromkeys(args.backends))
    return BenchConfig(**values)


def run(config: BenchConfig) -> tuple[list[Measurement], dict[str, float]]:
    _set_threads(config)
    rng = np.random.default_rng(config.seed)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    vocabulary = pseudo_words(config.vocab, rng)
    corpus = Corpus(
        name=f"synthetic{config.docs}",
        doc_ids=[f"d{i:06d}" for i in range(config.docs)],
        texts=word_salad(vocabulary, config.docs, config.words_per_doc, rng),
    )
    queries = word_salad(vocabulary, config.query_pool, config.query_words, rng, spread=0.0)
    timings["corpus_s"] = time.perf_counter() - start
    logger.info("synthetic corpus: %d documents, %d-word vocabulary, %.1fs", len(corpus), len(vocabulary),
                timings["corpus_s"])

    rows: list[Measurement] = []
    if "bm25" in config.backends:
        from models.retrieval.bm25 import BM25Index
        from models.retrieval.retrievers import BM25Retriever
        from models.retrieval.text_analysis import default_analyzer

        start = time.perf_counter()
        bm25 = BM25Retriever(BM25Index.build(corpus, analyzer=default_analyzer()))
        timings["bm25_build_s"] = time.perf_counter() - start
        rows += measure_retriever("bm25", bm25, queries, config)
        del bm25
    if "dense" in config.backends:
        start = time.perf_counter()
        index = DenseIndex(random_unit_vectors(config.docs, config.dim, rng), corpus.doc_ids)
        dense = SyntheticDenseRetriever(corpus, index, random_unit_vectors(config.query_pool, config.dim, rng))
        timings["dense_build_s"] = time.perf_counter() - start
        rows += measure_retriever(f"dense-{config.dim}d", dense, queries, config)
        del dense, index
    if config.with_encoder == "minilm":
        rows += measure_retriever("dense+minilm", _minilm_retriever(corpus, rng, timings), queries, config)
    return rows, timings


def _set_threads(config: BenchConfig) -> None:
    """On a CPU shared with other work, two OpenMP threads spinning on each other made one MiniLM
    query take ~500 ms instead of ~60 ms here; one thread per search keeps the numbers meaningful.

    ``faiss.omp_set_num_threads`` only sets the calling thread's OpenMP default, and searches run in
    client and server pool threads, so ``OMP_NUM_THREADS`` must be set before the OpenMP runtime
    loads (with faiss or torch); the explicit calls cover a runtime that was already loaded.
    """
    from models.retrieval.dense_search import faiss_available

    os.environ["OMP_NUM_THREADS"] = str(config.threads)
    if faiss_available():
        import faiss

        faiss.omp_set_num_threads(config.threads)
    if config.with_encoder:
        import torch

        torch.set_num_threads(config.threads)


def _minilm_retriever(corpus: Corpus, rng: np.random.Generator, timings: dict[str, float]) -> Retriever:
    from models.embedded.assets import minilm_path
    from models.retrieval.encoder_flags import encoder_config_from_flags
    from models.retrieval.encoders import build_encoder
    from models.retrieval.retrievers import DenseRetriever

    start = time.perf_counter()
    encoder = build_encoder(encoder_config_from_flags(str(minilm_path()), "plain", "mean"))
    index = DenseIndex(random_unit_vectors(len(corpus), encoder.dim, rng), corpus.doc_ids)
    timings["minilm_build_s"] = time.perf_counter() - start
    return DenseRetriever(encoder, corpus, index, name="minilm")


def format_table(rows: Sequence[Measurement]) -> str:
    header = f"{'backend':<14} {'path':<7} {'clients':>7} {'requests':>8} {'seconds':>8} {'qps':>8} " \
             f"{'p50_ms':>8} {'p95_ms':>8} {'wrong':>6}"
    lines = [header, "-" * len(header)]
    for m in rows:
        lines.append(f"{m.backend:<14} {m.path:<7} {m.clients:>7} {m.requests:>8} {m.seconds:>8.2f} {m.qps:>8.1f} "
                     f"{m.percentile_ms(50):>8.2f} {m.percentile_ms(95):>8.2f} {m.wrong:>6}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = parse_config(argv)
    logger.info("config: %s", asdict(config))
    rows, timings = run(config)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"# {config.docs} docs x ~{config.words_per_doc} words, vocab {config.vocab}, dim {config.dim}, "
          f"k {config.k}, {config.threads} OpenMP thread(s); {machine}")
    print("# build seconds: " + ", ".join(f"{name} {value:.1f}" for name, value in timings.items()))
    print(format_table(rows))
    if config.json_out:
        from models.io_utils import atomic_write_json

        atomic_write_json(Path(config.json_out), {
            "config": asdict(config), "machine": machine, "timings_s": timings, "rows": [m.row() for m in rows],
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
