"""Turn a finished reasoning tree into the plain-dict records of spec ``specs/mcts.md`` §9.4–§9.7.

Traces are rebuilt from the root→node path on demand instead of being deep-copied into every node.
[FIX]es applied: records carry the dataset's problem id (not a process-local index); non-finite floats
become ``None`` (JSON ``null``, never ``Infinity``); RT entries hold the top-k scores only; QG slots 1–3
hold the parsed preconditions/subject. Writing the dicts to disk is the caller's job.

Example Final Solutions element::

    {"question_id": "math_17", "rollout_id": 4,
     "trace": {"0": {"user_question": "...", "ost_step": {"1": "...", "2": ["... \\\\boxed{7}", 1.0]}}}}

Usage::

    records = final_solution_records(root)
"""

from __future__ import annotations

import math
from typing import Any

from run_src.mcts.actions import RelevanceLabel
from run_src.mcts.nodes import (
    DirectAnswer,
    OstStep,
    QueryGeneration,
    ReasoningNode,
    RephrasedQuestion,
    Retrieval,
    Subquestion,
    collect_solution_nodes,
)

Trace = dict[str, dict[str, Any]]


def json_safe(value: Any) -> Any:
    """Copy ``value`` with every non-finite float replaced by ``None`` so ``json.dumps`` never emits Infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def retrieval_call_key(qg_node: ReasoningNode) -> str:
    """``<problem_id>_<qg_node_id>``: names one retrieval call ([FIX] S10: dataset id, not local index)."""
    return f"{qg_node.context.problem_id}_{qg_node.node_id}"


def _candidate_query_info(payload: QueryGeneration) -> dict[str, dict[str, Any]]:
    return {
        f"query{index}": {
            "candidate_theorem": candidate.query,
            "preconditions_theorem": candidate.preconditions_theorem,
            "preconditions_question": candidate.preconditions_question,
            "subject_candidatethm": candidate.subject,
            "fullquery": candidate.full_output,
        }
        for index, candidate in enumerate(payload.all_candidates, start=1)
    }


def solution_trace(node: ReasoningNode) -> Trace:
    """The trace of the root→``node`` path (spec §9.4): ``{"0": {"user_question", "ost_step", ...}, ...}``."""
    trace: Trace = {"0": {"user_question": node.context.question, "ost_step": {}}}
    current = "0"
    for step in node.path()[1:]:
        payload = step.payload
        entry = trace[current]
        count = step.ost_step_count  # for OST nodes this already includes the node itself
        if isinstance(payload, RephrasedQuestion):
            entry["user_question"] = payload.text
        elif isinstance(payload, OstStep):
            entry["ost_step"][str(count)] = payload.text if payload.value is None else [payload.text, payload.value]
        elif isinstance(payload, QueryGeneration):
            candidate = payload.candidate
            entry["ost_step"][f"{count}_querygeneration"] = [
                candidate.query,
                candidate.preconditions_theorem,
                candidate.preconditions_question,
                candidate.subject,
                _candidate_query_info(payload),
                payload.candidate_index,
            ]
        elif isinstance(payload, Retrieval):
            assert step.parent is not None
            outcome = payload.outcome
            scores = {retrieval_call_key(step.parent): {"query": outcome.query, "scores": dict(outcome.scores)}}
            entry["ost_step"][f"{count}_retrieval"] = [
                payload.theorem.summary,
                scores,
                outcome.retriever_name,
                payload.theorem.theorem_id,
            ]
        elif isinstance(payload, DirectAnswer):
            entry["direct_answer"] = {"text": payload.text, "value": payload.value}
        elif isinstance(payload, Subquestion):
            current = str(step.subquestion_count)
            trace[current] = {
                "subquestion": payload.subquestion,
                "subanswer": {"text": payload.subanswer, "value": payload.value},
                "ost_step": {},
            }
    return json_safe(trace)


def final_solution_records(root: ReasoningNode) -> list[dict[str, Any]]:
    """One record per valid solution node in the tree, depth-first, with the rollout that created it (§9.5)."""
    return [
        {"question_id": root.context.problem_id, "rollout_id": node.created_in_rollout, "trace": solution_trace(node)}
        for node in collect_solution_nodes(root)
    ]


def rollout_solution_records(last_nodes: list[ReasoningNode]) -> list[dict[str, Any]]:
    """One record per rollout ``r``: the trace of the node that rollout ended at (§9.5)."""
    return [
        {"question_id": node.context.problem_id, "rollout_id": rollout_id, "trace": solution_trace(node)}
        for rollout_id, node in enumerate(last_nodes)
    ]


def _qg_nodes_with_outcomes(root: ReasoningNode) -> list[ReasoningNode]:
    found: list[ReasoningNode] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.retrieval_outcome is not None:
            found.append(node)
        stack.extend(reversed(node.children or []))
    return found


def self_reflection_records(root: ReasoningNode, unparsable_as_negative: bool = True) -> list[dict[str, Any]]:
    """The hard-negative log (§6.4.5, §9.6): one record per judged theorem, positives (1) and negatives (0).

    [FIX] S2: each theorem is logged once per retrieval call with its own label (``verdict`` names it).
    A theorem whose verdict could not be read was not labelled relevant, so (paper §4.2) it is logged as a
    negative with ``verdict: "unparsable"``; ``unparsable_as_negative=False`` leaves it out instead. Theorems
    retrieved without self-reflection are never logged: nobody judged them. Each record keeps the statement
    the summarizer saw and the corpus text as retrieved.
    """
    records: list[dict[str, Any]] = []
    logged = {RelevanceLabel.RELEVANT, RelevanceLabel.IRRELEVANT}
    if unparsable_as_negative:
        logged.add(RelevanceLabel.UNPARSABLE)
    for qg_node in _qg_nodes_with_outcomes(root):
        outcome = qg_node.retrieval_outcome
        assert outcome is not None
        ranks = {doc_id: rank for rank, doc_id in enumerate(outcome.deep_scores or outcome.scores, start=1)}
        for theorem in outcome.theorems:
            if theorem.label not in logged:
                continue
            assert theorem.label is not None
            records.append(
                {
                    "question_id": root.context.problem_id,
                    "theorem_id": theorem.theorem_id,
                    "LLM_relevance_label": int(theorem.label is RelevanceLabel.RELEVANT),
                    "LLM_explanation": theorem.reason,
                    "verdict": theorem.label.value,
                    # [FIX] §9.6: link each verdict to the retrieval call (and query) that produced it.
                    "qg_key": retrieval_call_key(qg_node),
                    "query": outcome.query,
                    "rank": ranks.get(theorem.theorem_id),
                    "score": outcome.scores.get(theorem.theorem_id),
                    "summary": theorem.summary,
                    "statement": theorem.statement,
                    "text": theorem.text,
                }
            )
    return json_safe(records)


def retrieval_score_records(root: ReasoningNode) -> list[dict[str, Any]]:
    """One ``{"<problem_id>_<qg_node_id>": {"query", "scores"}}`` record per retrieval call (§9.7), with the
    scores to the configured depth (default 100; the trace keeps the top-k)."""
    return [
        {
            retrieval_call_key(node): {
                "query": node.retrieval_outcome.query,
                "scores": dict(node.retrieval_outcome.deep_scores or node.retrieval_outcome.scores),
            }
        }
        for node in _qg_nodes_with_outcomes(root)
        if node.retrieval_outcome is not None
    ]
