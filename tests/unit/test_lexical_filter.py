"""The q_lexical round-trip filter (spec training.md §4.4) with BRIGHT's real BM25 (Lucene analyser in a JVM)
on a 26-document corpus: a query is kept only if BM25 ranks its own theorem in the top 20."""

from __future__ import annotations

import random

import pytest

from models.retrieval.corpus import Corpus
from models.retrieval.retrievers import BM25Retriever
from run_src.query_synthesis.assembly import Assembler, AssemblyConfig
from run_src.query_synthesis.lexical import bm25_ranked_ids, lexical_retrieval
from run_src.query_synthesis.records import QueryRecord

HERON = "heron"
# 25 short filler documents dense in "triangle area", and one theorem that mentions "triangle" once.
WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu", "nu")
WORDS += ("xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega", "aleph")
DOCS = {f"f{i:02d}": f"triangle area triangle area rule {word}" for i, word in enumerate(WORDS)}
DOCS[HERON] = (
    "Heron's formula: a triangle with side lengths a, b, c and semiperimeter s has an area equal to the square "
    "root of s(s-a)(s-b)(s-c), a formula credited to Hero of Alexandria."
)


@pytest.fixture(scope="module")
def bm25() -> BM25Retriever:
    corpus = Corpus("lexical_mini", list(DOCS), list(DOCS.values()))
    return BM25Retriever.from_corpus(corpus)


def test_round_trip_ranks_with_real_bm25(bm25: BM25Retriever) -> None:
    queries = [
        "What does Heron's formula say about the semiperimeter?",  # the theorem's own terms: rank 1
        "triangle area",  # every filler beats the theorem: rank 26 (> 20)
        "banana smoothie recipe",  # shares no term with any document: not retrieved at all
    ]

    def fake_dense(batch: list[str], k: int) -> list[list[str]]:  # a fake dense retriever: fixed ids
        return [[HERON, "f03", "f04"][:k] for _ in batch]

    found = lexical_retrieval(queries, [HERON] * 3, bm25, fake_dense, depth=50, dense_k=2, quiet=True)
    assert [f.bm25_rank for f in found] == [1, 26, None]
    assert found[0].bm25_ids[0] == HERON and len(found[1].bm25_ids) == 26
    assert found[2].bm25_ids == []  # zero-score documents are not "retrieved", even to pad the list
    assert found[0].dense_ids == [HERON, "f03", "f04"]  # dense_k + 1 fetched; the positive is removed later
    # BM25 pads short result lists with zero-score documents in corpus order: those must not count.
    padded = bm25.search_batch(["banana smoothie recipe"], 5)[0]
    assert len(padded) == 5 and all(score == 0 for _, score in padded)
    assert bm25_ranked_ids(bm25, ["banana smoothie recipe"], 5) == [[]]

    records = [
        QueryRecord(
            query_id=f"lexical:mini:{HERON}:{j}",
            query_type="lexical",
            status="ok",
            query=query,
            positive_id=HERON,
            source="MATH",
            corpus={"source": "mem", "split": "mini"},
            relevant_ids=[HERON],
            bm25_rank=item.bm25_rank,
            bm25_ids=item.bm25_ids,
            dense_ids=item.dense_ids,
        )
        for j, (query, item) in enumerate(zip(queries, found, strict=True))
    ]
    config = AssemblyConfig(query_types=("lexical",), lexical_bm25_rank_start=2, lexical_bm25_rank_end=26)
    result = Assembler(config, {("mem", "mini"): bm25.corpus}).assemble(records)
    assert [row["query_id"] for row in result.rows] == [f"lexical:mini:{HERON}:0"]
    assert {d.query_id: d.detail for d in result.drops} == {
        f"lexical:mini:{HERON}:1": "BM25 rank 26; needs <= 20",
        f"lexical:mini:{HERON}:2": "BM25 not retrieved; needs <= 20",
    }
    negatives = [p["docid"] for p in result.rows[0]["negative_passages"]]
    # 10 sampled from BM25 ranks 2-26, then the dense f03/f04 unless already drawn; never the positive
    assert HERON not in negatives and set(negatives[:10]) <= set(DOCS) - {HERON}
    assert negatives[10:] == [d for d in ("f03", "f04") if d not in negatives[:10]]
    assert set(negatives) <= set(DOCS) - {HERON}
    with_top_30 = Assembler(
        AssemblyConfig(query_types=("lexical",), lexical_top_k=30), {("mem", "mini"): bm25.corpus}
    ).assemble(records)
    assert len(with_top_30.rows) == 2  # a looser filter keeps the rank-26 query


def test_dense_order_and_seeded_sampling_are_stable(bm25: BM25Retriever) -> None:
    found = lexical_retrieval(["Heron formula triangle"], [HERON], bm25, None, depth=50, quiet=True)[0]
    assert found.bm25_rank == 1 and found.dense_ids == []
    from run_src.query_synthesis.negatives import lexical_negatives

    picks = {
        tuple(
            lexical_negatives(
                found.bm25_ids, [], HERON, random.Random(f"0:{i}"), bm25_rank_start=2, bm25_rank_end=26, num_bm25=3
            )
        )
        for i in range(20)
    }
    assert len(picks) > 1  # different samples per query id
    assert all(len(p) == 3 and HERON not in p for p in picks)


def test_dense_candidates_from_a_retriever_server(bm25: BM25Retriever) -> None:
    """The server path of the dense negatives, against our real retriever app on loopback (BM25 behind it)."""
    import socket
    import threading
    import time

    import uvicorn

    from models.serving.retriever_app import create_app
    from run_src.query_synthesis.lexical import server_dense_search

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(bm25), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "retriever app did not start"
            time.sleep(0.01)
        search = server_dense_search(f"http://127.0.0.1:{sock.getsockname()[1]}")
        queries = ["Heron formula semiperimeter", "triangle area rule beta"]
        expected = [[doc_id for doc_id, _ in hits] for hits in bm25.search_batch(queries, 3)]
        assert search(queries, 3) == expected and expected[0][0] == HERON and expected[1][0] == "f01"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
