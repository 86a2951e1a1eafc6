"""The generator path end to end: servers/up.sh starts real vLLM (CPU build) with SmolLM2,
the project's client sends concurrent chat requests with n > 1, servers/down.sh stops it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from models.llm.client import LLMClientConfig, SamplingParams
from models.llm.factory import build_llm_client
from tests.conftest import REPO_ROOT, RunningServer, free_port

pytestmark = pytest.mark.slow


def test_concurrent_chat_with_n_samples_stop_strings_and_usage(generator_server: RunningServer) -> None:
    config = LLMClientConfig(
        backend="openai-compatible", model=generator_server.model, base_url=generator_server.base_url,
        api_key="EMPTY", timeout_s=120, max_retries=2, max_concurrency=8,
    )
    client = build_llm_client(config)
    questions = [f"Count from {i} to {i + 5}, separated by commas." for i in range(6)]
    params = SamplingParams(max_tokens=24, temperature=0.8, top_p=0.95, top_k=40, stop=("\n",), n=3, seed=7)
    try:
        completions = asyncio.run(client.agather_chat([[{"role": "user", "content": q}] for q in questions], params))
    finally:
        client.close()
    assert len(completions) == 6
    for completion in completions:
        assert len(completion.texts) == 3
        assert all(isinstance(t, str) for t in completion.texts)
        assert all("\n" not in t for t in completion.texts)  # the stop string ends and is not returned
        assert completion.prompt_tokens > 0 and completion.completion_tokens > 0
        assert all(reason in {"stop", "length"} for reason in completion.finish_reasons)
    usage = client.usage.as_dict()
    assert usage["requests"] == 6 and usage["samples"] == 18 and usage["failures"] == 0
    assert usage["completion_tokens"] == sum(c.completion_tokens for c in completions)


def test_same_seed_gives_same_samples(generator_server: RunningServer) -> None:
    client = build_llm_client(LLMClientConfig(
        backend="openai-compatible", model=generator_server.model, base_url=generator_server.base_url,
        api_key="EMPTY", timeout_s=120, max_retries=1,
    ))
    params = SamplingParams(max_tokens=16, temperature=1.0, n=2, seed=123)
    messages = [{"role": "user", "content": "Name a prime number and say why it is prime."}]
    try:
        first, second = client.chat(messages, params), client.chat(messages, params)
    finally:
        client.close()
    assert first.texts == second.texts


def test_up_fails_fast_and_cleans_up_when_the_server_dies(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SERVER_RUN_DIR": str(tmp_path), "RADER_ENV_FILE": str(tmp_path / "no.env")}
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "servers/up.sh"), "--timeout", "300", f"generator={tmp_path / 'no-such-model'},{port}"],
        env=env, capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert "failed to become healthy" in result.stderr
    assert time.monotonic() - started < 280  # it noticed the dead process instead of waiting out the timeout
    assert not (tmp_path / "generator.pid").exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
