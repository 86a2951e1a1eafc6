"""The ``published`` LLM reranking style (spec evaluation.md §5.3): the two-character parser on a fixture of
replies, the split-specific zero-shot prompts, and the completion requests with the published sampling.

Requests go to :class:`tests.rerank_fakes.ScriptedRerankFake`, which reads the document back from the
published prompt layouts and answers on ``/v1/completions``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from models.llm.client import LLMClientConfig
from models.llm.factory import build_llm_client
from models.reranking.llm import RERANK_STYLES, LLMReranker, LLMRerankerConfig, rerank_style
from models.reranking.published import MARKER, PUBLISHED, parse_published_score, prompt_family
from models.reranking.style import ParsedScore
from tests.rerank_fakes import ScriptedRerankFake

# Model outputs as the published reranker would have read them: the two characters after the last marker.
REPLIES = [
    ("Relevance score: 4.", ParsedScore(0.8, 4.0, "ok")),
    ("Relevance score: 0.", ParsedScore(0.0, 0.0, "ok")),
    ("Relevance score:5", ParsedScore(1.0, 5.0, "ok")),
    (" Relevance score: 2", ParsedScore(0.4, 2.0, "ok")),
    # extra text before and after
    ("The passage uses the same theorem.\nRelevance score: 3.", ParsedScore(0.6, 3.0, "ok")),
    ("Relevance score: 4. It applies the same method as the query.", ParsedScore(0.8, 4.0, "ok")),
    # several markers: the last one counts
    ("Relevance score: 1. On reflection, Relevance score: 5.", ParsedScore(1.0, 5.0, "ok")),
    ("Relevance score: 5\nRelevance score: **2**", ParsedScore(None, None, "unreadable")),
    # garbage after the marker: the failure score
    ("Relevance score: **4**", ParsedScore(None, None, "unreadable")),
    ("**Relevance score:** 4", ParsedScore(None, None, "unreadable")),
    ("Relevance score: high", ParsedScore(None, None, "unreadable")),
    ("Relevance score:", ParsedScore(None, None, "unreadable")),
    # no marker at all (garbage, empty, another casing): 0, as published
    ("I cannot judge this document.", ParsedScore(0.0, None, "no_score")),
    ("", ParsedScore(0.0, None, "no_score")),
    ("relevance score: 4", ParsedScore(0.0, None, "no_score")),
    ("4", ParsedScore(0.0, None, "no_score")),
    # out of range: the number read stays, as published (and only two characters are read)
    ("Relevance score: 7.", ParsedScore(1.4, 7.0, "out_of_range")),
    ("Relevance score:12", ParsedScore(2.4, 12.0, "out_of_range")),
    ("Relevance score:-1", ParsedScore(-0.2, -1.0, "out_of_range")),
    ("Relevance score: 10.", ParsedScore(0.2, 1.0, "ok")),
]


def client_for(base_url: str):
    config = dict(backend="openai-compatible", model="fake-model", base_url=base_url, api_key="EMPTY",
                  timeout_s=10, max_retries=0, initial_backoff_s=0.0, max_backoff_s=0.0, max_concurrency=4)  # fmt: skip
    return build_llm_client(LLMClientConfig(**config))


@pytest.mark.parametrize(("reply", "expected"), REPLIES)
def test_two_character_parser(reply: str, expected: ParsedScore) -> None:
    assert parse_published_score(reply) == expected


def test_failures_score_minus_one_and_a_missing_marker_zero() -> None:
    client = client_for("http://127.0.0.1:9/v1")  # judge() sends nothing
    try:
        reranker = LLMReranker(client, LLMRerankerConfig.for_style("published"), task="biology")
        judged = [reranker.judge(reply) for reply in ("Relevance score: **4**", "no marker", "Relevance score: 3")]
        failed = reranker.failed(ConnectionError("refused"))
    finally:
        client.close()
    assert [(j.score, j.status) for j in judged] == [(-1.0, "unreadable"), (0.0, "no_score"), (0.6, "ok")]
    assert (failed.score, failed.status) == (-1.0, "error")
    assert PUBLISHED.score_of("unreadable", -1.0, -0.5) == -0.5  # a later --unparsable_score rescoring cached pairs
    assert PUBLISHED.score_of("no_score", 0.0, -0.5) == 0.0 and PUBLISHED.score_of("out_of_range", 1.4, -0.5) == 1.4


def test_style_defaults_and_explicit_values_win() -> None:
    published = LLMRerankerConfig.for_style("published")
    assert (published.temperature, published.top_p, published.max_tokens, published.unparsable_score) == (
        0.6, 0.9, 32, -1.0
    )  # fmt: skip
    assert LLMRerankerConfig.for_style("published", temperature=0.0, top_p=None).temperature == 0.0
    assert LLMRerankerConfig.for_style("ours") == LLMRerankerConfig()
    assert sorted(RERANK_STYLES) == ["ours", "published"]
    with pytest.raises(ValueError, match="unknown rerank style 'qwen'.*ours"):
        rerank_style("qwen")


# ---------------------------------------------------------------------------------------------- prompts


def render(task: str, query: str = "Q {x}", document: str = "D {y}") -> str:
    template = PUBLISHED.load_template(PUBLISHED.prompt_path(task))
    text = PUBLISHED.request(template, task, query, document)
    assert isinstance(text, str)  # raw completion text, no chat messages
    return text


def test_split_specific_zero_shot_prompts() -> None:
    general, leetcode = render("biology"), render("leetcode")
    assert "<start_query>\nQ {x}\n<end_query>" in general and "<start_document>\nD {y}\n<end_document>" in general
    assert "Passage:\nD {y}" in leetcode and "data structures or algorithms" in leetcode
    assert "<start_query>" not in leetcode and general != leetcode
    for text in (general, leetcode):
        assert text.index("Q {x}") < text.index("D {y}")  # query first, then document
        assert text.rstrip().endswith('Answer only in the form "Relevance score: X." and write nothing else.')
        assert text.count(MARKER) == 1  # zero-shot: no worked example answers
        assert "0 means it is completely irrelevant" in text and "5 means it is highly relevant" in text
    # Family per split; the theorems prompt keeps the reference's stray leading quote.
    assert [prompt_family(t) for t in ("aops", "theoremqa_questions", "theoremqa_theorems", "pony", "economics")] == [
        "aops", "theoremqa", "theoremqa", "pony", "general"
    ]  # fmt: skip
    assert render("theoremqa_theorems") == '"' + render("theoremqa_questions")
    assert "Pony programming language" in render("pony") and "same class of functions" in render("aops")


# ---------------------------------------------------------------------------------------------- requests


def test_completion_requests_with_the_published_sampling() -> None:
    script = {"alpha": " Relevance score: 5.", "beta": "Relevance score: **2**", "gamma": "no idea", "delta": None}
    with ScriptedRerankFake(lambda doc: script[doc]) as server:
        client = client_for(server.base_url)
        try:
            reranker = LLMReranker(client, LLMRerankerConfig.for_style("published"), task="leetcode")
            pairs = [("q1", "alpha"), ("q1", "beta"), ("q2", "gamma"), ("q2", "delta")]
            judgements = reranker.score_pairs(pairs)
        finally:
            client.close()
        requests = list(server.requests)
    assert [(j.score, j.status) for j in judgements] == [(1.0, "ok"), (-1.0, "unreadable"), (0.0, "no_score"),
                                                          (-1.0, "error")]  # fmt: skip
    assert len(requests) == 4 and all(r.path.endswith("/completions") and "chat" not in r.path for r in requests)
    for request in requests:
        body = request.body
        assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (0.6, 0.9, 32, 0)
        assert "Passage:\n" in body["prompt"] and "messages" not in body
    assert reranker.describe() == {"style": "published", "prompt": reranker.template.identity(), "family": "leetcode"}


def test_a_published_prompt_file_must_be_plain_text(tmp_path: Path) -> None:
    chatty = tmp_path / "chatty.txt"
    chatty.write_text("### system\nYou judge.\n### user\n{query} {document}\n")
    with pytest.raises(ValueError, match="only a '### user' section"):
        PUBLISHED.load_template(chatty)
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("### user\n{criterion} {query} {document}\n")
    with pytest.raises(ValueError, match="placeholders"):
        PUBLISHED.load_template(wrong)
