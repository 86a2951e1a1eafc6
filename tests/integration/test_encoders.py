"""Encoders on tiny real models, the document-embedding cache, exact search and the vLLM client.

Real models: all-MiniLM-L6-v2 (mean pooling, 384-d) and SmolLM2-135M-Instruct (EOS pooling, the
RaDeR architecture in miniature). Each is loaded once per module; option variants share the loaded
weights through ``TransformersEncoder.with_options``. The vLLM client is tested against an
``httpx.MockTransport`` server; a real vLLM embedding server test starts ``servers/embedding_server.sh`` (about two minutes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from models.retrieval.corpus import Corpus
from models.retrieval.dense_search import DenseIndex, faiss_available, to_run
from models.retrieval.embedding_cache import build_or_load_doc_embeddings, cache_dir, load_doc_embeddings
from models.retrieval.encoder_flags import EncoderFlags, add_encoder_arguments, check_encoder_flags
from models.retrieval.encoders import EncoderConfig, EncoderServiceError, TransformersEncoder, build_encoder
from models.retrieval.text_formats import PLAIN, RADER, format_document, format_query
from tests.conftest import REPO_ROOT

DOCS = [
    "Fermat's little theorem: a^p is congruent to a modulo a prime p.",
    "The pigeonhole principle.",
    "Vieta's formulas relate the coefficients of a polynomial to sums and products of its roots.",
    "A graph is bipartite iff it has no odd cycle.",
    "Stars and bars counts the ways to put n identical balls into k boxes.",
    "The triangle inequality: |x + y| <= |x| + |y| for all real numbers x and y.",
    "Bayes' theorem.",
    "The sum of the interior angles of a convex polygon with n sides is (n - 2) * 180 degrees.",
    "Cauchy-Schwarz inequality for inner products.",
    "Euler's totient function counts integers up to n that are coprime to n.",
    "Inclusion-exclusion principle for the size of a union of finite sets.",
    "AM-GM: the arithmetic mean of nonnegative reals is at least their geometric mean.",
    "Chinese remainder theorem.",
    "The Pythagorean theorem relates the sides of a right triangle.",
    "Linearity of expectation holds even for dependent random variables.",
    "Lucas' theorem computes binomial coefficients modulo a prime.",
    "Heron's formula gives the area of a triangle from its three side lengths.",
    "Wilson's theorem: (p - 1)! is congruent to -1 modulo p exactly when p is prime.",
    "De Moivre's formula for powers of complex numbers in polar form.",
    "The handshake lemma: the sum of vertex degrees equals twice the number of edges.",
]
QUERIES = ["How many ways to distribute 10 candies among 3 kids?", "Find 3^100 mod 7.", "Area of a 13-14-15 triangle?"]


def _corpus(name: str = "tiny_math") -> Corpus:
    return Corpus(name=name, doc_ids=[f"C_{i:02d}" for i in range(len(DOCS))], texts=list(DOCS))


def _assert_unit_norm(vectors: np.ndarray) -> None:
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def minilm(minilm_dir: Path) -> TransformersEncoder:
    encoder = build_encoder(EncoderConfig(str(minilm_dir), pooling="mean", text_format=PLAIN, batch_size=8))
    assert isinstance(encoder, TransformersEncoder)
    return encoder


@pytest.fixture(scope="module")
def smollm2(smollm2_dir: Path) -> TransformersEncoder:
    config = EncoderConfig(str(smollm2_dir), pooling="eos", text_format=RADER, batch_size=8, query_max_len=64)
    encoder = build_encoder(config)
    assert isinstance(encoder, TransformersEncoder)
    return encoder


# --- encoders on real models ---------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_mean_pooling_norm_determinism_batch_invariance(minilm: TransformersEncoder) -> None:
    first = minilm.encode_documents(DOCS, show_progress=False)
    assert first.shape == (len(DOCS), 384) and minilm.dim == 384
    _assert_unit_norm(first)
    np.testing.assert_array_equal(first, minilm.encode_documents(DOCS, show_progress=False))
    one_by_one = minilm.with_options(batch_size=1).encode_documents(DOCS, show_progress=False)
    np.testing.assert_allclose(one_by_one, first, atol=1e-5)
    left = minilm.with_options(padding_side="left").encode_documents(DOCS, show_progress=False)
    np.testing.assert_allclose(left, first, atol=1e-5)


@pytest.mark.slow
def test_smollm2_eos_pooling_norm_determinism_batch_and_padding_invariance(smollm2: TransformersEncoder) -> None:
    docs = DOCS[:10]  # lengths 6..24 tokens: batches with real padding
    first = smollm2.encode_documents(docs, show_progress=False)
    assert first.shape == (len(docs), 576)
    _assert_unit_norm(first)
    np.testing.assert_array_equal(first, smollm2.encode_documents(docs, show_progress=False))
    one_by_one = smollm2.with_options(batch_size=1).encode_documents(docs, show_progress=False)
    np.testing.assert_allclose(one_by_one, first, atol=1e-5)
    left = smollm2.with_options(padding_side="left").encode_documents(docs, show_progress=False)
    np.testing.assert_allclose(left, first, atol=1e-5)
    queries = smollm2.encode_queries(QUERIES, task="theoremqa_theorems")
    _assert_unit_norm(queries)
    # The instruction changes the query vectors: it really is part of the input.
    assert not np.allclose(queries, smollm2.encode_queries(QUERIES))


@pytest.mark.slow
def test_smollm2_eos_appended_after_truncation_and_same_ids_as_eos_text(smollm2: TransformersEncoder) -> None:
    tokenizer, fmt = smollm2.tokenizer, smollm2.text_format
    eos_id = tokenizer.eos_token_id
    assert fmt.eos_token == "<|im_end|>" and tokenizer.convert_tokens_to_ids("<|im_end|>") == eos_id
    for text in DOCS[:5]:
        ids = smollm2.token_ids([format_document(text, fmt, with_eos=False)], max_len=None)[0]
        assert ids[-1] == eos_id and ids.count(eos_id) == 1
        # What a vLLM server sees: the formatted string with the EOS text, tokenised by the model's tokenizer.
        assert ids == tokenizer(format_document(text, fmt), add_special_tokens=True)["input_ids"]
    long_query = " ".join(["prime"] * 200)
    ids = smollm2.token_ids([format_query(long_query, fmt, with_eos=False)], max_len=smollm2.config.query_max_len)[0]
    assert len(ids) == 64 and ids[-1] == eos_id  # truncated to 63 tokens, then EOS (Tevatron)
    # EOS pooling reads the EOS position, so a query past the limit still gets a unit vector.
    _assert_unit_norm(smollm2.encode_queries([long_query]))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="append_eos=False"):
        EncoderConfig("m", pooling="eos", text_format=PLAIN)
    with pytest.raises(ValueError, match="choose one of"):
        EncoderConfig("m", pooling="max")
    with pytest.raises(ValueError, match="needs server_url"):
        EncoderConfig("m", pooling="mean", backend="vllm-server")
    config = EncoderConfig("m", pooling="eos", text_format=RADER, doc_max_len=512)
    assert EncoderConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


# --- embedding cache -----------------------------------------------------------------------------


class InjectedFault(RuntimeError):
    """Raised by :class:`FaultInjectingEncoder` to simulate a kill in the middle of a build."""


class FaultInjectingEncoder:
    """Delegates to a real encoder but raises on the ``fail_on_call``-th ``encode_documents`` call."""

    def __init__(self, inner: Any, fail_on_call: int) -> None:
        self.inner = inner
        self.fail_on_call = fail_on_call
        self.calls = 0

    @property
    def dim(self) -> int:
        return self.inner.dim

    def describe(self, side: str = "both") -> dict[str, Any]:
        return self.inner.describe(side)

    def encode_documents(self, texts: Sequence[str], show_progress: bool = True) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise InjectedFault(f"injected failure on encode_documents call {self.calls}")
        return self.inner.encode_documents(texts, show_progress=show_progress)


@pytest.mark.slow
def test_cache_round_trip_gives_identical_rankings(minilm: TransformersEncoder, tmp_path: Path) -> None:
    corpus = _corpus()
    built = build_or_load_doc_embeddings(minilm, corpus, tmp_path, "minilm", shard_size=8, show_progress=False)
    directory = cache_dir(tmp_path, "minilm", corpus.name)
    assert built.path == directory
    assert sorted(p.name for p in directory.iterdir()) == ["embeddings.npy", "ids.json", "meta.json"]
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["dim"] == 384 and meta["n_docs"] == len(DOCS)
    assert meta["corpus_fingerprint"] == corpus.fingerprint() and meta["pooling"] == "mean"
    _assert_unit_norm(built.embeddings)

    counting = FaultInjectingEncoder(minilm, fail_on_call=1)  # any encode call would fail: must load
    loaded = build_or_load_doc_embeddings(counting, corpus, tmp_path, "minilm", show_progress=False)
    assert counting.calls == 0
    np.testing.assert_array_equal(loaded.embeddings, built.embeddings)
    assert loaded.ids == corpus.doc_ids == load_doc_embeddings(directory).ids

    queries = minilm.encode_queries(QUERIES)
    fresh = DenseIndex(minilm.encode_documents(DOCS, show_progress=False), corpus.doc_ids)
    cached = DenseIndex(loaded.embeddings, loaded.ids)
    fresh_ids, fresh_scores = fresh.search(queries, k=5)
    cached_ids, cached_scores = cached.search(queries, k=5)
    assert cached_ids == fresh_ids
    np.testing.assert_allclose(cached_scores, fresh_scores, atol=1e-5)


@pytest.mark.slow
def test_cache_built_with_other_settings_is_refused(minilm: TransformersEncoder, tmp_path: Path) -> None:
    corpus = _corpus()
    build_or_load_doc_embeddings(minilm, corpus, tmp_path, "minilm", show_progress=False)
    other_prefix = minilm.with_options(text_format=dataclasses.replace(PLAIN, doc_prefix="passage: "))
    with pytest.raises(ValueError, match=r"doc_prefix.*Pick another model_name.*or delete"):
        build_or_load_doc_embeddings(other_prefix, corpus, tmp_path, "minilm", show_progress=False)
    with pytest.raises(ValueError, match=r"other settings \(pooling\)"):
        build_or_load_doc_embeddings(
            minilm.with_options(pooling="cls"), corpus, tmp_path, "minilm", show_progress=False
        )
    changed = Corpus(name=corpus.name, doc_ids=corpus.doc_ids, texts=[*DOCS[:-1], "edited"])
    with pytest.raises(ValueError, match="corpus_fingerprint"):
        build_or_load_doc_embeddings(minilm, changed, tmp_path, "minilm", show_progress=False)
    # A query-side change does not touch document vectors, so the cache stays usable.
    other_query = minilm.with_options(text_format=dataclasses.replace(PLAIN, query_prefix="query: "))
    build_or_load_doc_embeddings(other_query, corpus, tmp_path, "minilm", show_progress=False)


@pytest.mark.slow
def test_killed_build_resumes_and_matches_clean_build(minilm: TransformersEncoder, tmp_path: Path) -> None:
    corpus = _corpus()
    faulty = FaultInjectingEncoder(minilm, fail_on_call=2)  # the first shard succeeds, the second "dies"
    with pytest.raises(InjectedFault):
        build_or_load_doc_embeddings(faulty, corpus, tmp_path / "resumed", "minilm", shard_size=6, show_progress=False)
    directory = cache_dir(tmp_path / "resumed", "minilm", corpus.name)
    assert sorted(p.name for p in directory.glob("*.npy")) == ["part-00000.npy"]
    assert json.loads((directory / "meta.json").read_text())["status"] == "building"
    with pytest.raises(ValueError, match="unfinished"):
        load_doc_embeddings(directory)

    # shard_size is taken from the partial build's meta, whatever the rerun asks for.
    counting = FaultInjectingEncoder(minilm, fail_on_call=-1)
    resumed = build_or_load_doc_embeddings(
        counting, corpus, tmp_path / "resumed", "minilm", shard_size=4, show_progress=False
    )
    assert counting.calls == 3  # shards 1..3 of 4
    assert not list(directory.glob("part-*.npy"))
    clean = build_or_load_doc_embeddings(
        minilm, corpus, tmp_path / "clean", "minilm", shard_size=6, show_progress=False
    )
    np.testing.assert_array_equal(resumed.embeddings, clean.embeddings)
    assert resumed.ids == clean.ids


# --- exact search --------------------------------------------------------------------------------


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
def test_faiss_and_numpy_search_agree() -> None:
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((300, 32)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[[5, 17, 42]] + 0.1 * rng.standard_normal((3, 32)).astype(np.float32)
    ids = [f"d{i}" for i in range(len(docs))]
    excluded = [["d5", "N/A"], [], ["d17", "d3", "d4"]]
    by_faiss = DenseIndex(docs, ids, backend="faiss").search(queries, k=10, excluded=excluded)
    by_numpy = DenseIndex(docs, ids, backend="numpy").search(queries, k=10, excluded=excluded)
    assert by_faiss[0] == by_numpy[0]
    np.testing.assert_allclose(by_faiss[1], by_numpy[1], atol=1e-5)
    # Brute force reference, and the excluded ids really are gone.
    sims = queries @ docs.T
    for q, (got, skip) in enumerate(zip(by_numpy[0], excluded, strict=True)):
        expected = [ids[i] for i in np.argsort(-sims[q]) if ids[i] not in skip][:10]
        assert got == expected
    assert by_numpy[0][0][0] != "d5" and by_numpy[0][1][0] == "d17"


@pytest.mark.parametrize(
    "backend", ["numpy", pytest.param("faiss", marks=pytest.mark.skipif(not faiss_available(), reason="no faiss"))]
)
def test_search_k_larger_than_corpus_and_everything_excluded(backend: str) -> None:
    docs = np.eye(4, dtype=np.float32)
    index = DenseIndex(docs, ["a", "b", "c", "d"], backend=backend)
    ids, scores = index.search(np.array([[0.1, 0.9, 0.0, 0.5]], dtype=np.float32), k=10)
    assert ids == [["b", "d", "a", "c"]] and len(scores[0]) == 4
    ids, _ = index.search(np.eye(4, dtype=np.float32)[:1], k=10, excluded=[["a", "b", "c", "d"]])
    assert ids == [[]]
    assert to_run(["q1"], [["b"]], [[0.5]]) == {"q1": {"b": 0.5}}
    with pytest.raises(ValueError, match="query embeddings"):
        index.search(np.zeros((1, 3), dtype=np.float32), k=1)


# --- vLLM server backend against a fake OpenAI embeddings endpoint -------------------------------


TRUNCATED = 0  # a scripted failure: 200 with a body cut off mid-JSON


class FakeEmbeddingsServer:
    """An ``httpx.MockTransport`` handler: deterministic vectors, shuffled ``data``, scripted failures."""

    def __init__(self, dim: int = 6, failures: Sequence[int] = ()) -> None:
        self.dim = dim
        self.failures = list(failures)  # HTTP statuses to return before answering normally
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200)
        body = json.loads(request.content)
        self.requests.append(body)
        if self.failures:
            failure = self.failures.pop(0)
            if failure == TRUNCATED:
                return httpx.Response(200, content=b'{"object": "list", "data": [{"index": 0, "embe')
            return httpx.Response(failure, json={"error": {"message": "scripted failure"}})
        data = [
            {"index": i, "embedding": self.vector(item), "object": "embedding"} for i, item in enumerate(body["input"])
        ]
        data.reverse()  # the client must restore order from "index"
        return httpx.Response(200, json={"object": "list", "data": data, "model": body["model"]})

    def vector(self, item: str | list[int]) -> list[float]:
        seed = sum(map(ord, item)) if isinstance(item, str) else sum(item)
        return np.random.default_rng(seed).standard_normal(self.dim).tolist()


def _vllm_encoder(server: FakeEmbeddingsServer, model: str, **options: Any) -> Any:
    config = EncoderConfig(
        model,
        pooling="eos",
        text_format=RADER,
        backend="vllm-server",
        server_url="http://fake:8001/v1",
        served_model_name="rader",
        batch_size=2,
        backoff_base_s=0.0,
        backoff_cap_s=0.0,
        **options,
    )
    return build_encoder(config, http_client=httpx.Client(transport=httpx.MockTransport(server)))


def test_vllm_client_formats_batches_and_keeps_order(smollm2_dir: Path) -> None:
    server = FakeEmbeddingsServer(dim=6)
    encoder = _vllm_encoder(server, str(smollm2_dir))
    encoder.check_health()
    vectors = encoder.encode_documents(DOCS[:5], show_progress=False)
    assert vectors.shape == (5, 6) and encoder.dim == 6  # width from the response, not assumed
    _assert_unit_norm(vectors)
    sent = [text for body in server.requests for text in body["input"]]
    assert sent == [format_document(d, encoder.text_format) for d in DOCS[:5]]
    assert all(s.startswith("document: ") and s.endswith("<|im_end|>") for s in sent)
    assert [len(body["input"]) for body in server.requests] == [2, 2, 1]
    assert {body["model"] for body in server.requests} == {"rader"}
    expected = np.array([server.vector(s) for s in sent], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    assert encoder.describe() == {**encoder.describe(), "model": str(smollm2_dir), "eos_token": "<|im_end|>"}


def test_vllm_client_truncates_like_transformers_by_sending_token_ids(smollm2_dir: Path) -> None:
    server = FakeEmbeddingsServer()
    encoder = _vllm_encoder(server, str(smollm2_dir), query_max_len=8)
    encoder.encode_queries(["a very long question " * 20, "short"])
    sent = server.requests[0]["input"]
    eos_id = encoder.tokenizer.eos_token_id
    assert all(isinstance(ids, list) and ids[-1] == eos_id for ids in sent)
    assert len(sent[0]) == 8
    assert sent[1] == encoder.tokenizer(format_query("short", encoder.text_format))["input_ids"]


def test_vllm_client_retries_then_gives_up(smollm2_dir: Path) -> None:
    server = FakeEmbeddingsServer(failures=[503, 429])
    encoder = _vllm_encoder(server, str(smollm2_dir), max_retries=2)
    assert encoder.encode_documents(["x"], show_progress=False).shape == (1, 6)
    assert len(server.requests) == 3

    server = FakeEmbeddingsServer(failures=[500] * 10)
    encoder = _vllm_encoder(server, str(smollm2_dir), max_retries=2)
    with pytest.raises(EncoderServiceError, match="last status 500") as info:
        encoder.encode_documents(["x"], show_progress=False)
    assert info.value.status == 500 and "fake:8001" in info.value.url
    assert len(server.requests) == 3  # 1 try + 2 retries, then a typed error

    server = FakeEmbeddingsServer(failures=[400])
    encoder = _vllm_encoder(server, str(smollm2_dir), max_retries=5)
    with pytest.raises(EncoderServiceError, match="last status 400"):
        encoder.encode_documents(["x"], show_progress=False)
    assert len(server.requests) == 1  # a client error is not retried


def test_vllm_client_retries_a_truncated_200_body(smollm2_dir: Path) -> None:
    server = FakeEmbeddingsServer(failures=[TRUNCATED])
    encoder = _vllm_encoder(server, str(smollm2_dir), max_retries=2)
    assert encoder.encode_documents(["x"], show_progress=False).shape == (1, 6)
    assert len(server.requests) == 2

    server = FakeEmbeddingsServer(failures=[TRUNCATED] * 3)
    encoder = _vllm_encoder(server, str(smollm2_dir), max_retries=2)
    with pytest.raises(EncoderServiceError, match=r"model rader: malformed JSON body b'\{\"object\"") as info:
        encoder.encode_documents(["x"], show_progress=False)
    assert info.value.status == 200 and len(server.requests) == 3


class ConcurrencyProbe(FakeEmbeddingsServer):
    """Holds each request until ``expected`` are in flight together (or a timeout), counting the peak."""

    def __init__(self, expected: int) -> None:
        super().__init__(dim=6)
        self.barrier = threading.Barrier(expected, timeout=10)
        self.lock = threading.Lock()
        self.in_flight = self.peak = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            if request.url.path != "/health":
                self.barrier.wait()  # BrokenBarrierError (a failed test) unless `expected` requests overlap
            return super().__call__(request)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_vllm_client_keeps_concurrency_requests_in_flight_in_order(smollm2_dir: Path) -> None:
    texts = [f"document number {i} about primes" for i in range(16)]  # 8 batches of 2
    sequential = _vllm_encoder(FakeEmbeddingsServer(dim=6), str(smollm2_dir), concurrency=1)
    expected = sequential.encode_documents(texts, show_progress=False)
    probe = ConcurrencyProbe(expected=4)
    parallel = _vllm_encoder(probe, str(smollm2_dir), concurrency=4)
    vectors = parallel.encode_documents(texts, show_progress=False)
    assert probe.peak == 4 and len(probe.requests) == 8
    np.testing.assert_array_equal(vectors, expected)  # batch order kept


def test_encoder_concurrency_flag_reaches_the_client_and_is_refused_in_process() -> None:
    parser = argparse.ArgumentParser()
    add_encoder_arguments(parser)
    served = EncoderFlags.from_args(parser.parse_args(
        ["--model_path", "m", "--encoder_backend", "vllm-server", "--encoder_url", "http://h:1", "--encoder_concurrency", "16"]
    ))  # fmt: skip
    assert check_encoder_flags(served) is None and served.encoder_config().concurrency == 16
    assert EncoderFlags(model_path="m").encoder_config().concurrency == EncoderConfig.concurrency
    in_process = EncoderFlags.from_args(parser.parse_args(["--model_path", "m", "--encoder_concurrency", "4"]))
    assert "--encoder_concurrency sets the requests in flight" in (check_encoder_flags(in_process) or "")
    zero = dataclasses.replace(served, encoder_concurrency=0)
    assert check_encoder_flags(zero) == "--encoder_concurrency must be >= 1, got 0"


def test_encoder_compile_flag_reaches_the_config_and_is_refused_with_a_server() -> None:
    parser = argparse.ArgumentParser()
    add_encoder_arguments(parser)
    flags = EncoderFlags.from_args(parser.parse_args(["--model_path", "m", "--encoder_compile"]))
    assert check_encoder_flags(flags) is None and flags.encoder_config().compile is True
    assert EncoderFlags(model_path="m").encoder_config().compile is False
    served = dataclasses.replace(flags, encoder_backend="vllm-server", encoder_url="http://h:1")
    assert "--encoder_compile compiles the in-process model" in (check_encoder_flags(served) or "")
    with pytest.raises(ValueError, match="compile"):
        EncoderConfig("m", pooling="mean", compile=True, backend="vllm-server", server_url="http://h:1")


def test_vllm_client_without_tokenizer_needs_explicit_eos(tmp_path: Path) -> None:
    server = FakeEmbeddingsServer()
    with pytest.raises(ValueError, match="set text_format.eos_token"):
        _vllm_encoder(server, str(tmp_path / "no-model"))
    config = EncoderConfig(
        "remote-model",
        pooling="eos",
        text_format=dataclasses.replace(RADER, eos_token="</s>"),
        backend="vllm-server",
        server_url="http://fake:8001",
    )
    encoder = build_encoder(config, http_client=httpx.Client(transport=httpx.MockTransport(server)))
    encoder.encode_queries(["q"])
    assert server.requests[-1]["input"] == ["query: q</s>"]


# --- optional: a real vLLM CPU server agrees with the transformers path --------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def vllm_server(smollm2_dir: Path, tmp_path: Path) -> Iterator[str]:
    """A real vLLM embedding server (servers/embedding_server.sh) started and stopped via up.sh/down.sh."""
    port = _free_port()
    env = {
        **os.environ,
        "SERVER_RUN_DIR": str(tmp_path),
        "RADER_ENV_FILE": str(tmp_path / "no.env"),
        "EMBEDDING_SERVED_NAME": "smollm2",
        "EMBEDDING_MAX_MODEL_LEN": "512",
    }
    up = subprocess.run(
        ["bash", str(REPO_ROOT / "servers/up.sh"), "--timeout", "600", f"embedding={smollm2_dir},{port}"],
        env=env, capture_output=True, text=True,
    )
    if up.returncode != 0:
        pytest.fail(f"servers/up.sh failed ({up.returncode}):\n{up.stderr[-4000:]}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run(["bash", str(REPO_ROOT / "servers/down.sh"), "--run-dir", str(tmp_path)], env=env, check=True)


@pytest.mark.slow
def test_vllm_server_matches_transformers(vllm_server: str, smollm2: TransformersEncoder, smollm2_dir: Path) -> None:
    config = EncoderConfig(
        str(smollm2_dir),
        pooling="eos",
        text_format=RADER,
        backend="vllm-server",
        server_url=vllm_server,
        served_model_name="smollm2",
        query_max_len=64,
        timeout_s=120,
    )
    with build_encoder(config) as remote:
        remote.check_health()
        # vLLM's CPU kernels round differently (elementwise gaps ~1e-3), so compare directions.
        docs = np.sum(
            remote.encode_documents(DOCS[:6], show_progress=False)
            * smollm2.encode_documents(DOCS[:6], show_progress=False),
            axis=1,
        )
        assert docs.min() > 0.999, docs
        long_query = " ".join(["prime"] * 200)  # truncated to query_max_len: sent as token ids
        queries = [QUERIES[0], long_query]
        cosines = np.sum(
            remote.encode_queries(queries, task="theoremqa_theorems")
            * smollm2.encode_queries(queries, task="theoremqa_theorems"),
            axis=1,
        )
        assert cosines.min() > 0.999, cosines
        assert remote.describe() == smollm2.describe()


def test_minilm_truncates_where_sentence_transformers_does(minilm: TransformersEncoder, minilm_dir: Path) -> None:
    """The folder's max_seq_length (256) applies, not the tokenizer's 512: 400-word documents encode alike."""
    from sentence_transformers import SentenceTransformer

    rng = np.random.default_rng(0)
    words = ["theorem", "prime", "integer", "divides", "sum", "product", "triangle", "angle", "proof", "lemma"]
    docs = [" ".join(rng.choice(words, size=400)) for _ in range(3)]
    assert all(len(ids) > 300 for ids in minilm.tokenizer(docs)["input_ids"])  # longer than 256 tokens
    reference = SentenceTransformer(str(minilm_dir), device="cpu").encode(docs, normalize_embeddings=True)
    ours = minilm.encode_documents(docs, show_progress=False)
    assert np.min(np.sum(reference * ours, axis=1)) >= 0.9999
    assert minilm.describe("document")["model_max_len"] == 256
    longer = minilm.with_options(doc_max_len=512).encode_documents(docs, show_progress=False)
    assert np.max(np.sum(reference * longer, axis=1)) < 0.9999  # a flag still overrides the model's limit


@pytest.mark.slow
def test_compiled_minilm_gives_sentence_transformers_vectors(minilm_dir: Path) -> None:
    """torch.compile'd batches (padded and unpadded) and the eager one-row batch all match the reference."""
    from sentence_transformers import SentenceTransformer

    rng = np.random.default_rng(1)
    words = ["theorem", "prime", "integer", "divides", "sum", "product", "triangle", "angle", "proof", "lemma"]
    docs = [" ".join(rng.choice(words, size=n)) for n in (400, 400, 300, 300, 30, 5, 120, 60, 2)]
    config = EncoderConfig(str(minilm_dir), pooling="mean", text_format=PLAIN, batch_size=2, compile=True)
    encoder = build_encoder(config)
    assert isinstance(encoder, TransformersEncoder) and encoder._compiled is not None
    # Longest first in batches of 2: two at 256 tokens (unpadded), two padded ones, then [2] alone (eager).
    ours = encoder.encode_documents(docs, show_progress=False)
    reference = SentenceTransformer(str(minilm_dir), device="cpu").encode(docs, normalize_embeddings=True)
    assert np.min(np.sum(reference * ours, axis=1)) >= 0.9999
    np.testing.assert_array_equal(ours, encoder.encode_documents(docs, show_progress=False))
    with pytest.raises(ValueError, match="compile"):
        encoder.with_options(compile=False)
