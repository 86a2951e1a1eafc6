"""The retriever app answers both search forms and turns every kind of bad input into a 4xx."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from models.retrieval.corpus import load_corpus
from models.retrieval.retrievers import BM25Retriever
from models.serving.retriever_app import ServerLimits, create_app

LIMITS = ServerLimits(max_k=100, max_query_chars=2_000, max_batch=8)

# (method, path, kwargs for the request, expected status, text the error must contain)
BAD_REQUESTS = [
    ("GET", "/search", {}, 422, "query"),
    ("GET", "/search", {"params": {"query": "", "k": 5}}, 422, "empty"),
    ("GET", "/search", {"params": {"query": "   ", "k": 5}}, 422, "empty"),
    ("GET", "/search", {"params": {"query": "prime", "k": 0}}, 422, "k must be between 1 and 100"),
    ("GET", "/search", {"params": {"query": "prime", "k": -3}}, 422, "k must be"),
    ("GET", "/search", {"params": {"query": "prime", "k": 101}}, 422, "k must be"),
    ("GET", "/search", {"params": {"query": "prime", "k": "ten"}}, 422, "k"),
    ("GET", "/search", {"params": {"query": "x" * 2_001}}, 413, "2001 characters"),
    ("POST", "/search", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "JSON"),
    ("POST", "/search", {"json": {}}, 422, "queries"),
    ("POST", "/search", {"json": {"queries": []}}, 422, "queries"),
    ("POST", "/search", {"json": {"queries": "one string"}}, 422, "queries"),
    ("POST", "/search", {"json": {"queries": ["ok", ""]}}, 422, "queries[1] is empty"),
    ("POST", "/search", {"json": {"queries": ["ok"], "k": 0}}, 422, "k must be"),
    ("POST", "/search", {"json": {"queries": ["ok"], "top": 3}}, 422, "top"),
    ("POST", "/search", {"json": {"queries": ["q"] * 9}}, 413, "limit is 8"),
    ("POST", "/search", {"json": {"queries": ["a", "b", "c"], "excluded_ids": [[], []]}}, 422, "one per query"),
    ("POST", "/search", {"json": {"queries": ["ok"], "k": 2.5}}, 422, "k"),
    ("GET", "/nowhere", {}, 404, ""),
]


@pytest.fixture(scope="module")
def client(champ_mirror: Path) -> TestClient:
    corpus = load_corpus(champ_mirror, "champ")
    return TestClient(create_app(BM25Retriever.from_corpus(corpus), LIMITS))


def test_health_describes_the_retriever(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["retriever"] == "bm25"
    assert body["corpus"] == "champ" and body["n_docs"] == 89


def test_get_search_has_the_reference_shape(client: TestClient, champ_mirror: Path) -> None:
    corpus = load_corpus(champ_mirror, "champ")
    doc_id = corpus.doc_ids[10]
    body = client.get("/search", params={"query": corpus.text_of(doc_id), "k": 3}).json()
    texts, ids, scores = body["results"]
    assert len(texts) == len(ids) == len(scores) == 3
    assert ids[0] == doc_id and texts[0] == corpus.text_of(doc_id)
    assert scores == sorted(scores, reverse=True)
    assert body["doc_ids"] == ids and body["scores"] == scores


def test_post_search_batches_and_excludes(client: TestClient, champ_mirror: Path) -> None:
    corpus = load_corpus(champ_mirror, "champ")
    queries = [corpus.text_of(corpus.doc_ids[i]) for i in (0, 5)]
    body = client.post("/search", json={"queries": queries, "k": 4, "include_texts": False}).json()
    assert [r["doc_ids"][0] for r in body["results"]] == [corpus.doc_ids[0], corpus.doc_ids[5]]
    assert all(r["texts"] == [] and len(r["doc_ids"]) == 4 for r in body["results"])
    excluded = client.post(
        "/search", json={"queries": queries, "k": 4, "excluded_ids": [[corpus.doc_ids[0]]]}
    ).json()["results"]
    assert all(corpus.doc_ids[0] not in r["doc_ids"] for r in excluded)  # one list applies to every query
    assert len(excluded[0]["texts"]) == 4


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "message"), BAD_REQUESTS)
def test_bad_input_is_a_4xx_and_the_server_stays_healthy(
    client: TestClient, method: str, path: str, kwargs: dict, status: int, message: str
) -> None:
    response = client.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    assert message in response.text
    assert client.get("/health").status_code == 200


def test_a_server_still_encoding_reports_progress_then_serves(champ_mirror: Path) -> None:
    from models.serving.deferred_app import DeferredApp

    deferred = DeferredApp("rader")
    with TestClient(deferred) as client:
        deferred.progress(300, 1000)
        health = client.get("/health")
        assert health.status_code == 503 and health.json() == {"status": "loading", "retriever": "rader", "done": 300,
                                                                "total": 1000, "instance": ""}  # fmt: skip
        assert client.get("/search", params={"query": "primes"}).status_code == 503
        deferred.ready(create_app(BM25Retriever.from_corpus(load_corpus(champ_mirror, "champ")), LIMITS))
        assert client.get("/health").status_code == 200
        assert client.get("/search", params={"query": "prime numbers", "k": 2}).json()["doc_ids"]


def test_api_key_is_required_on_every_endpoint_when_set(champ_mirror: Path) -> None:
    corpus = load_corpus(champ_mirror, "champ")
    app = create_app(BM25Retriever.from_corpus(corpus), ServerLimits(api_key="s3cret"))
    with TestClient(app) as http:
        for method, path in (("GET", "/health"), ("GET", "/search?query=primes&k=2"), ("POST", "/search")):
            assert http.request(method, path, json={"queries": ["primes"]}).status_code == 401, path
            wrong = http.request(method, path, json={"queries": ["primes"]}, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401, path
        ok = http.get("/search", params={"query": "primes", "k": 2}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and len(ok.json()["doc_ids"]) == 2


def test_a_non_loopback_bind_without_a_key_is_refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from run_src import serve_retriever

    monkeypatch.delenv("RETRIEVER_API_KEY", raising=False)
    argv = ["--retriever", "bm25", "--split", "champ", "--port", "9", "--host", "0.0.0.0"]
    with pytest.raises(SystemExit):
        serve_retriever.parse_config(argv)
    assert "RETRIEVER_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("RETRIEVER_API_KEY", "s3cret")
    assert serve_retriever.parse_config(argv).host == "0.0.0.0"
    monkeypatch.delenv("RETRIEVER_API_KEY")
    assert serve_retriever.parse_config([*argv[:-1], "127.0.0.1"]).host == "127.0.0.1"


def test_k_3_0_is_3_blank_is_any_unicode_space_and_excluded_ids_may_be_blank(client: TestClient) -> None:
    ok = client.post("/search", json={"queries": ["prime numbers"], "k": 3.0, "excluded_ids": [[" ", ""]]})
    assert ok.status_code == 200 and len(ok.json()["results"][0]["doc_ids"]) == 3
    for blank in ("\x1c", "\u3000", "\ufeff \x85", "\t\v"):  # Python's and JSON Schema's spaces alike
        refused = client.post("/search", json={"queries": ["ok", blank]})
        assert refused.status_code == 422 and "queries[1] is empty" in refused.text, repr(blank)
    assert client.post("/search", json={"queries": ["ok"], "excluded_ids": []}).status_code == 422


def test_the_openapi_document_states_the_limits_and_statuses(client: TestClient) -> None:
    document = client.app.openapi()  # type: ignore[attr-defined]
    request = document["components"]["schemas"]["BatchSearchRequest"]["properties"]
    assert request["queries"]["maxItems"] == LIMITS.max_batch
    assert request["queries"]["items"]["maxLength"] == LIMITS.max_query_chars
    assert request["k"]["maximum"] == LIMITS.max_k
    get = document["paths"]["/search"]["get"]
    assert {p["name"]: p["schema"].get("maximum") for p in get["parameters"]}["k"] == LIMITS.max_k
    for operation in (get, document["paths"]["/search"]["post"]):
        assert {"200", "413", "422", "503"} <= set(operation["responses"])
        assert "Retry-After" in operation["responses"]["503"]["headers"]
    assert client.get("/openapi.json").status_code == 404  # published only with enable_docs
