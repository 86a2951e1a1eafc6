"""The ``published`` LLM reranking style: the reranker behind the paper's "+QwenRerank (top-100)" (ReasonIR's
``reranker.py``, spec evaluation.md §5.3), with prompts in our own words and everything else as published.

* Prompt: zero-shot, one per split family (``prompts/rerank_published_<family>.txt``), query then document,
  ending with the demand to answer ``Relevance score: X.`` with X from 0 to 5; sent as raw completion text
  (no chat template), as the reference fed vLLM.
* Sampling: temperature 0.6, top-p 0.9, at most 32 new tokens.
* Parsing: the two characters after the **last** ``Relevance score:``; ``float(...) / 5``. No marker: 0.
  Two characters that are no number (``**4**``, an empty tail): the failure score −1. Whatever number the
  two characters make stays, as published: ``7`` gives 1.4, ``10`` gives 0.2 (only ``" 1"`` is read).
* Failed requests (the reference had none: vLLM ran in-process) also score −1.

Interpolation with the first stage, top-100 and stable ties are shared with the ``ours`` style
(:mod:`models.reranking.llm`).

Usage::

    style = PUBLISHED
    template = style.load_template(style.prompt_path("leetcode"))
    text = style.request(template, "leetcode", query, document)   # a str for /v1/completions
    style.parse(" 4.")                                             # ParsedScore(0.8, 4.0, "ok")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.llm.prompt_templates import PROMPTS_DIR, PromptTemplate
from models.reranking.style import ParsedScore, RerankStyle, SamplingDefaults

MARKER = "Relevance score:"
MAX_SCORE = 5  # the prompt's 0..5 scale; /5 gives the 0-1 scale in steps of 0.2
DIGITS_READ = 2  # REF: the reference read exactly two characters after the marker
MISSING_MARKER_SCORE = 0.0  # REF: a reply without the marker scored 0
FAILURE_SCORE = -1.0  # REF: a marker followed by no number scored -1
# A DEVIATION for the seed only: the reference left vLLM's sampling unseeded, so its scores were not repeatable.
# A fixed per-request seed draws from the same distribution and makes a rerun give the same replies.
SAMPLING = SamplingDefaults(temperature=0.6, top_p=0.9, max_tokens=32, seed=0, unparsable_score=FAILURE_SCORE)

# Split -> prompt family (spec §5.3); every other split (the StackExchange ones) gets "general".
FAMILIES: dict[str, str] = {
    "aops": "aops",
    "theoremqa_questions": "theoremqa",
    "theoremqa_theorems": "theoremqa",
    # DEVIATION: champ is not a BRIGHT split (the reference would give it the general prompt); it pairs
    # problems with the concepts that solve them, as theoremqa_theorems does.
    "champ": "theoremqa",
    "leetcode": "leetcode",
    "pony": "pony",
}
# REF: the reference's theoremqa_theorems prompt differs from its theoremqa_questions one only by a stray
# leading double quote; kept so that the two splits see the same prompt shapes as published.
PREFIXES: dict[str, str] = {"theoremqa_theorems": '"'}


def prompt_family(task: str | None) -> str:
    """The prompt family of ``task``: aops, theoremqa, leetcode, pony, or general."""
    return FAMILIES.get(task or "", "general")


def parse_published_score(reply: str) -> ParsedScore:
    """Read ``reply`` as the published reranker did (see the module docstring)."""
    position = reply.rfind(MARKER)
    if position < 0:
        return ParsedScore(MISSING_MARKER_SCORE, None, "no_score")
    start = position + len(MARKER)
    try:
        value = float(reply[start : start + DIGITS_READ])
    except ValueError:
        return ParsedScore(None, None, "unreadable")
    status = "ok" if 0 <= value <= MAX_SCORE else "out_of_range"
    return ParsedScore(value / MAX_SCORE, value, status)


class PublishedStyle(RerankStyle):
    """Zero-shot split-specific completion prompts, sampled at 0.6 / 0.9, parsed from two characters."""

    name = "published"
    kind = "completion"
    sampling = SAMPLING
    placeholders = frozenset({"query", "document"})
    statuses = ("ok", "no_score", "unreadable", "out_of_range", "error")
    policy_statuses = frozenset({"unreadable", "error"})

    def prompt_path(self, task: str | None) -> Path:
        return PROMPTS_DIR / f"rerank_published_{prompt_family(task)}.txt"

    def load_template(self, path: str | Path) -> PromptTemplate:
        template = super().load_template(path)
        if template.system or template.examples:
            raise ValueError(
                f"{path}: a published-style prompt is sent as raw text and holds only a '### user' section; "
                "found a system or example section"
            )
        return template

    def request(self, template: PromptTemplate, task: str | None, query: str, document: str) -> str:
        filled = template.render(query=query, document=document)[0]["content"]
        return PREFIXES.get(task or "", "") + filled

    def parse(self, reply: str) -> ParsedScore:
        return parse_published_score(reply)

    def describe(self, template: PromptTemplate, task: str | None) -> dict[str, Any]:
        return {**super().describe(template, task), "family": prompt_family(task)}


PUBLISHED = PublishedStyle()
