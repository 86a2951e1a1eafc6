"""Retrieval-augmented MCTS (spec ``specs/mcts.md`` §5): domain-free search, the reasoning tree, traces.

Layers: :mod:`.search` (UCT search over any :class:`MCTSNode`) ← :mod:`.nodes` (RaDeR node kinds,
predicates, rewards) ← :mod:`.expansion` (one function per action, §5.3 table) → :mod:`.actions`
(the injected generator protocol) ; :mod:`.trace` turns a finished tree into §9 records.

Usage::

    root = ReasoningNode.new_root(question, problem_id, generator, ExpansionConfig())
    searcher = MCTSSearcher(2.0, "const", 16, rng=problem_rng(42, problem_id))
    last_nodes = run_search(root, searcher)
    records = final_solution_records(root)
"""

from __future__ import annotations

from run_src.mcts.actions import (
    ActionGenerator,
    AnswerCompletion,
    AnswerGrade,
    QueryCandidate,
    RelevanceLabel,
    RetrievalOutcome,
    RetrievedTheorem,
    RStarActionGenerator,
    SubquestionStep,
)
from run_src.mcts.nodes import (
    ActionName,
    DirectAnswer,
    ExpansionConfig,
    NodeKind,
    OstStep,
    QueryGeneration,
    ReasoningNode,
    RephrasedQuestion,
    Retrieval,
    Subquestion,
    TreeContext,
    UserQuestion,
    collect_solution_nodes,
    reach_terminal_ost_step,
    reach_terminal_subquestion,
    reward_for_grade,
)
from run_src.mcts.search import (
    ROOT_UCT,
    UNVISITED_UCT,
    MCTSNode,
    MCTSSearcher,
    WeightScheduler,
    problem_rng,
    run_search,
)
from run_src.mcts.trace import (
    final_solution_records,
    json_safe,
    retrieval_score_records,
    rollout_solution_records,
    self_reflection_records,
    solution_trace,
)

__all__ = [
    "ROOT_UCT",
    "UNVISITED_UCT",
    "ActionGenerator",
    "ActionName",
    "AnswerCompletion",
    "AnswerGrade",
    "DirectAnswer",
    "ExpansionConfig",
    "MCTSNode",
    "MCTSSearcher",
    "NodeKind",
    "OstStep",
    "QueryCandidate",
    "QueryGeneration",
    "RStarActionGenerator",
    "ReasoningNode",
    "RelevanceLabel",
    "RephrasedQuestion",
    "Retrieval",
    "RetrievalOutcome",
    "RetrievedTheorem",
    "Subquestion",
    "SubquestionStep",
    "TreeContext",
    "UserQuestion",
    "WeightScheduler",
    "collect_solution_nodes",
    "final_solution_records",
    "json_safe",
    "problem_rng",
    "reach_terminal_ost_step",
    "reach_terminal_subquestion",
    "retrieval_score_records",
    "reward_for_grade",
    "rollout_solution_records",
    "run_search",
    "self_reflection_records",
    "solution_trace",
]
