"""Render the root→node path as the "partial solution" text the prompts show (spec ``specs/mcts.md`` §6.0).

Two renderings, as in the reference: the step prompts (OST, CRS) see OST steps and retrieved-theorem
summaries joined with spaces; the retrieval-side prompts (QG, self-reflection) see the same content but
each item as a sentence. Query-generation entries are never shown. A sub-question node (rStar A3)
counts as one step: its answer without the closing "The answer is ..." (rStar's
``concat_subqs_subas_as_ost_steps``, §6.0). The A3 prompts themselves see the sub-questions and answers
so far as numbered pairs. An empty path renders as a fixed placeholder so the prompt's label line is
never left dangling.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from run_src.mcts.nodes import OstStep, Retrieval, Subquestion

if TYPE_CHECKING:
    from run_src.mcts.nodes import ReasoningNode

NO_STEPS = "(no steps yet)"
NO_SUBQUESTIONS = "(none yet)"
THEOREM_CONNECTOR = "A relevant theorem can be used to continue the solution"
_ANSWER_IS = re.compile(r"\s*the answer is\b", re.IGNORECASE)


def subanswer_step(subanswer: str) -> str:
    """A sub-answer as one solution step: the text before its last "The answer is" (all of it if that part
    is empty), on one line."""
    matches = list(_ANSWER_IS.finditer(subanswer))
    reasoning = subanswer[: matches[-1].start()] if matches else subanswer
    return " ".join(reasoning.split()) or " ".join(subanswer.split())


def _items(node: ReasoningNode) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    for step in node.path()[1:]:
        if isinstance(step.payload, OstStep):
            items.append(("step", step.payload.text.strip()))
        elif isinstance(step.payload, Subquestion):
            items.append(("step", subanswer_step(step.payload.subanswer)))
        elif isinstance(step.payload, Retrieval):
            items.append(("theorem", step.payload.theorem.summary.strip()))
    return items


def subquestions_text(node: ReasoningNode) -> str:
    """For the A3 prompts: ``Sub-question k: ...`` / ``Answer k: ...`` lines for every SQ node on the path."""
    pairs = [step.payload for step in node.path()[1:] if isinstance(step.payload, Subquestion)]
    lines = [
        f"Sub-question {k}: {pair.subquestion.strip()}\nAnswer {k}: {pair.subanswer.strip()}"
        for k, pair in enumerate(pairs, start=1)
    ]
    return "\n".join(lines) or NO_SUBQUESTIONS


def steps_text(node: ReasoningNode) -> str:
    """For A1/A2 prompts: ``step step Connector: summary step ...`` (``concat_ost_steps`` / ``make_hint``)."""
    parts = [text if kind == "step" else f"{THEOREM_CONNECTOR}: {text}" for kind, text in _items(node)]
    return " ".join(part for part in parts if part) or NO_STEPS


def retrieval_context_text(node: ReasoningNode) -> str:
    """For QG and self-reflection prompts: every item as its own sentence (``concat_ost_steps_querygeneration``)."""
    parts: list[str] = []
    for kind, text in _items(node):
        if not text:
            continue
        sentence = text if kind == "step" else f"{THEOREM_CONNECTOR} - {text}"
        parts.append(sentence if sentence.endswith((".", "!", "?", "$")) else sentence + ".")
    return " ".join(parts) or NO_STEPS
