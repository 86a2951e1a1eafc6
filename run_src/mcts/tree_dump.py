"""Text dumps of a search tree after a rollout (``--save_tree``; spec ``specs/mcts.md`` §9.8).

One line per node, pre-order, indented four dashes per level: type, node id, Q, N, value and UCT, then
the payload. Diagnostic only: nothing downstream parses it.
"""

from __future__ import annotations

import math

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
