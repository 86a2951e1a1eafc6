"""Query prompts and the parsing of LLM replies (spec training.md §4.3–§4.4): format drift is tolerated,
garbage gets a named status instead of becoming a training query."""

from __future__ import annotations

import pytest

from models.retrieval.theorem_text import statement_for_prompt
from run_src.query_synthesis.llm_queries import (
    NO_STEPS,
    QueryChecks,
    QueryPrompts,
    extract_query,
    llmq_fields,
    parse_query_reply,
    theorem_name,
)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Need: the roots.\nQuery: How are roots and coefficients related?", "How are roots and coefficients related?"),
        ('**Query:** "How to bound a sum of squares?"\n\nQuestion: next', "How to bound a sum of squares?"),
        ("### Query\nWhat links the roots\nof a polynomial to its coefficients?\n\nNeed: x", None),
        ("1. Final query: how does it work here?", "how does it work here?"),
        ("Query: first try\nQuery: second and final version", "second and final version"),
        ("Query:\n  What is the area of a triangle?\nNeed: none", "What is the area of a triangle?"),
        ("<think>Query: hidden</think>\nQuery: shown after thinking", "shown after thinking"),
        ("Just one unlabelled line about sums of squares", "Just one unlabelled line about sums of squares"),
        ("Need: a\nsome line\nanother line", None),
        ("Query:", ""),
    ],
)
def test_extract_query_tolerates_format_drift(reply: str, expected: str | None) -> None:
    if reply.startswith("### Query"):
        expected = "What links the roots of a polynomial to its coefficients?"
    assert extract_query(reply) == expected


def test_parse_statuses() -> None:
    prompts = QueryPrompts.load()
    checks = QueryChecks(
        min_words=3,
        max_words=20,
        forbidden=prompts.example_queries("llmq"),
        copy_sources=("What is the smallest prime larger than one hundred and ten?",),
        theorem_name="Fermat's little theorem",
    )
    ok = parse_query_reply("Need: x\nQuery: Which residue does a prime power leave?", checks)
    assert ok.status == "ok" and ok.query == "Which residue does a prime power leave?"
    assert parse_query_reply("", checks).status == "empty_query"
    assert parse_query_reply("Query:   ", checks).status == "empty_query"
    assert parse_query_reply("lorem\nipsum\ndolor", checks).status == "unparsable_llm_output"
    assert parse_query_reply("Query: primes?", checks).status == "query_too_short"
    assert parse_query_reply("Query: " + "word " * 21, checks).status == "query_too_long"
    echo = "Query: How can the sum and the product of the roots of a polynomial be read off from its coefficients?"
    assert parse_query_reply(echo, checks).status == "prompt_echo"  # a few-shot example, verbatim
    copied = "Query: what is the smallest prime larger than one hundred and ten exactly"
    assert parse_query_reply(copied, checks).status == "prompt_echo"  # copies the question
    leak = parse_query_reply("Query: Apply Fermat's Little Theorem to reduce the power", checks)
    assert leak.status == "theorem_name_leak" and leak.query.startswith("Apply")


def test_prompts_load_with_versions_and_render_messages() -> None:
    prompts = QueryPrompts.load()
    assert len(prompts.example_queries("llmq")) == 3 and len(prompts.example_queries("lexical")) == 3
    ids = prompts.identities()
    assert ids["llmq"]["name"] == "q_llmq" and len(ids["llmq"]["version"]) == 12
    fields = llmq_fields("Find x.", [], "A: b \\begin{proof} long proof", max_theorem_chars=100)
    assert fields == {"question": "Find x.", "partial_solution": NO_STEPS, "theorem": "A: b"}
    messages = prompts.llmq.render(**fields)
    assert messages[0]["role"] == "system" and [m["role"] for m in messages[1:3]] == ["user", "assistant"]
    assert messages[-1] == {
        "role": "user",
        "content": "Question: Find x.\nPartial solution: (no steps yet)\nTheorem: A: b",
    }
    lexical = prompts.lexical.render(theorem="Heron's formula: area = sqrt(s(s-a)(s-b)(s-c)) with {braces}")
    assert lexical[-1]["content"].endswith("with {braces}")


def test_theorem_text_and_name() -> None:
    text = "\\section{Sum of Angles of Triangle}\nTags: Triangles\n\n\\begin{theorem}\nThe sum...\n\\begin{proof}\nx"
    assert statement_for_prompt(text) == "\\section{Sum of Angles of Triangle} \\begin{theorem} The sum... \\end{theorem}"
    assert statement_for_prompt("word " * 50, max_chars=22) == "word word word word ..."
    assert theorem_name(text) == "Sum of Angles of Triangle"
    assert theorem_name("Fermat's little theorem: if p is prime ...") == "Fermat's little theorem"
    assert theorem_name("Theorem Name: Square of a Sum\nTheorem Statement: ...") == "Square of a Sum"
    assert theorem_name("Let n be a positive integer: then n! > 0") is None
    assert theorem_name("pigeonhole: n+1 objects in n boxes") is None  # one word: too common to reject on
