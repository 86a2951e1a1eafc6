"""Dumps of a search tree: the text dump after each rollout (``--save_tree``; spec ``specs/mcts.md`` §9.8)
and the final tree as JSON, which :mod:`run_src.inspect_run` draws.

Text: one line per node, pre-order, indented four dashes per level: type, node id, Q, N, value and UCT,
then the payload. JSON: one object per node with its parent, kind, visits and values, the query and every
judged candidate of a retrieval call, and whether a solution node's answer is right. Diagnostic only:
no data stage reads either.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from run_src.mcts.nodes import (
    DirectAnswer,
    OstStep,
    QueryGeneration,
    ReasoningNode,
    RephrasedQuestion,
    Retrieval,
    Subquestion,
    UserQuestion,
)
from run_src.mcts.search import MCTSSearcher

_TYPE_CODES = {
    UserQuestion: "U",
    RephrasedQuestion: "RU",
    DirectAnswer: "DA",
    Subquestion: "SQ",
    OstStep: "TS",
    QueryGeneration: "QG",
    Retrieval: "RT",
}


def _payload_text(node: ReasoningNode) -> str:
    payload = node.payload
    if isinstance(payload, UserQuestion):
        return f"User: {payload.text}"
    if isinstance(payload, RephrasedQuestion):
        return f"Reph-User: {payload.text}"
    if isinstance(payload, DirectAnswer):
        return f"Ans: {payload.text}"
    if isinstance(payload, Subquestion):
        return f"Q: {payload.subquestion} A: {payload.subanswer}"
    if isinstance(payload, OstStep):
        return f"OST: {payload.text}"
    if isinstance(payload, QueryGeneration):
        return f"Query: {payload.candidate.query}"
    assert isinstance(payload, Retrieval)
    return f"Retrieved Theorem: [{payload.theorem.theorem_id}] {payload.theorem.summary}"


def _plain_text(node: ReasoningNode) -> str:
    """The payload's own text, without the text dump's label."""
    payload = node.payload
    if isinstance(payload, Subquestion):
        return f"{payload.subquestion} / {payload.subanswer}"
    if isinstance(payload, QueryGeneration):
        return payload.candidate.query
    if isinstance(payload, Retrieval):
        return payload.theorem.summary
    return payload.text


def _fmt(value: float | None) -> str:
    if value is None:
        return "None"
    if math.isinf(value):
        return "inf"
    return f"{value:.2f}"


def render_tree(root: ReasoningNode, searcher: MCTSSearcher, rollout_id: int, gold_answer: str) -> str:
    """The whole tree as text, newlines inside payloads flattened to keep one node per line."""
    lines: list[str] = []

    def visit(node: ReasoningNode) -> None:
        uct = searcher.uct(node.parent, node, rollout_id)
        flag = "(T) " if node.is_valid_solution() else ""
        stats = (
            f"[{flag}{_TYPE_CODES[type(node.payload)]}-{node.node_id}: Q: {_fmt(searcher.q[node])}; "
            f"N: {searcher.n[node]}; V: {_fmt(node.value)}; UCT: {_fmt(uct)}]"
        )
        text = " ".join(_payload_text(node).split())
        lines.append(f"{'-' * (4 * node.depth)}{stats} {text}")
        if node.parent is None:
            lines.append(f"{' ' * len(stats)} Ground truth: {gold_answer}")
        for child in node.children or []:
            visit(child)

    visit(root)
    return "\n".join(lines) + "\n\n" + "=" * 50 + "\n"


TEXT_LIMIT = 400  # characters of a payload kept in the JSON tree


def _short(text: str | None) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 3] + "..."


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) or math.isnan(value) else round(value, 6)


def tree_record(root: ReasoningNode, searcher: MCTSSearcher, is_correct: Callable[[ReasoningNode], bool]) -> dict[str, Any]:
    """The final tree as ``{"nodes": [...]}`` in pre-order; ``is_correct`` grades a solution node's answer."""
    nodes: list[dict[str, Any]] = []

    def visit(node: ReasoningNode) -> None:
        payload = node.payload
        entry: dict[str, Any] = {
            "id": node.node_id,
            "parent": node.parent.node_id if node.parent is not None else None,
            "kind": _TYPE_CODES[type(payload)],
            "depth": node.depth,
            "rollout": node.created_in_rollout,
            "visits": searcher.n[node],
            "q": _finite(searcher.q[node]),
            "value": _finite(node.value),
            "solution": node.is_valid_solution(),
            "text": _short(_plain_text(node)),
        }
        if entry["solution"]:
            entry["correct"] = is_correct(node)
        if isinstance(payload, Retrieval):
            entry["theorem_id"] = payload.theorem.theorem_id
        outcome = node.retrieval_outcome
        if isinstance(payload, QueryGeneration) and outcome is not None:
            ranks = {doc_id: rank for rank, doc_id in enumerate(outcome.scores, start=1)}
            entry["retrieval"] = {
                "query": _short(outcome.query),
                "retriever": outcome.retriever_name,
                "candidates": [
                    {
                        "theorem_id": t.theorem_id,
                        "rank": ranks.get(t.theorem_id),
                        "score": outcome.scores.get(t.theorem_id),
                        "label": t.label.value if t.label is not None else None,
                        "reason": _short(t.reason),
                        "summary": _short(t.summary),
                    }
                    for t in outcome.theorems
                ],
            }
        nodes.append(entry)
        for child in node.children or []:
            visit(child)

    visit(root)
    return {"nodes": nodes}
