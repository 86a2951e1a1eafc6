"""Render the root→node path as the "partial solution" text the prompts show (spec ``specs/mcts.md`` §6.0).

Two renderings, as in the reference: the step prompts (OST, CRS) see OST steps and retrieved-theorem
summaries joined with spaces; the retrieval-side prompts (QG, self-reflection) see the same content but
each item as a sentence. Query-generation entries are never shown. An empty path renders as a fixed
placeholder so the prompt's label line is never left dangling.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from run_src.mcts.nodes import OstStep, Retrieval

if TYPE_CHECKING:
    from run_src.mcts.nodes import ReasoningNode

NO_STEPS = "(no steps yet)"
THEOREM_CONNECTOR = "A relevant theorem can be used to continue the solution"


def _items(node: ReasoningNode) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    for step in node.path()[1:]:
        if isinstance(step.payload, OstStep):
            items.append(("step", step.payload.text.strip()))
        elif isinstance(step.payload, Retrieval):
            items.append(("theorem", step.payload.theorem.summary.strip()))
    return items


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
