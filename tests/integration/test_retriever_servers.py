"""BM25, RaDeR-style and RepLLaMA-style retriever servers as real processes on loopback,
started and stopped through servers/up.sh and servers/down.sh (SmolLM2 as the dense model)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from models.retrieval.corpus import load_corpus
from models.serving.retriever_client import RetrieverClient, RetrieverServiceError
from tests.conftest import REPO_ROOT, free_port

pytestmark = pytest.mark.slow

SERVERS = ("bm25", "rader", "repllama")


@pytest.fixture(scope="module")
def running(smollm2_dir: Path, champ_mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    run_dir = tmp_path_factory.mktemp("retriever_servers")
    ports = {name: free_port() for name in SERVERS}
    env = {
        **os.environ,
        "SERVER_RUN_DIR": str(run_dir),
        "RADER_ENV_FILE": str(run_dir / "no.env"),
        "BRIGHT_DIR": str(champ_mirror),
        "BRIGHT_CACHE_DIR": str(run_dir / "cache"),
        "RADER_CORPUS": "champ",
        "REPLLAMA_CORPUS": "champ",
    }
    # No stage-1 cache exists here, so the dense servers are asked to encode the corpus at start-up.
    specs = [f"bm25=champ,{ports['bm25']}", f"rader={smollm2_dir},{ports['rader']},--encode_missing",
             f"repllama={smollm2_dir},{ports['repllama']},--encode_missing"]
    up = subprocess.run(["bash", str(REPO_ROOT / "servers/up.sh"), "--timeout", "600", *specs],
                        env=env, capture_output=True, text=True)
    if up.returncode != 0:
        pytest.fail(f"servers/up.sh failed ({up.returncode}):\n{up.stderr[-4000:]}")
    pgids = [int((run_dir / f"{name}.pid").read_text()) for name in SERVERS]
    try:
        yield {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    finally:
        subprocess.run(["bash", str(REPO_ROOT / "servers/down.sh"), "--run-dir", str(run_dir)], env=env, check=True)
        for pgid in pgids:
            with pytest.raises(ProcessLookupError):
                os.killpg(pgid, 0)


@pytest.mark.parametrize("name", SERVERS)
def test_both_search_forms_and_health(running: dict[str, str], champ_mirror: Path, name: str) -> None:
    corpus = load_corpus(champ_mirror, "champ")
    with RetrieverClient(running[name], timeout_s=120, max_retries=1) as client:
        health = client.health()
        assert health.corpus == "champ" and health.n_docs == 89
        target = corpus.doc_ids[3]
        single = client.search(corpus.text_of(target), k=5)
        assert len(single.doc_ids) == len(single.scores) == len(single.texts) == 5
        assert single.scores == sorted(single.scores, reverse=True)
        if name == "bm25":
            assert single.doc_ids[0] == target  # its own text is the best lexical match
        batch = client.search_batch([corpus.text_of(target), "prime numbers and divisibility"], k=5)
        assert [r.doc_ids for r in batch][0] == single.doc_ids
        assert all(len(r.doc_ids) == 5 and set(r.doc_ids) <= set(corpus.doc_ids) for r in batch)


@pytest.mark.parametrize("name", SERVERS)
def test_bad_inputs_are_rejected_and_the_server_stays_up(running: dict[str, str], name: str) -> None:
    url = running[name]
    bad = [
        httpx.get(f"{url}/search", params={"query": "", "k": 3}, timeout=30),
        httpx.get(f"{url}/search", params={"query": "primes", "k": 0}, timeout=30),
        httpx.get(f"{url}/search", params={"query": "primes", "k": "many"}, timeout=30),
        httpx.get(f"{url}/search", params={"query": "y" * 60_000}, timeout=30),
        httpx.post(f"{url}/search", content=b"{oops", headers={"content-type": "application/json"}, timeout=30),
        httpx.post(f"{url}/search", json={"queries": []}, timeout=30),
    ]
    assert [r.status_code for r in bad] == [422, 422, 422, 413, 422, 422]
    assert httpx.get(f"{url}/health", timeout=30).status_code == 200
    with RetrieverClient(url, max_retries=3) as client, pytest.raises(RetrieverServiceError) as info:
        client.search("", k=3)
    assert info.value.status_code == 422 and info.value.attempts == 1  # a 4xx is not retried


def _hostile_requests(url: str) -> list[tuple[str, httpx.Request, int]]:
    """(label, request, expected status): every row is input a client must not get a 5xx or a 200 for."""
    post = lambda body, **kw: httpx.Request("POST", f"{url}/search", content=body, headers={"content-type": "application/json", **kw})  # noqa: E731
    get = lambda **params: httpx.Request("GET", f"{url}/search", params=params)  # noqa: E731
    rows: list[tuple[str, httpx.Request, int]] = []
    for literal in ("NaN", "Infinity", "-Infinity", "1e309", "-1e309"):
        rows += [
            (f"k {literal}", post(f'{{"queries": ["primes"], "k": {literal}}}'.encode()), 422),
            (f"query {literal}", post(f'{{"queries": [{literal}]}}'.encode()), 422),
            (f"include_texts {literal}", post(f'{{"queries": ["primes"], "include_texts": {literal}}}'.encode()), 422),
        ]
    for label, k in (("string", '"3"'), ("bool", "true"), ("float", "3.5"), ("null", "null"), ("list", "[3]"),
                     ("zero", "0"), ("negative", "-1"), ("huge", "1000001"), ("object", '{"k": 3}')):
        rows.append((f"k {label}", post(f'{{"queries": ["primes"], "k": {k}}}'.encode()), 422))
    for label, value in (("string", '"no"'), ("int", "0"), ("null", "null")):
        rows.append((f"include_texts {label}", post(f'{{"queries": ["primes"], "include_texts": {value}}}'.encode()), 422))
    for label, body in (
        ("lone surrogate", b'{"queries": ["\\ud800"]}'), ("lone low surrogate", b'{"queries": ["a\\udfff b"]}'),
        ("empty list", b'{"queries": []}'), ("empty query", b'{"queries": [""]}'), ("blank query", b'{"queries": ["   "]}'),
        ("number query", b'{"queries": [3]}'), ("nested list", b'{"queries": [["a"]]}'), ("object query", b'{"queries": [{}]}'),
        ("queries string", b'{"queries": "primes"}'), ("queries null", b'{"queries": null}'), ("no queries", b'{"k": 3}'),
        ("extra field", b'{"queries": ["a"], "debug": true}'), ("truncated json", b'{"queries": ["a"'),
        ("not json", b"queries=a"), ("json array", b'["a"]'), ("json string", b'"a"'), ("empty body", b""),
        ("invalid utf-8", b'{"queries": ["\xff\xfe"]}'), ("excluded not lists", b'{"queries": ["a"], "excluded_ids": "t2"}'),
        ("excluded wrong count", b'{"queries": ["a", "b", "c"], "excluded_ids": [[], []]}'),
        ("excluded surrogate", b'{"queries": ["a"], "excluded_ids": [["\\ud800"]]}'),
        ("excluded numbers", b'{"queries": ["a"], "excluded_ids": [[1, 2]]}'),
    ):
        rows.append((label, post(body), 422))
    rows += [
        ("long query", post(json.dumps({"queries": ["y" * 50_001]}).encode()), 413),
        ("batch too large", post(json.dumps({"queries": ["a"] * 257}).encode()), 413),
        ("budget", post(json.dumps({"queries": ["word " * 9_000] * 30}).encode()), 413),
        ("body too large", post(b'{"queries": ["' + b"a" * 4_100_000 + b'"]}'), 413),
        ("GET empty query", get(query="", k=3), 422),
        ("GET blank query", get(query="  ", k=3), 422),
        ("GET k zero", get(query="primes", k=0), 422),
        ("GET k words", get(query="primes", k="many"), 422),
        ("GET k float", get(query="primes", k="2.5"), 422),
        ("GET k too large", get(query="primes", k=100_000), 422),
        ("GET no query", get(k=3), 422),
        ("GET long query", get(query="y" * 50_001), 413),
        ("GET k NaN", get(query="primes", k="NaN"), 422),
        ("GET k inf", get(query="primes", k="inf"), 422),
        ("PUT search", httpx.Request("PUT", f"{url}/search", json={"queries": ["a"]}), 405),
        ("DELETE health", httpx.Request("DELETE", f"{url}/health"), 405),
        ("POST health", httpx.Request("POST", f"{url}/health"), 405),
        ("unknown path", httpx.Request("GET", f"{url}/admin"), 404),
        ("docs off", httpx.Request("GET", f"{url}/docs"), 404),
        ("openapi off", httpx.Request("GET", f"{url}/openapi.json"), 404),
    ]
    return rows


@pytest.mark.parametrize("name", ["bm25", "rader"])
def test_hostile_input_table_gets_4xx_never_5xx_and_the_server_stays_healthy(running: dict[str, str], name: str) -> None:
    url = running[name]
    rows = _hostile_requests(url)
    assert len(rows) >= 60
    wrong = []
    with httpx.Client(timeout=60) as http:
        for label, request, expected in rows:
            response = http.send(request)
            if response.status_code != expected:
                wrong.append((label, response.status_code, response.text[:200]))
            if response.status_code == 422:
                detail = response.json()["detail"]
                assert isinstance(detail, list) and all({"loc", "msg", "type"} <= set(d) for d in detail), label
                assert len(response.content) < 5_000, label  # inputs are never echoed
            if response.status_code == 405:
                assert response.headers.get("allow"), label
            assert http.get(f"{url}/health").status_code == 200, f"unhealthy after {label}"
    assert wrong == []
    head = httpx.head(f"{url}/health", timeout=30)
    assert head.status_code == 200
    health = httpx.get(f"{url}/health", timeout=30).json()
    assert "/" not in json.dumps(health["details"])  # no filesystem paths
    assert health["instance"].startswith(f"{name}-")


def test_up_refuses_a_taken_port_and_names_it(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        env = {**os.environ, "SERVER_RUN_DIR": str(tmp_path), "RADER_ENV_FILE": str(tmp_path / "no.env")}
        up = subprocess.run(["bash", str(REPO_ROOT / "servers/up.sh"), "--timeout", "60", f"bm25=champ,{port}"],
                            env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert up.returncode != 0
    assert f"port {port} on 127.0.0.1 is already taken" in up.stderr
    assert f"pid={os.getpid()}" in up.stderr or "owner unknown" in up.stderr
    assert not (tmp_path / "bm25.pid").exists()
