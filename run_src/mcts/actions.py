"""The contract between the search tree and whatever produces reasoning steps (LLM, retriever, grader).

The tree (:mod:`run_src.mcts.nodes`) never talks to an LLM or a server: it calls an injected
:class:`ActionGenerator` and receives the plain result dataclasses defined here. The LLM-backed
implementation lives elsewhere; tests use a scripted fake. Spec: ``specs/mcts.md`` §6.

Usage::

    node.find_children(rollout_id)  # calls generator.generate_ost_steps(node, 2), ... as §5.3 says
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class AnswerGrade(enum.Enum):
    """Outcome of checking a completion against the gold answer (spec §10.5), before it becomes a reward.

    The tree maps grades to rewards itself, so the "formatted but wrong" reward (paper 0, reference 0.2)
    is one config value and not something every grader has to know about.
    """

    UNFORMATTED = "unformatted"  # no \boxed{...}: the format gate fails
    WRONG = "wrong"  # boxed, but neither string-equivalent nor accepted by the judge
    CORRECT = "correct"


@dataclass(frozen=True)
class AnswerCompletion:
    """One sampled CRS completion (only the continuation text, spec §6.5) and its grade."""

    text: str
    grade: AnswerGrade


@dataclass(frozen=True)
class QueryCandidate:
    """One hypothetical theorem parsed from a QG generation (spec §6.3, per-block parse as its [FIX]).

    ``query`` is what retrieval receives ("Theorem Name: …\\nTheorem Statement: …" in LLM-candidate mode,
    the whole output in free-text mode); the other fields are kept for the trace's slots 1–3.
    """

    query: str
    preconditions_theorem: str | None = None
    preconditions_question: str | None = None
    subject: str | None = None
    full_output: str | None = None


class RelevanceLabel(enum.Enum):
    """Self-reflection verdict for one retrieved theorem (spec §6.4.4)."""

    RELEVANT = "relevant"
    IRRELEVANT = "irrelevant"
    # [FIX] S3: a reply without a readable true/false is treated as "not relevant", never silently kept.
    UNPARSABLE = "unparsable"


@dataclass(frozen=True)
class RetrievedTheorem:
    """One candidate of a retrieval call, in rank order, after summarization and self-reflection.

    ``label`` is ``None`` when self-reflection is switched off; then every candidate becomes a node.
    ``statement`` is what the summarizer saw (the corpus text without proofs, spec §3.1); ``text`` is the
    corpus text as retrieved, kept for reference.
    """

    theorem_id: str
    summary: str
    label: RelevanceLabel | None = None
    reason: str | None = None
    statement: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class RetrievalOutcome:
    """Everything one retrieval call (spec §6.4) produced for one QG node.

    ``theorems`` are the judged top-k candidates in rank order; ``scores`` maps theorem id to retrieval
    score for those top-k ids, sorted descending, as the trace stores them ([FIX] §9.4: not the whole corpus);
    ``deep_scores`` holds the scores to the configured depth (default 100) for the score log, so the recall
    of MCTS queries can be computed later.
    """

    query: str
    theorems: tuple[RetrievedTheorem, ...]
    scores: dict[str, float] = field(default_factory=dict)
    retriever_name: str | None = None
    deep_scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SubquestionStep:
    """rStar A3 output: a sub-question, its chosen answer and that answer's value (spec §6.6)."""

    subquestion: str
    subanswer: str
    value: float


class NodeView(Protocol):
    """What an action implementation may read from the node it acts on (``ReasoningNode`` satisfies it).

    Declared here, not imported from the tree, so the tree depends on this contract and never the reverse.
    """

    node_id: int
    depth: int
    question: str
    theorem_ids: tuple[str, ...]
    ost_steps: tuple[str, ...]
    payload: Any

    @property
    def config(self) -> Any: ...

    def path(self) -> Sequence[Any]: ...


@runtime_checkable
class ActionGenerator(Protocol):
    """The four RaDeR actions plus answer grading, as the tree needs them (spec §6.2–§6.5)."""

    def generate_ost_steps(self, node: NodeView, n: int) -> list[str]:
        """A1: ``n`` candidate next steps (stripped, one line each) continuing ``node``'s partial solution."""
        ...

    def generate_direct_answers(self, node: NodeView, n: int) -> list[AnswerCompletion]:
        """A2/CRS: ``n`` graded completions of the remaining solution from ``node``."""
        ...

    def generate_queries(self, node: NodeView, n: int) -> list[QueryCandidate]:
        """QG: run ``n`` query generations and return every parsed candidate theorem, in order."""
        ...

    def retrieve(self, node: NodeView, query: str) -> RetrievalOutcome:
        """RT: retrieve for ``query`` (``node`` is the QG node), summarize and self-reflect each candidate."""
        ...

    def grade_answer(self, node: NodeView, text: str) -> AnswerGrade:
        """Grade a terminal one-step thought (spec §5.7: terminal OST value = G(step text))."""
        ...


@runtime_checkable
class RStarActionGenerator(Protocol):
    """rStar's optional actions (A3 sub-question, A5 rephrase); needed only when those actions are enabled."""

    def generate_subquestions(self, node: NodeView, n: int) -> list[SubquestionStep]:
        """A3: ``n`` sub-questions with their answers and values."""
        ...

    def rephrase_question(self, node: NodeView) -> str:
        """A5: the question rewritten as a list of conditions followed by the question."""
        ...


@runtime_checkable
class SelfConsistencyGenerator(Protocol):
    """What the self-consistency reward (rStar, spec §5.7) needs: a comparable key for a sample's answer."""

    def answer_key(self, text: str) -> str | None:
        """The normalised final answer of ``text`` (``None`` without one); equal keys vote together."""
        ...
