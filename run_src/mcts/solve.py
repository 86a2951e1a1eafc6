"""One problem, start to finish: build the tree, run the rollouts, grade, and collect every record to write.

Kept apart from the runner so a test, a notebook or another scheduler can search one problem without the
CLI, threads or files.

Usage::

    outputs = solve_problem(problem, resources, SearchSettings(num_rollouts=4))
    write_problem_outputs(run_dir, outputs)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from models.answers.checking import grade
from run_src.mcts.llm_actions import ActionResources, LLMActions
from run_src.mcts.nodes import (
    DirectAnswer,
    ExpansionConfig,
    OstStep,
    ReasoningNode,
    Subquestion,
    collect_solution_nodes,
)
from run_src.mcts.problems import Problem
from run_src.mcts.run_outputs import ProblemOutputs
from run_src.mcts.search import MCTSSearcher, WeightScheduler, problem_rng
from run_src.mcts.trace import (
    final_solution_records,
    retrieval_score_records,
    rollout_solution_records,
    self_reflection_records,
)
from run_src.mcts.tree_dump import render_tree, tree_record


@dataclass(frozen=True)
class SearchSettings:
    """The search loop's settings (spec §5.4–§5.5, §8.3); expansion rules live in :class:`ExpansionConfig`."""

    num_rollouts: int = 16
    exploration_weight: float = 2.0
    weight_scheduler: WeightScheduler = "const"
    discount: float = 1.0  # --mcts_discount_factor: 1.0 = undiscounted, as the paper
    seed: int = 42
    save_tree: bool = False
    expansion: ExpansionConfig = field(default_factory=ExpansionConfig)
    # Paper §4.2: a theorem not labelled relevant is a negative, so an unreadable verdict is logged as one.
    unparsable_verdicts_as_negatives: bool = True


def solution_text(node: ReasoningNode) -> str:
    """The text whose last box is the node's answer: the DA continuation, the terminal OST step, or the
    answer of a final sub-question (rStar A3)."""
    payload = node.payload
    if isinstance(payload, DirectAnswer | OstStep):
        return payload.text
    if isinstance(payload, Subquestion):
        return payload.subanswer
    return ""


def solve_problem(
    problem: Problem, resources: ActionResources, settings: SearchSettings, provenance: dict[str, object] | None = None
) -> ProblemOutputs:
    """Search ``problem`` with ``settings.num_rollouts`` rollouts and return all its records.

    ``provenance`` (generator model, prompt versions, ...) is copied into the answer sheet, with the action
    counts and the LLM-judge verdicts. Nothing written depends on timing, so the same seeds give the same bytes.
    """
    started = time.monotonic()
    actions = LLMActions(resources, problem.source_id, problem.gold_answer)
    root = ReasoningNode.new_root(problem.problem, problem.source_id, actions, settings.expansion)
    searcher = MCTSSearcher(
        settings.exploration_weight,
        settings.weight_scheduler,
        settings.num_rollouts,
        discount=settings.discount,
        rng=problem_rng(settings.seed, problem.source_id),
    )
    last_nodes: list[ReasoningNode] = []
    trees: list[str] = []
    for rollout_id in range(settings.num_rollouts):
        last = searcher.do_rollout(root, rollout_id)
        assert isinstance(last, ReasoningNode)
        last_nodes.append(last)
        if settings.save_tree:
            trees.append(render_tree(root, searcher, rollout_id, problem.gold_answer))

    actions.counts.log_tally()
    final_solutions = final_solution_records(root)
    # Correctness as the grader sees it now (stored values can be 0.2-style partial rewards).
    verdicts: dict[int, bool] = {}

    def is_correct(node: ReasoningNode) -> bool:
        if node.node_id not in verdicts:
            result = grade(solution_text(node), problem.gold_answer, require_boxed=True, checker=resources.checker)
            verdicts[node.node_id] = result.correct
        return verdicts[node.node_id]

    num_correct = sum(is_correct(node) for node in collect_solution_nodes(root))
    answer_sheet = {
        "id": problem.index,
        "source_id": problem.source_id,
        "problem": problem.problem,
        "gold_solution": problem.solution,
        "gold_answer": problem.gold_answer,
        "num_solutions": len(final_solutions),
        "num_correct_solutions": num_correct,
        "num_nodes": _count_nodes(root),
        **(provenance or {}),
        "action_counts": actions.counts.as_dict(),
        "llm_judge": actions.judge_verdicts,
    }
    return ProblemOutputs(
        index=problem.index,
        answer_sheet=answer_sheet,
        final_solutions=final_solutions,
        rollout_solutions=rollout_solution_records(last_nodes),
        hard_negatives=self_reflection_records(root, settings.unparsable_verdicts_as_negatives),
        retriever_scores=retrieval_score_records(root),
        trees=trees,
        tree=tree_record(root, searcher, is_correct),
        seconds=round(time.monotonic() - started, 3),
    )


def _count_nodes(root: ReasoningNode) -> int:
    count, stack = 0, [root]
    while stack:
        node = stack.pop()
        count += 1
        stack.extend(node.children or [])
    return count
