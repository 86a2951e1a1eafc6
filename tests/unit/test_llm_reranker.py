"""LLM reranker: reply parsing, the paper's 0.5/0.5 mixing by hand, the prompt, and failures.

The requests go to fake OpenAI-compatible servers on loopback: :class:`tests.rerank_fakes.ScriptedRerankFake`
(replies scripted per document) and the stock :class:`tests.fakes.FakeGeneratorServer`'s garbage echo and
HTTP 500 modes.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from models.llm.client import LLMClientConfig
from models.llm.factory import build_llm_client
from models.llm.prompt_templates import load_prompt
from models.reranking.llm import (
    PROMPT_PATH,
    PROMPT_PLACEHOLDERS,
    LLMReranker,
    LLMRerankerConfig,
    ParsedScore,
    combine_scores,
    criterion_for,
    parse_relevance_score,
    rank_by,
)
from tests.fakes import FakeGeneratorServer
from tests.rerank_fakes import ScriptedRerankFake


def client_for(server: FakeGeneratorServer, **overrides: Any):
    config = dict(backend="openai-compatible", model="fake-model", base_url=server.base_url, api_key="EMPTY",
                  timeout_s=10, max_retries=0, initial_backoff_s=0.0, max_backoff_s=0.0, max_concurrency=4)  # fmt: skip
    return build_llm_client(LLMClientConfig(**{**config, **overrides}))


# ---------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Relevance score: 4", ParsedScore(0.8, 4.0, "ok")),
        ("Relevance score: 0", ParsedScore(0.0, 0.0, "ok")),
        ("Relevance score: 5.", ParsedScore(1.0, 5.0, "ok")),
        ("**Relevance Score:** 3", ParsedScore(0.6, 3.0, "ok")),
        ("relevance score = `2`", ParsedScore(0.4, 2.0, "ok")),
        ("Relevance score: 2.5", ParsedScore(0.6, 2.5, "ok")),  # half up, not Python's round-half-even
        ("Relevance score: 3.4", ParsedScore(0.6, 3.4, "ok")),
        ("Relevance score:4.9", ParsedScore(1.0, 4.9, "ok")),
        ("Relevance score: 3/5", ParsedScore(0.6, 3.0, "ok")),
        ("Relevance score: 8/10", ParsedScore(0.8, 4.0, "ok")),
        ("Relevance score: 4 out of 5", ParsedScore(0.8, 4.0, "ok")),
        ("4", ParsedScore(0.8, 4.0, "ok")),
        ("**1**", ParsedScore(0.2, 1.0, "ok")),
        (
            "The passage helps a lot.\nRelevance score: 1\nOn reflection, Relevance score: 5",
            ParsedScore(1.0, 5.0, "ok"),
        ),
        ("<think>Relevance score: 1</think>Relevance score: 2", ParsedScore(0.4, 2.0, "ok")),
        ("Relevance score: 2. It mentions the theorem.", ParsedScore(0.4, 2.0, "ok")),
        ("Relevance score: 7", ParsedScore(None, 7.0, "out_of_range")),
        ("Relevance score: -1", ParsedScore(None, -1.0, "out_of_range")),
        ("Relevance score: 12/10", ParsedScore(None, 6.0, "out_of_range")),
        ("Relevance score: 3/0", ParsedScore(None, None, "out_of_range")),
        ("garbage", ParsedScore(None, None, "no_score")),
        ("", ParsedScore(None, None, "no_score")),
        ("I would say 3", ParsedScore(None, None, "no_score")),  # a number in prose is not a score
        ("Score: 3", ParsedScore(None, None, "no_score")),
        ("Relevance score: high", ParsedScore(None, None, "no_score")),
    ],
)
def test_parse_relevance_score(reply: str, expected: ParsedScore) -> None:
    assert parse_relevance_score(reply) == expected


def test_parsed_scores_are_exact_steps_of_one_fifth() -> None:
    values = {parse_relevance_score(f"Relevance score: {n / 10}").score for n in range(51)}
    assert values == {0.0, 0.2, 0.4, 0.6, 0.8, 1.0}


# ---------------------------------------------------------------------------------------------- mixing


def test_combine_is_half_rerank_half_raw_first_stage_by_hand() -> None:
    first_stage = {"c": 0.9, "a": 0.7, "b": 0.65, "d": 0.1}  # raw cosine, best first
    rerank = {"c": 0.4, "a": 0.8, "b": 0.8, "d": 1.0}
    combined = combine_scores(rerank, first_stage)
    # a: .5*.8 + .5*.7 = .75; b: .4 + .325 = .725; c: .2 + .45 = .65; d: .5 + .05 = .55
    assert list(combined) == ["a", "b", "c", "d"]
    assert [round(v, 10) for v in combined.values()] == [0.75, 0.725, 0.65, 0.55]
    # No normalisation: z-scoring the first stage would change the scores (spec §4, pitfall §10.13).
    assert combined["a"] == pytest.approx(0.5 * 0.8 + 0.5 * 0.7)


def test_combine_weights_and_ties_keep_first_stage_order() -> None:
    first_stage = {"x": 0.5, "y": 0.5, "z": 0.5}
    assert list(combine_scores({"z": 0.4, "y": 0.4, "x": 0.4}, first_stage)) == ["x", "y", "z"]
    only_rerank = combine_scores({"x": 0.2, "y": 0.6, "z": 0.6}, first_stage, rerank_weight=1.0)
    assert only_rerank == {"y": 0.6, "z": 0.6, "x": 0.2} and list(only_rerank) == ["y", "z", "x"]
    assert combine_scores({"x": 1.0}, {"x": 3.0}, rerank_weight=0.0) == {"x": 3.0}
    with pytest.raises(ValueError, match="rerank_weight"):
        combine_scores({"x": 1.0}, {"x": 1.0}, rerank_weight=1.5)
    with pytest.raises(ValueError, match="no first-stage score"):
        combine_scores({"w": 1.0}, {"x": 1.0})


def test_rank_by_breaks_ties_by_the_given_order() -> None:
    assert list(rank_by({"a": 0.2, "b": 0.8, "c": 0.2, "d": 0.8}, ["d", "c", "b", "a"])) == ["d", "b", "c", "a"]


# ---------------------------------------------------------------------------------------------- prompt


def test_prompt_file_has_exactly_the_three_placeholders_and_renders_braces_safely() -> None:
    template = load_prompt(PROMPT_PATH, placeholders=PROMPT_PLACEHOLDERS)
    assert template.placeholders == PROMPT_PLACEHOLDERS
    assert [a for _, a in template.examples] == ["Relevance score: 4", "Relevance score: 0"]
    messages = template.render(criterion=criterion_for("champ"), query="Find $\\{x\\}$", document="f(x) = {x}")
    assert messages[0]["role"] == "system" and "Relevance score: N" in messages[0]["content"]
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user", "assistant", "user"]
    assert "Find $\\{x\\}$" in messages[-1]["content"] and "f(x) = {x}" in messages[-1]["content"]
    assert "states a theorem" in messages[-1]["content"]


def test_criteria_follow_the_task_family() -> None:
    assert criterion_for("aops") == criterion_for("theoremqa_questions") != criterion_for("theoremqa_theorems")
    assert criterion_for("champ") == criterion_for("theoremqa_theorems")
    assert "coding problem" in criterion_for("leetcode") and "Pony" in criterion_for("pony")
    assert criterion_for("biology") == criterion_for("earth_science") == criterion_for(None)


def test_document_truncation_in_the_prompt() -> None:
    with ScriptedRerankFake(lambda doc: "Relevance score: 1") as server:
        client = client_for(server)
        try:
            reranker = LLMReranker(client, LLMRerankerConfig(max_doc_chars=5), task="biology")
            assert "Document:\nabcde\n" in reranker.request("q", "abcdefghij")[-1]["content"]
        finally:
            client.close()


# ---------------------------------------------------------------------------------------------- requests


def test_scores_requests_and_sampling_parameters() -> None:
    script = {"alpha": "Relevance score: 5", "beta": "**Relevance score:** 2", "gamma": "no idea"}
    with ScriptedRerankFake(lambda doc: script[doc]) as server:
        client = client_for(server)
        try:
            reranker = LLMReranker(client, LLMRerankerConfig(unparsable_score=0.1), task="champ")
            judgements = reranker.score_pairs([("q1", "alpha"), ("q1", "beta"), ("q2", "gamma")])
        finally:
            client.close()
        bodies = [r.body for r in server.requests]
    assert [(j.score, j.status, j.raw) for j in judgements] == [
        (1.0, "ok", 5.0),
        (0.4, "ok", 2.0),
        (0.1, "no_score", None),
    ]
    assert judgements[2].reply == "no idea"
    assert len(bodies) == 3
    for body in bodies:
        assert body["temperature"] == 0.0 and body["seed"] == 0 and body["max_tokens"] == 32 and body["n"] == 1


def test_garbage_replies_from_the_stock_fake_are_counted_as_unparsable() -> None:
    with FakeGeneratorServer("ok") as server:  # replies "reply 0 to: <the prompt>", never a score
        client = client_for(server)
        try:
            judgements = LLMReranker(client, task="aops").score_pairs([("q", f"doc {i}") for i in range(5)])
        finally:
            client.close()
    assert [(j.score, j.status) for j in judgements] == [(0.0, "no_score")] * 5
    assert all(j.reply and j.reply.startswith("reply 0 to:") for j in judgements)


def test_failed_requests_are_recorded_not_raised() -> None:
    with FakeGeneratorServer("error500") as server:
        client = client_for(server)
        try:
            reranker = LLMReranker(client, LLMRerankerConfig(unparsable_score=-0.2))
            judgements = asyncio.run(reranker.ascore_pairs([("q", "a"), ("q", "b")]))
        finally:
            client.close()
    assert [(j.score, j.status) for j in judgements] == [(-0.2, "error"), (-0.2, "error")]
    assert all("LLMServiceError" in str(j.error) for j in judgements)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        LLMRerankerConfig(max_tokens=0)
    with pytest.raises(ValueError, match="unparsable_score"):
        LLMRerankerConfig(unparsable_score=math.nan)
