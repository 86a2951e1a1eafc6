"""A large search never starves a small one: the encoder is taken one encoder batch at a time in arrival
order, a full queue is refused at once with 503 and Retry-After, and the client waits what it asks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from models.retrieval.corpus import Corpus
from models.retrieval.dense_search import DenseIndex
from models.retrieval.retrievers import DenseRetriever, FifoLock
from models.serving.retriever_app import ServerLimits, create_app
from models.serving.retriever_client import RetrieverClient
from tests.local_server import ThreadedAppServer

CORPUS = Corpus("tiny", ["d0", "d1", "d2"], ["zero", "one", "two"])


def test_fifo_lock_serves_waiters_in_arrival_order() -> None:
    lock, order = FifoLock(), []
    lock.__enter__()
    threads = []
    for i in range(5):
        thread = threading.Thread(target=lambda i=i: (lock.__enter__(), order.append(i), lock.__exit__()))
        thread.start()
        threads.append(thread)
        time.sleep(0.05)  # each one is waiting before the next arrives
    lock.__exit__()
    for thread in threads:
        thread.join(timeout=5)
    assert order == [0, 1, 2, 3, 4]


class RecordingEncoder:
    """Two queries per batch; records which request each batch belongs to. The first batch waits for
    ``release``, so a second request can arrive while the first holds the encoder."""

    def __init__(self) -> None:
        self.config = SimpleNamespace(batch_size=2)
        self.dim = 3
        self.calls: list[list[str]] = []
        self.release = threading.Event()

    def encode_queries(self, texts: Sequence[str], task: str | None = None) -> np.ndarray:
        if not self.calls:
            assert self.release.wait(timeout=10)
        self.calls.append(list(texts))
        return np.eye(3, dtype=np.float32)[[len(t) % 3 for t in texts]]

    def describe(self, side: str = "both") -> dict[str, object]:
        return {}


def test_a_small_request_goes_between_the_batches_of_a_large_one() -> None:
    encoder = RecordingEncoder()
    retriever = DenseRetriever(encoder, CORPUS, DenseIndex(np.eye(3, dtype=np.float32), CORPUS.doc_ids), name="fake")  # type: ignore[arg-type]
    big = [f"big {i}" for i in range(8)]  # four encoder batches
    results: dict[str, list] = {}
    first = threading.Thread(target=lambda: results.update(big=retriever.search_batch(big, k=2)))
    first.start()
    time.sleep(0.1)  # the large request holds the encoder (its first batch waits for release)
    second = threading.Thread(target=lambda: results.update(small=retriever.search_batch(["small"], k=2)))
    second.start()
    time.sleep(0.1)  # the small one is queued
    encoder.release.set()
    first.join(timeout=10)
    second.join(timeout=10)
    assert encoder.calls == [big[0:2], ["small"], big[2:4], big[4:6], big[6:8]]
    assert len(results["big"]) == 8 and all(len(hits) == 2 for hits in results["big"])
    # the same rankings as one call for each request
    one_call = DenseIndex(np.eye(3, dtype=np.float32), CORPUS.doc_ids).search(
        np.eye(3, dtype=np.float32)[[len(t) % 3 for t in big]], 2
    )
    assert [[doc_id for doc_id, _ in hits] for hits in results["big"]] == one_call[0]


class BlockingRetriever:
    """Every search waits for ``release``; ``entered`` counts searches under way."""

    name = "blocking"
    corpus = CORPUS

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = 0

    def search_batch(
        self, queries: Sequence[str], k: int, excluded_ids: Sequence[Iterable[str]] | None = None
    ) -> list[list[tuple[str, float]]]:
        self.entered += 1
        assert self.release.wait(timeout=30)
        return [[("d0", 1.0)] for _ in queries]

    def describe(self) -> dict[str, object]:
        return {}


def test_a_full_queue_answers_503_with_retry_after_and_health_stays_up() -> None:
    retriever = BlockingRetriever()
    app = create_app(retriever, ServerLimits(max_pending_requests=2))  # type: ignore[arg-type]
    with ThreadedAppServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        answers: list[httpx.Response] = []
        held = [
            threading.Thread(target=lambda: answers.append(httpx.post(f"{server.url}/search", json={"queries": ["a"]}, timeout=30))),
            threading.Thread(target=lambda: answers.append(httpx.get(f"{server.url}/search", params={"query": "b"}, timeout=30))),
        ]  # fmt: skip
        for thread in held:
            thread.start()
        deadline = time.monotonic() + 10
        while retriever.entered < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert retriever.entered == 2
        busy = http.post("/search", json={"queries": ["c"]})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert busy.json()["detail"][0]["type"] == "busy" and "2 searches" in busy.json()["detail"][0]["msg"]
        assert http.get("/search", params={"query": "d"}).status_code == 503
        started = time.monotonic()
        assert http.get("/health").status_code == 200 and time.monotonic() - started < 1
        retriever.release.set()
        for thread in held:
            thread.join(timeout=30)
        assert sorted(r.status_code for r in answers) == [200, 200]
        assert http.post("/search", json={"queries": ["e"]}).status_code == 200  # the slots are free again


def test_the_client_waits_at_least_what_retry_after_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    app = FastAPI()
    calls = []

    @app.get("/health")
    def busy_then_ok() -> JSONResponse:
        calls.append(1)
        if len(calls) == 1:
            return JSONResponse({"detail": []}, status_code=503, headers={"Retry-After": "3"})
        return JSONResponse({"status": "ok", "retriever": "x", "corpus": "c", "n_docs": 1, "details": {}})

    slept: list[float] = []
    with ThreadedAppServer(app) as server:
        monkeypatch.setattr("models.serving.retriever_client.time.sleep", slept.append)  # the server is up by now
        with RetrieverClient(server.url, initial_backoff_s=0.5, max_backoff_s=15) as client:
            assert client.health().status == "ok"
        monkeypatch.undo()
    assert slept == [3.0]  # the server's 3 s, not the client's 0.5 s
