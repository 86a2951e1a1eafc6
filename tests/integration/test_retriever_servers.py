"""BM25, RaDeR-style and RepLLaMA-style retriever servers as real processes on loopback,
started and stopped through servers/up.sh and servers/down.sh (SmolLM2 as the dense model)."""

from __future__ import annotations

import os
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
