"""Trajectory and retrieval-node selection (spec ``specs/training.md`` §3.3 [REC], stage S1).

For every finished problem, every stored trajectory with at least one retrieval step is graded again
with our grader (the last ``\\boxed{}`` of its terminal text against the answer sheet's gold answer;
stored values are not trusted, spec §2.5), then kept or not by the trajectory filter:

* ``correct`` (paper): the recomputed answer is right;
* ``all``: every trajectory with a retrieval step (the reference code's behaviour);
* ``self_reflection_passed``: at least one retrieval step whose theorem self-reflection labelled
  relevant for that very retrieval call (for runs whose generator never reaches a gold answer).

Each retrieval step on a kept trajectory becomes a :class:`RetrievalNode`: the question, the reasoning
context strictly before the query-generation node (OST steps, plus earlier retrieved summaries as the
reference does), the positive theorem id and its hard negatives (:mod:`.negatives`). A step whose theorem
self-reflection rejected for that call is never a positive. Steps shared by several trajectories (same
problem, context and theorem) are merged into one node.

Usage::

    with AnswerGrader(num_workers=2) as grader:
        nodes, report = select_nodes(problems, SelectionConfig(trajectory_filter="correct"), grader)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from models.answers.checking import DEFAULT_TIMEOUT_S, SymbolicChecker, grade
from run_src.query_synthesis.negatives import NEGATIVE_SCOPES, JudgmentIndex, reasoning_negatives
from run_src.query_synthesis.records import ordered_union
from run_src.query_synthesis.run_reader import ProblemRun, Trajectory

logger = logging.getLogger(__name__)

TRAJECTORY_FILTERS = ("correct", "all", "self_reflection_passed")
QG_SUFFIX = "_querygeneration"
RT_SUFFIX = "_retrieval"
_OST_KEY = re.compile(r"^\d+$")


@dataclass(frozen=True)
class RetrievalStep:
    """One ``<c>_retrieval`` entry of a trace with the context that preceded its query node."""

    key: str
    theorem_id: str
    summary: str
    qg_key: str | None  # "<source_id>_<qg_node_id>": links the step to its self-reflection verdicts
    retrieval_query: str | None
    retriever: str | None
    qg_candidate: str | None  # slot 0 of the matching "<c>_querygeneration" entry
    context: tuple[str, ...]


def _step_text(value: Any) -> str:
    """An OST entry is a string, or ``[text, value]`` when terminal."""
    if isinstance(value, list | tuple):
        value = value[0] if value else ""
    return value.strip() if isinstance(value, str) else ""


def parse_retrieval_steps(trajectory: Trajectory, include_retrieved_in_context: bool = True) -> list[RetrievalStep]:
    """Walk the trace in order (§3.3): QG entries are remembered, RT entries emitted, the rest is context."""
    context: list[str] = []
    candidates: dict[str, str | None] = {}
    found: list[RetrievalStep] = []
    for key, value in trajectory.steps:
        if key.endswith(QG_SUFFIX):
            slot0 = value[0] if isinstance(value, list) and value else None
            candidates[key[: -len(QG_SUFFIX)]] = slot0 if isinstance(slot0, str) else None
        elif key.endswith(RT_SUFFIX):
            if not isinstance(value, list) or len(value) < 4 or value[3] is None:
                raise ValueError(f"trajectory {trajectory.ref}: {key} must be [summary, scores, retriever, theorem_id]")
            summary = value[0] if isinstance(value[0], str) else ""
            call = value[1] if isinstance(value[1], dict) else {}
            qg_key = next(iter(call), None)
            query = call[qg_key].get("query") if qg_key is not None and isinstance(call[qg_key], dict) else None
            found.append(
                RetrievalStep(
                    key=key,
                    theorem_id=str(value[3]),
                    summary=summary.strip(),
                    qg_key=qg_key,
                    retrieval_query=query if isinstance(query, str) else None,
                    retriever=value[2] if isinstance(value[2], str) else None,
                    qg_candidate=candidates.get(key[: -len(RT_SUFFIX)]),
                    context=tuple(context),
                )
            )
            if include_retrieved_in_context and summary.strip():
                context.append(summary.strip())  # REF: the code carries retrieved summaries into later context
        else:
            text = _step_text(value)
            if text:
                context.append(text)
    return found


def terminal_entry(trajectory: Trajectory) -> tuple[str, Any] | None:
    """``(text, stored value)`` of the answer-bearing step: the direct answer, or a terminal OST step."""
    if trajectory.direct_answer is not None:
        text = trajectory.direct_answer.get("text")
        return (text if isinstance(text, str) else "", trajectory.direct_answer.get("value"))
    if trajectory.steps:
        key, value = trajectory.steps[-1]
        if _OST_KEY.match(key) and isinstance(value, list) and len(value) >= 2:
            return (value[0] if isinstance(value[0], str) else "", value[1])
    return None


class AnswerGrader:
    """Our grader (:func:`models.answers.checking.grade`, boxed answer required) with a verdict cache and a
    pool of symbolic worker processes, shared by all problems of a stage run."""

    def __init__(self, num_workers: int = 1, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._checker = SymbolicChecker(num_workers=num_workers)
        self._pool = ThreadPoolExecutor(max_workers=num_workers)
        self._cache: dict[tuple[str, str], bool] = {}

    def grade_many(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], bool]:
        """Verdicts for ``(solution text, gold)`` pairs; repeated pairs are graded once."""
        todo = [pair for pair in dict.fromkeys(pairs) if pair not in self._cache]
        verdicts = self._pool.map(
            lambda pair: grade(pair[0], pair[1], timeout_s=self.timeout_s, require_boxed=True, checker=self._checker),
            todo,
        )
        for pair, result in zip(todo, verdicts, strict=True):
            self._cache[pair] = result.correct
        return {pair: self._cache[pair] for pair in pairs}

    def close(self) -> None:
        self._pool.shutdown()
        self._checker.close()

    def __enter__(self) -> AnswerGrader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True)
class SelectionConfig:
    """How S1 picks trajectories and nodes (the §3.3 switches)."""

    trajectory_filter: str = "correct"  # paper §3.1: high-reward (R = 1) trajectories
    include_retrieved_in_context: bool = True  # REF: code behaviour
    negative_scope: str = "node"  # §5.1 [REC]: rejections of the same retrieval call

    def __post_init__(self) -> None:
        if self.trajectory_filter not in TRAJECTORY_FILTERS:
            raise ValueError(f"trajectory_filter must be one of {TRAJECTORY_FILTERS}, got {self.trajectory_filter!r}")
        if self.negative_scope not in NEGATIVE_SCOPES:
            raise ValueError(f"negative_scope must be one of {NEGATIVE_SCOPES}, got {self.negative_scope!r}")


@dataclass
class SelectionReport:
    """Counts at each S1 hand-off, logged and written to the stage summary."""

    problems: int = 0
    problems_malformed: int = 0  # a trace entry that breaks the documented schema
    problems_without_gold: int = 0
    problems_with_nodes: int = 0
    trajectories: int = 0
    trajectories_without_retrieval: int = 0
    trajectories_without_answer: int = 0
    trajectories_correct: int = 0
    stored_correct_but_wrong: int = 0  # stored value 1, our grader says wrong
    stored_wrong_but_correct: int = 0  # stored value != 1, our grader says right
    trajectories_selected: int = 0
    retrieval_steps: int = 0
    retrieval_steps_rejected_positive: int = 0  # RT node whose theorem self-reflection labelled 0 for that call
    retrieval_steps_merged: int = 0  # same problem, context and theorem as an earlier step
    nodes: int = 0
    nodes_without_negatives: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class RetrievalNode:
    """A unique (problem, context, positive theorem) with its hard negatives: the unit q_llmq, q_CoT and
    q_question samples are made from."""

    node_id: str
    problem_id: str  # "<dataset>:<source_id>"
    dataset: str
    source_id: str
    problem_index: int
    run_dir: str
    question: str
    context: list[str]
    theorem_id: str
    summary: str
    qg_candidate: str | None
    retrieval_query: str | None
    retriever: str | None
    corpus: dict[str, str]
    qg_keys: list[str] = field(default_factory=list)
    trajectories: list[str] = field(default_factory=list)  # "final:3" refs of every occurrence
    negative_ids: list[str] = field(default_factory=list)
    relevant_ids: list[str] = field(default_factory=list)

    @property
    def cot_query(self) -> str:
        """q_CoT (§4.1): the question followed by the partial solution strictly before the query node."""
        return " ".join([self.question.strip(), *self.context]).strip()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _qg_node_part(step: RetrievalStep, source_id: str, trajectory: Trajectory) -> str:
    if step.qg_key:
        prefix = f"{source_id}_"
        return step.qg_key[len(prefix) :] if step.qg_key.startswith(prefix) else step.qg_key
    return f"{trajectory.origin}{trajectory.position}-{step.key}"


def _select_trajectory(
    trajectory: Trajectory,
    steps: list[RetrievalStep],
    correct: bool,
    index: JudgmentIndex,
    trajectory_filter: str,
) -> bool:
    if trajectory_filter == "all":
        return True
    if trajectory_filter == "correct":
        return correct
    return any(index.label(step.qg_key, step.theorem_id) == 1 for step in steps)


def select_problem_nodes(
    problem: ProblemRun, config: SelectionConfig, grader: AnswerGrader, report: SelectionReport
) -> list[RetrievalNode]:
    """S1 for one problem: grade, filter, extract and merge its retrieval nodes."""
    # Parse everything first: a malformed trace raises before any counter moves.
    all_steps = [(t, parse_retrieval_steps(t, config.include_retrieved_in_context)) for t in problem.trajectories]
    report.problems += 1
    report.problems_without_gold += problem.gold_answer is None
    report.trajectories += len(all_steps)
    parsed = [(trajectory, steps) for trajectory, steps in all_steps if steps]
    report.trajectories_without_retrieval += len(all_steps) - len(parsed)
    index = JudgmentIndex.build(problem.judgments)
    # Every positive of the problem (on any trajectory, selected or not) is relevant, never a negative;
    # a theorem that self-reflection rejected for its own call does not count as a positive.
    positives = (s.theorem_id for _, steps in parsed for s in steps if index.label(s.qg_key, s.theorem_id) != 0)
    relevant = ordered_union(sorted(index.relevant), positives)
    terminals = {t.ref: terminal_entry(t) for t, _ in parsed}
    gold = problem.gold_answer
    pairs = [(entry[0], gold) for entry in terminals.values() if entry is not None and gold is not None]
    verdicts = grader.grade_many(pairs)

    merged: dict[tuple[tuple[str, ...], str], RetrievalNode] = {}
    for trajectory, steps in parsed:
        entry = terminals[trajectory.ref]
        if entry is None:
            report.trajectories_without_answer += 1
        correct = entry is not None and gold is not None and verdicts[(entry[0], gold)]
        stored_correct = entry is not None and entry[1] == 1
        report.trajectories_correct += correct
        report.stored_correct_but_wrong += stored_correct and not correct
        report.stored_wrong_but_correct += correct and not stored_correct
        if not _select_trajectory(trajectory, steps, correct, index, config.trajectory_filter):
            continue
        report.trajectories_selected += 1
        for step in steps:
            report.retrieval_steps += 1
            if index.label(step.qg_key, step.theorem_id) == 0:
                report.retrieval_steps_rejected_positive += 1
                logger.warning(
                    "%s %s: %s holds theorem %s that self-reflection rejected for %s; not used as a positive",
                    problem.key,
                    trajectory.ref,
                    step.key,
                    step.theorem_id,
                    step.qg_key,
                )
                continue
            key = (step.context, step.theorem_id)
            node = merged.get(key)
            if node is not None:
                report.retrieval_steps_merged += 1
                node.trajectories.append(trajectory.ref)
                if step.qg_key and step.qg_key not in node.qg_keys:
                    node.qg_keys.append(step.qg_key)
                continue
            merged[key] = RetrievalNode(
                node_id=f"{problem.key}:{_qg_node_part(step, problem.source_id, trajectory)}:{step.theorem_id}",
                problem_id=problem.key,
                dataset=problem.run.dataset,
                source_id=problem.source_id,
                problem_index=problem.index,
                run_dir=str(problem.run.run_dir),
                question=problem.problem,
                context=list(step.context),
                theorem_id=step.theorem_id,
                summary=step.summary,
                qg_candidate=step.qg_candidate,
                retrieval_query=step.retrieval_query,
                retriever=step.retriever,
                corpus={"source": problem.run.corpus_source, "split": problem.run.corpus_split},
                qg_keys=[step.qg_key] if step.qg_key else [],
                trajectories=[trajectory.ref],
            )
    nodes = list(merged.values())
    _make_ids_unique(nodes)
    for node in nodes:
        node.relevant_ids = list(relevant)
        node.negative_ids = reasoning_negatives(index, node.qg_keys, node.theorem_id, relevant, config.negative_scope)
        report.nodes_without_negatives += not node.negative_ids
    report.nodes += len(nodes)
    report.problems_with_nodes += bool(nodes)
    return nodes


def _make_ids_unique(nodes: list[RetrievalNode]) -> None:
    """Two contexts can reach one (qg node, theorem) id only across merged runs; suffix the later ones."""
    seen: dict[str, int] = {}
    for node in nodes:
        count = seen.get(node.node_id, 0)
        seen[node.node_id] = count + 1
        if count:
            node.node_id = f"{node.node_id}~{count + 1}"


def select_nodes(
    problems: Iterable[ProblemRun], config: SelectionConfig, grader: AnswerGrader
) -> tuple[list[RetrievalNode], SelectionReport]:
    """S1 over many problems (streamed); nodes come out in problem order, then trajectory order.

    Nodes of different problems never merge; the same problem read from two run directories (say, two
    shards that both solved it) is merged by context and theorem like trajectories of one run.
    """
    report = SelectionReport()
    by_problem: dict[str, list[RetrievalNode]] = {}
    for problem in problems:
        try:
            nodes = select_problem_nodes(problem, config, grader, report)
        except ValueError as err:  # one malformed trace must not end the run
            report.problems_malformed += 1
            logger.warning("skipping problem %s of %s: %s", problem.key, problem.run.run_dir, err)
            continue
        if problem.key in by_problem:
            nodes = _merge_across_runs(by_problem[problem.key], nodes, report)
        by_problem[problem.key] = nodes
    all_nodes = [node for nodes in by_problem.values() for node in nodes]
    ids = [node.node_id for node in all_nodes]
    if len(set(ids)) != len(ids):
        _make_ids_unique(all_nodes)
    return all_nodes, report


def _merge_across_runs(
    existing: list[RetrievalNode], new: list[RetrievalNode], report: SelectionReport
) -> list[RetrievalNode]:
    by_key = {(tuple(node.context), node.theorem_id): node for node in existing}
    kept = list(existing)
    for node in new:
        old = by_key.get((tuple(node.context), node.theorem_id))
        if old is None:
            kept.append(node)
            continue
        report.retrieval_steps_merged += 1
        report.nodes -= 1
        old.trajectories.extend(f"{node.run_dir}#{ref}" for ref in node.trajectories)
        old.qg_keys = ordered_union(old.qg_keys, node.qg_keys)
        old.negative_ids = ordered_union(old.negative_ids, node.negative_ids)
        old.relevant_ids = ordered_union(old.relevant_ids, node.relevant_ids)
        old.negative_ids = [d for d in old.negative_ids if d not in set(old.relevant_ids)]
    relevant = ordered_union(*(node.relevant_ids for node in kept))
    for node in kept:  # positives found in one run must not be negatives from the other
        node.relevant_ids = relevant
        node.negative_ids = [d for d in node.negative_ids if d not in set(relevant)]
    return kept
