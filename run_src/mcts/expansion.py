"""The expansion table (spec ``specs/mcts.md`` §5.3): which actions follow which node, one function per action.

Each action function asks the injected generator for raw results and turns them into child payloads;
:func:`plan_children` applies the table, including the fallbacks (OST → DA only if nothing else was
produced; QG → OST + DA if no retrieved theorem survived). Nodes are built by
:meth:`~run_src.mcts.nodes.ReasoningNode.find_children`, so this module creates no nodes itself and
knows nodes only through :class:`~run_src.mcts.tree_types.ExpandableNode`.

Usage::

    payloads = plan_children(node)  # e.g. [OstStep, OstStep, QueryGeneration, ...] for an OST node
"""

from __future__ import annotations

from collections import Counter
from typing import cast

from run_src.mcts.actions import RelevanceLabel, RStarActionGenerator, SelfConsistencyGenerator
from run_src.mcts.tree_types import (
    ActionName,
    DirectAnswer,
    ExpandableNode,
    NodeKind,
    OstStep,
    Payload,
    QueryGeneration,
    RephrasedQuestion,
    Retrieval,
    Subquestion,
    reach_terminal_ost_step,
    reach_terminal_subquestion,
    reward_for_grade,
)


def one_step_thoughts(node: ExpandableNode) -> list[Payload]:
    """A1: ``num_a1_steps`` OST children; terminal steps are valued at creation (spec §6.2, §5.7)."""
    config = node.config
    if not config.enabled(ActionName.OST):
        return []
    generator = node.context.generator
    texts = generator.generate_ost_steps(node, config.num_a1_steps)
    terminal = [reach_terminal_ost_step(text) for text in texts]
    if config.reward == "self_consistency":
        keys = [
            cast(SelfConsistencyGenerator, generator).answer_key(t) if end else None
            for t, end in zip(texts, terminal, strict=True)
        ]
        # rStar: the share of this A1 call's outputs that end with the same answer (itself included).
        values = [None if not end else (keys.count(key) / len(texts) if key is not None else 0.0)
                  for end, key in zip(terminal, keys, strict=True)]  # fmt: skip
    else:
        values = [
            reward_for_grade(generator.grade_answer(node, text), config.wrong_answer_reward) if end else None
            for text, end in zip(texts, terminal, strict=True)
        ]
    return [OstStep(text=text, value=value) for text, value in zip(texts, values, strict=True)]


def direct_answer(node: ExpandableNode) -> list[Payload]:
    """A2/CRS: one DA child from ``num_direct_answer_samples`` completions (spec §5.7).

    Gold reward: the best completion's reward ([FIX] S1). Self-consistency: the majority answer's share
    of the samples, with the first completion of the majority as the node's text.
    """
    config = node.config
    if not config.enabled(ActionName.DIRECT_ANSWER):
        return []
    generator = node.context.generator
    completions = generator.generate_direct_answers(node, config.num_direct_answer_samples)
    if not completions:
        return []
    if config.reward == "self_consistency":
        keys = [cast(SelfConsistencyGenerator, generator).answer_key(c.text) for c in completions]
        votes = Counter(key for key in keys if key is not None)
        if not votes:
            return [DirectAnswer(text=completions[0].text, value=0.0, sample_rewards=(0.0,) * len(completions))]
        winner = max(votes, key=lambda key: (votes[key], -keys.index(key)))  # most votes, then first seen
        share = votes[winner] / len(completions)
        rewards = tuple(share if key == winner else 0.0 for key in keys)
        return [DirectAnswer(text=completions[keys.index(winner)].text, value=share, sample_rewards=rewards)]
    rewards = tuple(reward_for_grade(c.grade, config.wrong_answer_reward) for c in completions)
    best = max(rewards)
    text = completions[rewards.index(best)].text  # first completion attaining the maximum
    value = rewards[-1] if config.reference_da_value else best  # REF S1 only on request
    return [DirectAnswer(text=text, value=value, sample_rewards=rewards)]


def query_generation(node: ExpandableNode) -> list[Payload]:
    """QG: one child per parsed candidate theorem, while the path holds fewer than ``qg_limit`` QG steps."""
    config = node.config
    if not config.enabled(ActionName.QUERY_GENERATION) or node.qg_step_count >= config.qg_limit:
        return []
    candidates = tuple(node.context.generator.generate_queries(node, config.num_query_generations))
    return [
        QueryGeneration(candidate=candidate, candidate_index=index, all_candidates=candidates)
        for index, candidate in enumerate(candidates, start=1)
    ]


def retrieval(node: ExpandableNode) -> list[Payload]:
    """RT: retrieve for a QG node's query; keep, in rank order, theorems not yet on the path and judged relevant.

    The full outcome (every label, accepted or not) is stored on the QG node for the hard-negative log.
    Without self-reflection (``label is None``) every new theorem is kept. [FIX] S2/S3: each candidate is
    judged on its own label; an unparsable label rejects.
    """
    assert node.kind is NodeKind.QUERY_GENERATION, "retrieval runs only below a QG node"
    query = cast(QueryGeneration, node.payload).candidate.query
    outcome = node.context.generator.retrieve(node, query)
    node.retrieval_outcome = outcome
    seen = set(node.theorem_ids)
    children: list[Payload] = []
    for theorem in outcome.theorems:
        if theorem.theorem_id in seen:
            continue  # de-duplication against the path (spec §6.4.3), no back-fill (S12)
        if theorem.label is not None and theorem.label is not RelevanceLabel.RELEVANT:
            continue
        seen.add(theorem.theorem_id)
        children.append(Retrieval(theorem=theorem, outcome=outcome))
    return children


def subquestions(node: ExpandableNode) -> list[Payload]:
    """rStar A3 (off by default): ``num_subquestions`` SQ children."""
    config = node.config
    if not config.enabled(ActionName.SUBQUESTION):
        return []
    generator = cast(RStarActionGenerator, node.context.generator)
    return [
        Subquestion(
            subquestion=step.subquestion,
            subanswer=step.subanswer,
            value=step.value,
            is_terminal=reach_terminal_subquestion(step.subquestion, node.question),
        )
        for step in generator.generate_subquestions(node, config.num_subquestions)
    ]


def rephrase(node: ExpandableNode) -> list[Payload]:
    """rStar A5 (off by default): one RU child holding the rephrased question."""
    if not node.config.enabled(ActionName.REPHRASE):
        return []
    return [RephrasedQuestion(text=cast(RStarActionGenerator, node.context.generator).rephrase_question(node))]


def plan_children(node: ExpandableNode) -> list[Payload]:
    """Child payloads of a non-terminal node, in the order of spec §5.3 (gold-documents mode not supported)."""
    kind = node.kind
    if kind is NodeKind.USER_QUESTION:
        return [
            *one_step_thoughts(node),
            *direct_answer(node),
            *subquestions(node),
            *rephrase(node),
            *query_generation(node),
        ]
    if kind in (NodeKind.REPHRASED_USER_QUESTION, NodeKind.SUBQUESTION):
        # rStar's A4 (re-answer a sub-question) below SQ is not implemented.
        return [*one_step_thoughts(node), *direct_answer(node), *subquestions(node), *query_generation(node)]
    if kind is NodeKind.OST:
        children = [*one_step_thoughts(node), *query_generation(node)]
        return children or direct_answer(node)
    if kind is NodeKind.QUERY_GENERATION:
        return retrieval(node) or [*one_step_thoughts(node), *direct_answer(node)]
    if kind is NodeKind.RETRIEVAL:
        return [*one_step_thoughts(node), *direct_answer(node)]
    return []  # DIRECT_ANSWER is always terminal
