"""LLM client: parameter and config validation, retries and failures against fake servers, what is
sent on the wire, concurrency bound, ordering, sync wrappers and usage counters."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from models.llm.backends.retry import RetryPolicy
from models.llm.client import LLMClient, LLMClientConfig, LLMServiceError, SamplingParams, config_from_settings
from models.llm.factory import build_llm_client
from models.settings import Settings
from tests.fakes import BAD_REQUEST_MESSAGE, FakeGeneratorServer

HELLO = [{"role": "user", "content": "hello there"}]
# 2 retries after sleeps of 0.05 and 0.1 s. The timeout is generous so that a busy test machine
# cannot turn a slow answer into an extra attempt; the stall test alone shortens it.
FAST_FAILURE = {"timeout_s": 10.0, "max_retries": 2, "initial_backoff_s": 0.05, "max_backoff_s": 0.2}
STALL_TIMEOUT_S = 0.5


@pytest.fixture
def start_fake() -> Iterator[Callable[..., FakeGeneratorServer]]:
    servers: list[FakeGeneratorServer] = []

    def start(mode: str = "ok", **kwargs: Any) -> FakeGeneratorServer:
        server = FakeGeneratorServer(mode, **kwargs).start()  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def make_client() -> Iterator[Callable[..., LLMClient]]:
    clients: list[LLMClient] = []

    def make(server: FakeGeneratorServer, **overrides: Any) -> LLMClient:
        fields: dict[str, Any] = {
            "backend": "openai-compatible",
            "model": "fake-model",
            "base_url": server.base_url,
            "api_key": "test-key",
            **FAST_FAILURE,
            **overrides,
        }
        client = build_llm_client(LLMClientConfig(**fields))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


# ---------------------------------------------------------------- validation and configuration


@pytest.mark.parametrize(
    "kwargs",
    [{"max_tokens": 0}, {"temperature": -0.1}, {"top_p": 0.0}, {"top_p": 1.5}, {"top_k": 0}, {"n": 0}, {"stop": ("",)}],
)
def test_sampling_params_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SamplingParams(**kwargs)


def test_sampling_params_stop_is_a_tuple_and_not_a_bare_string() -> None:
    assert SamplingParams(stop=["\n", "END"]).stop == ("\n", "END")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not one string"):
        SamplingParams(stop="\n")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backend": "vllm"}, "backend must be one of"),
        ({"model": ""}, "needs a model"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"max_retries": -1}, "max_retries"),
        ({"initial_backoff_s": 2.0, "max_backoff_s": 1.0}, "backoff"),
        ({"max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LLMClientConfig(**{"backend": "openai-compatible", "model": "m", **kwargs})


def test_config_from_settings_fills_each_backend_and_hides_keys() -> None:
    settings = Settings(
        generator_url="http://gen:1/v1",
        generator_api_key="gen-secret",
        generator_model="Qwen/Qwen2.5-7B-Instruct",
        openai_api_key="sk-secret",
        azure_openai_endpoint="https://x.openai.azure.com",
        azure_openai_api_key="az-secret",
        azure_openai_deployment="gpt4o-dep",
    )
    vllm = config_from_settings(settings, "openai-compatible", timeout_s=30.0)
    assert (vllm.base_url, vllm.api_key, vllm.model, vllm.timeout_s) == (
        "http://gen:1/v1",
        "gen-secret",
        "Qwen/Qwen2.5-7B-Instruct",
        30.0,
    )
    hosted = config_from_settings(settings, "openai", model="gpt-4o-mini")
    assert (hosted.base_url, hosted.api_key, hosted.model) == ("https://api.openai.com/v1", "sk-secret", "gpt-4o-mini")
    azure = config_from_settings(settings, "azure")
    assert (azure.base_url, azure.azure_deployment, azure.azure_api_version) == (
        "https://x.openai.azure.com",
        "gpt4o-dep",
        "2024-10-21",
    )
    assert all("secret" not in repr(config) for config in (vllm, hosted, azure))
    with pytest.raises(ValueError, match="needs a model"):
        config_from_settings(settings, "openai")


def test_hosted_backends_require_credentials() -> None:
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        build_llm_client(LLMClientConfig(backend="openai", model="gpt-4o-mini"))
    with pytest.raises(ValueError, match="AZURE_OPENAI_ENDPOINT"):
        build_llm_client(LLMClientConfig(backend="azure", model="dep", api_key="k", azure_api_version="2024-10-21"))


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(timeout_s=1.0, max_retries=6, initial_backoff_s=0.5, max_backoff_s=3.0)
    assert [policy.backoff_s(k) for k in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_service_error_survives_pickling() -> None:
    err = LLMServiceError("boom", "http://h/v1", "m", 3, 500)
    copy = pickle.loads(pickle.dumps(err))
    assert (str(copy), copy.url, copy.model, copy.attempts, copy.status_code) == ("boom", "http://h/v1", "m", 3, 500)


# ---------------------------------------------------------------- failures and retries


@pytest.mark.timeout(30)
def test_stalled_server_times_out_on_every_attempt_then_fails(start_fake, make_client) -> None:
    server = start_fake("stall")
    client = make_client(server, timeout_s=STALL_TIMEOUT_S)
    started = time.monotonic()
    with pytest.raises(LLMServiceError) as caught:
        client.chat(HELLO)
    elapsed = time.monotonic() - started
    assert server.attempts == 3
    # Three timed-out attempts plus two sleeps: 1.65 s, with room for a busy machine.
    assert 3 * STALL_TIMEOUT_S <= elapsed < 5.0
    err = caught.value
    assert (err.attempts, err.status_code, err.url, err.model) == (3, None, server.base_url, "fake-model")
    assert server.base_url in str(err) and "fake-model" in str(err) and "3 attempt" in str(err)
    assert client.usage.as_dict() == {
        "requests": 1,
        "samples": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "retries": 2,
        "failures": 1,
    }


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode, status", [("error500", 500), ("rate_limit", 429)])
def test_transient_http_errors_are_retried_max_retries_times(start_fake, make_client, mode, status, caplog) -> None:
    server = start_fake(mode)
    client = make_client(server)
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="models.llm.backends.retry"), pytest.raises(LLMServiceError) as caught:
        client.chat(HELLO)
    assert time.monotonic() - started < 5.0
    assert server.attempts == 3
    assert caught.value.attempts == 3 and caught.value.status_code == status
    assert f"Error code: {status}" in str(caught.value)
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 2


@pytest.mark.timeout(30)
def test_flaky_server_succeeds_after_two_retries(start_fake, make_client) -> None:
    server = start_fake("flaky")
    client = make_client(server)
    done = client.chat(HELLO, SamplingParams(n=3, max_tokens=5))
    assert server.attempts == 3
    assert done.texts == [f"reply {i} to: hello there" for i in range(3)]
    assert done.finish_reasons == ["stop"] * 3
    assert (done.prompt_tokens, done.completion_tokens, done.model) == (2, 15, "fake-model")
    assert client.usage.as_dict() == {
        "requests": 1,
        "samples": 3,
        "prompt_tokens": 2,
        "completion_tokens": 15,
        "retries": 2,
        "failures": 0,
    }


@pytest.mark.timeout(30)
def test_bad_request_fails_at_once_with_the_server_message(start_fake, make_client) -> None:
    server = start_fake("bad_request")
    client = make_client(server)
    with pytest.raises(LLMServiceError) as caught:
        client.complete("too long a prompt")
    assert server.attempts == 1
    assert caught.value.attempts == 1 and caught.value.status_code == 400
    assert BAD_REQUEST_MESSAGE in str(caught.value)
    assert client.usage.retries == 0 and client.usage.failures == 1


@pytest.mark.timeout(30)
def test_unreachable_server_is_a_service_error(make_client) -> None:
    with FakeGeneratorServer() as server:
        dead = server  # the port is closed once the server stops
    client = make_client(dead, max_retries=1)
    with pytest.raises(LLMServiceError, match="2 attempt"):
        client.chat(HELLO)


# ---------------------------------------------------------------- what is sent


@pytest.mark.timeout(30)
def test_chat_sends_every_sampling_parameter(start_fake, make_client) -> None:
    server = start_fake("ok")
    client = make_client(server)
    params = SamplingParams(max_tokens=7, temperature=0.3, top_p=0.9, top_k=20, stop=("\n", "END"), n=2, seed=11)
    client.chat(HELLO, params)
    (request,) = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer test-key"
    body = request.body
    assert body["model"] == "fake-model" and body["messages"] == HELLO
    assert {k: body[k] for k in ("max_tokens", "temperature", "top_p", "top_k", "stop", "n", "seed")} == {
        "max_tokens": 7,
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 20,
        "stop": ["\n", "END"],
        "n": 2,
        "seed": 11,
    }


@pytest.mark.timeout(30)
def test_completion_uses_the_completions_endpoint_and_leaves_out_unset_fields(start_fake, make_client) -> None:
    server = start_fake("ok")
    client = make_client(server)
    done = client.complete("Step 1:", SamplingParams(max_tokens=4, temperature=0.0))
    (request,) = server.requests
    assert request.path == "/v1/completions"
    assert request.body["prompt"] == "Step 1:" and request.body["max_tokens"] == 4
    assert request.body["temperature"] == 0.0
    assert not {"top_k", "seed", "stop"} & request.body.keys()
    assert done.texts == ["continuation 0 of: Step 1:"] and done.finish_reasons == ["length"]


@pytest.mark.timeout(30)
def test_openai_backend_refuses_top_k_before_sending(start_fake, make_client) -> None:
    server = start_fake("ok")
    client = make_client(server, backend="openai")
    with pytest.raises(ValueError, match="does not support top_k"):
        client.chat(HELLO, SamplingParams(top_k=40))
    assert server.attempts == 0
    client.chat(HELLO, SamplingParams(max_tokens=9))
    assert server.requests[0].body["max_completion_tokens"] == 9


@pytest.mark.timeout(30)
def test_azure_backend_routes_by_deployment(start_fake, make_client) -> None:
    server = start_fake("ok")
    client = make_client(
        server, backend="azure", base_url=server.root_url, azure_api_version="2024-10-21", azure_deployment="dep-1"
    )
    client.chat(HELLO)
    (request,) = server.requests
    assert request.path == "/openai/deployments/dep-1/chat/completions"
    assert request.query == {"api-version": "2024-10-21"}
    assert request.headers["api-key"] == "test-key"


# ---------------------------------------------------------------- concurrency, order, sync use


@pytest.mark.timeout(30)
@pytest.mark.asyncio
async def test_gather_keeps_order_within_the_concurrency_bound(start_fake, make_client) -> None:
    server = start_fake("ok", delay_s=0.1)
    client = make_client(server, max_concurrency=3)
    conversations = [[{"role": "user", "content": f"question {i}"}] for i in range(10)]
    done = await client.agather_chat(conversations, SamplingParams(max_tokens=3))
    assert [c.texts for c in done] == [[f"reply 0 to: question {i}"] for i in range(10)]
    assert server.max_in_flight == 3
    assert client.usage.requests == 10 and client.usage.samples == 10


@pytest.mark.timeout(30)
@pytest.mark.asyncio
async def test_gather_raises_the_first_failure(start_fake, make_client) -> None:
    server = start_fake("bad_request")
    client = make_client(server)
    with pytest.raises(LLMServiceError, match="maximum context length"):
        await client.agather_chat([HELLO, HELLO])


@pytest.mark.timeout(30)
def test_sync_calls_from_many_threads_share_one_client(start_fake, make_client) -> None:
    server = start_fake("ok", delay_s=0.05)
    client = make_client(server, max_concurrency=2)
    results: dict[int, str] = {}

    def worker(i: int) -> None:
        results[i] = client.chat([{"role": "user", "content": f"t{i}"}]).texts[0]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert results == {i: f"reply 0 to: t{i}" for i in range(6)}
    assert server.max_in_flight <= 2
    assert client.chat(HELLO).texts == ["reply 0 to: hello there"]  # the loop outlives earlier calls


@pytest.mark.timeout(30)
def test_async_api_works_from_successive_event_loops(start_fake, make_client) -> None:
    server = start_fake("ok")
    client = make_client(server)
    for _ in range(2):
        assert asyncio.run(client.achat(HELLO)).texts == ["reply 0 to: hello there"]
        assert asyncio.run(client.acomplete("x")).texts == ["continuation 0 of: x"]


@pytest.mark.timeout(30)
def test_closed_client_refuses_requests(start_fake, make_client) -> None:
    client = make_client(start_fake("ok"))
    client.close()
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.chat(HELLO)


def test_chat_rejects_malformed_messages(start_fake, make_client) -> None:
    client = make_client(start_fake("ok"))
    with pytest.raises(ValueError, match="empty"):
        client.chat([])
    with pytest.raises(ValueError, match="'role' and 'content'"):
        client.chat([{"content": "no role"}])


@pytest.mark.timeout(30)
def test_truncated_200_bodies_are_retried_then_named(start_fake, make_client) -> None:
    """A 200 whose JSON stops half-way is transient: retried, and after the cap the error names the body."""
    flaky = start_fake("truncated_flaky")
    done = make_client(flaky).chat(HELLO, SamplingParams(n=2, max_tokens=5))
    assert flaky.attempts == 3 and done.texts == [f"reply {i} to: hello there" for i in range(2)]
    broken = start_fake("truncated")
    with pytest.raises(LLMServiceError) as caught:
        make_client(broken).chat(HELLO)
    assert broken.attempts == 3
    message = str(caught.value)
    assert broken.base_url in message and "fake-model" in message and "malformed 2xx body" in message
    assert "'{\"id\": \"fake-1\"" in message  # the body's first bytes
