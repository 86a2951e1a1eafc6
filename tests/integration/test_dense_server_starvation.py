"""A maximal batch on a MiniLM dense server (a real process, started by servers/up.sh) does not starve anyone:
while it encodes, ``/health`` and one-query searches answer within a second. Encoding a request one encoder
batch per turn gives the very vectors, and so the very hits, of one call."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from models.retrieval.corpus import load_corpus
from tests.conftest import REPO_ROOT, free_port

pytestmark = pytest.mark.slow

# Small limits, so a maximal request takes seconds on CPU (64 queries of 256 MiniLM tokens, one torch thread)
# while one encoder batch (4 queries) takes a fraction of a second.
MAX_BATCH, MAX_QUERY_CHARS, ENCODE_BATCH = 64, 2_000, 4
WORDS = ["prime", "divisor", "theorem", "modulus", "congruence", "residue", "polynomial", "integer", "sequence"]


def _long_query(i: int) -> str:
    words = [WORDS[(i + j * 7) % len(WORDS)] for j in range(400)]
    return f"query {i}: " + " ".join(words)[: MAX_QUERY_CHARS - 12]


@pytest.fixture(scope="module")
def minilm_server(minilm_dir: Path, champ_mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    run_dir = tmp_path_factory.mktemp("minilm_server")
    port = free_port()
    env = {
        **os.environ,
        "SERVER_RUN_DIR": str(run_dir),
        "RADER_ENV_FILE": str(run_dir / "no.env"),
        "BRIGHT_DIR": str(champ_mirror),
        "BRIGHT_CACHE_DIR": str(run_dir / "cache"),
        "RADER_CORPUS": "champ",
        "OMP_NUM_THREADS": "1",  # two torch threads on two shared cores are several times slower than one
    }
    flags = ["--encode_missing", "--text_format", "plain", "--encode_batch_size", str(ENCODE_BATCH),
             "--max_batch", str(MAX_BATCH), "--max_query_chars", str(MAX_QUERY_CHARS),
             "--max_request_chars", str(MAX_BATCH * MAX_QUERY_CHARS)]  # fmt: skip
    spec = f"rader={minilm_dir},{port}," + ",".join(flags)  # the dense launcher, here with MiniLM's format
    up = subprocess.run(["bash", str(REPO_ROOT / "servers/up.sh"), "--timeout", "300", spec],
                        env=env, capture_output=True, text=True)  # fmt: skip
    if up.returncode != 0:
        pytest.fail(f"servers/up.sh failed ({up.returncode}):\n{up.stderr[-4000:]}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run(["bash", str(REPO_ROOT / "servers/down.sh"), "--run-dir", str(run_dir)], env=env, check=True)


def test_health_and_one_query_searches_stay_fast_while_a_maximal_batch_runs(minilm_server: str) -> None:
    url = minilm_server
    big = [_long_query(i) for i in range(MAX_BATCH)]
    assert all(len(q) <= MAX_QUERY_CHARS for q in big) and sum(map(len, big)) <= MAX_BATCH * MAX_QUERY_CHARS
    with httpx.Client(base_url=url, timeout=30) as http:
        http.post("/search", json={"queries": big[:1], "k": 3})  # warm up the model and the allocator

        done = threading.Event()
        outcome: dict[str, object] = {}

        def send_big() -> None:
            started = time.monotonic()
            outcome["response"] = httpx.post(
                f"{url}/search", json={"queries": big, "k": 10, "include_texts": False}, timeout=300
            )
            outcome["seconds"] = time.monotonic() - started
            done.set()

        sender = threading.Thread(target=send_big)
        sender.start()
        time.sleep(0.5)  # the batch is encoding now
        latencies: list[tuple[str, float]] = []
        rounds_during_batch = 0
        while not done.is_set() and rounds_during_batch < 5:
            for label, request in (
                ("GET /health", lambda: http.get("/health")),
                ("GET /search", lambda: http.get("/search", params={"query": "prime divisors of n", "k": 5})),
                ("POST /search", lambda: http.post("/search", json={"queries": ["modular inverse"], "k": 5})),
            ):
                started = time.monotonic()
                response = request()
                latencies.append((label, time.monotonic() - started))
                assert response.status_code == 200, (label, response.text[:300])
            if not done.is_set():
                rounds_during_batch += 1
            time.sleep(0.2)
        sender.join(timeout=300)

    response = outcome["response"]
    assert isinstance(response, httpx.Response) and response.status_code == 200, response
    assert len(response.json()["results"]) == MAX_BATCH
    slow = [(label, round(seconds, 2)) for label, seconds in latencies if seconds >= 1.0]
    assert slow == [], f"answers took 1 s or more while a {outcome['seconds']:.1f} s batch ran: {slow}"
    assert rounds_during_batch >= 2, f"the batch took {outcome['seconds']:.1f} s: too short to overlap the probes"


def test_encoding_by_encoder_batch_gives_the_vectors_and_hits_of_one_call(
    minilm_dir: Path, champ_mirror: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    from models.retrieval.encoders import EncoderConfig, build_encoder
    from models.retrieval.retrievers import DenseRetriever, encoder_batches
    from models.retrieval.text_formats import PLAIN

    corpus = load_corpus(champ_mirror, "champ")
    encoder = build_encoder(EncoderConfig(str(minilm_dir), pooling="mean", text_format=PLAIN, batch_size=ENCODE_BATCH))
    retriever = DenseRetriever.from_cache(encoder, corpus, tmp_path, "minilm", show_progress=False)
    # Lengths out of order, so the encoder's longest-first batches differ from the input order; 13 is no
    # multiple of the batch size.
    queries = [corpus.text_of(doc_id)[: 40 + (i * 97) % 900] for i, doc_id in enumerate(corpus.doc_ids[:13])]

    one_call = encoder.encode_queries(queries)
    by_batch = np.empty_like(one_call)
    batches = encoder_batches(encoder, queries, None)
    assert sorted(i for batch in batches for i in batch) == list(range(len(queries)))
    assert batches[0] != list(range(ENCODE_BATCH))  # the longest-first order is in play
    for batch in batches:
        by_batch[batch] = encoder.encode_queries([queries[i] for i in batch])
    assert np.array_equal(by_batch, one_call)  # bit for bit

    ids, scores = retriever.index.search(one_call, 10)
    hits = retriever.search_batch(queries, 10)
    assert [[doc_id for doc_id, _ in q] for q in hits] == ids
    assert [[score for _, score in q] for q in hits] == scores
    encoder.close()
