"""In-process transformers backend on the real SmolLM2-135M-Instruct: sampling, stop strings, seeds,
token counts and concurrent requests (short generations, well under a minute on 2 CPU cores)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from models.llm.client import LLMClient, LLMClientConfig, SamplingParams
from models.llm.factory import build_llm_client

COUNTING = [{"role": "user", "content": "List the numbers from 1 to 10, separated by commas."}]


@pytest.fixture(scope="module")
def smollm2_client(smollm2_dir: Path) -> Iterator[LLMClient]:
    # One intra-op thread: on a shared 2-core machine torch's spinning OpenMP threads slow
    # generation about tenfold when other processes hold the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    client = build_llm_client(LLMClientConfig(backend="transformers", model=str(smollm2_dir), max_concurrency=4))
    yield client
    client.close()
    torch.set_num_threads(threads)


@pytest.mark.timeout(300)
def test_sampling_with_stop_string_and_seed_is_reproducible(smollm2_client: LLMClient) -> None:
    params = SamplingParams(max_tokens=16, temperature=0.8, top_p=0.95, top_k=40, stop=(",",), n=3, seed=7)
    first = smollm2_client.chat(COUNTING, params)
    assert len(first.texts) == 3 and all(isinstance(text, str) for text in first.texts)
    assert not any("," in text for text in first.texts)
    assert "stop" in first.finish_reasons  # a counting list reaches a comma within 16 tokens
    assert first.prompt_tokens > 0 and first.completion_tokens > 0
    assert smollm2_client.chat(COUNTING, params) == first


@pytest.mark.timeout(300)
def test_greedy_completion_counts_tokens_and_reports_length(smollm2_client: LLMClient) -> None:
    before = smollm2_client.usage.as_dict()
    done = smollm2_client.complete("The capital of France is", SamplingParams(max_tokens=4, temperature=0.0, n=2))
    assert done.texts[0] == done.texts[1] and done.texts[0].strip()
    assert done.finish_reasons == ["length", "length"]
    assert done.completion_tokens == 8 and done.prompt_tokens == 5
    after = smollm2_client.usage.as_dict()
    assert after["requests"] - before["requests"] == 1 and after["samples"] - before["samples"] == 2
    assert after["completion_tokens"] - before["completion_tokens"] == 8


@pytest.mark.timeout(300)
@pytest.mark.asyncio
async def test_concurrent_conversations_come_back_in_order(smollm2_client: LLMClient) -> None:
    # Each conversation is longer than the one before, so prompt_tokens must increase in order.
    conversations = [[{"role": "user", "content": "Say hello" + " please" * i + "."}] for i in range(4)]
    params = SamplingParams(max_tokens=4, temperature=0.0)
    gathered = await smollm2_client.agather_chat(conversations, params)
    assert len(gathered) == 4
    prompt_tokens = [done.prompt_tokens for done in gathered]
    assert prompt_tokens == sorted(set(prompt_tokens))
    # Greedy decoding: asked alone, a conversation gets the answer it got in the crowd.
    assert (await smollm2_client.achat(conversations[-1], params)).texts == gathered[-1].texts
