"""What a reasoning-tree node is made of: kinds, payloads, settings, the per-tree context, predicates and
rewards (spec ``specs/mcts.md`` §5.1, §5.6–§5.8). No node class and no actions live here.

:mod:`run_src.mcts.expansion` turns a node into child payloads using only these types and the
:class:`ExpandableNode` view; :mod:`run_src.mcts.nodes` builds the :class:`~run_src.mcts.nodes.ReasoningNode`
class on top of both, so the three modules import one another in one direction only.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from run_src.mcts.actions import (
    ActionGenerator,
    AnswerGrade,
    QueryCandidate,
    RetrievalOutcome,
    RetrievedTheorem,
)


class NodeKind(enum.Enum):
    """Node kinds; values are the reference's short tags used in tree dumps (spec §5.1)."""

    USER_QUESTION = "U"
    OST = "TS"
    DIRECT_ANSWER = "DA"
    QUERY_GENERATION = "QG"
    RETRIEVAL = "RT"
    # rStar-only kinds, off in the paper configuration (spec §6.6).
    REPHRASED_USER_QUESTION = "RU"
    SUBQUESTION = "SQ"


class ActionName(enum.Enum):
    """Actions by name, for ``--disable_action <name>`` (spec §5.1; RT is not separately switchable)."""

    OST = "ost"  # A1 one-step thought
    DIRECT_ANSWER = "crs"  # A2 complete remaining steps
    QUERY_GENERATION = "qg"  # RaDeR "A6"; RT always follows a QG node
    SUBQUESTION = "subquestion"  # rStar A3
    REPHRASE = "rephrase"  # rStar A5


# --- payloads: one small frozen dataclass per node kind -------------------------------------------------


@dataclass(frozen=True)
class UserQuestion:
    """Root payload: the problem text."""

    text: str


@dataclass(frozen=True)
class RephrasedQuestion:
    """RU payload: the rephrased problem text, which replaces ``user_question`` in the trace."""

    text: str


@dataclass(frozen=True)
class OstStep:
    """OST payload: one reasoning step; ``value`` is set iff the step is terminal (spec §6.2)."""

    text: str
    value: float | None = None


@dataclass(frozen=True)
class DirectAnswer:
    """DA payload: the chosen CRS completion, its value, and the rewards of all samples in order."""

    text: str
    value: float
    sample_rewards: tuple[float, ...]


@dataclass(frozen=True)
class QueryGeneration:
    """QG payload: one parsed candidate theorem (the query), its 1-based index and all sibling candidates."""

    candidate: QueryCandidate
    candidate_index: int
    all_candidates: tuple[QueryCandidate, ...]


@dataclass(frozen=True)
class Retrieval:
    """RT payload: one accepted theorem plus the retrieval call it came from (shared by its siblings)."""

    theorem: RetrievedTheorem
    outcome: RetrievalOutcome


@dataclass(frozen=True)
class Subquestion:
    """SQ payload (rStar A3): a sub-question, its answer and that answer's value."""

    subquestion: str
    subanswer: str
    value: float
    is_terminal: bool


Payload = UserQuestion | RephrasedQuestion | OstStep | DirectAnswer | QueryGeneration | Retrieval | Subquestion

KIND_OF_PAYLOAD: dict[type, NodeKind] = {
    UserQuestion: NodeKind.USER_QUESTION,
    RephrasedQuestion: NodeKind.REPHRASED_USER_QUESTION,
    OstStep: NodeKind.OST,
    DirectAnswer: NodeKind.DIRECT_ANSWER,
    QueryGeneration: NodeKind.QUERY_GENERATION,
    Retrieval: NodeKind.RETRIEVAL,
    Subquestion: NodeKind.SUBQUESTION,
}


# --- settings ---------------------------------------------------------------------------------------------

REWARD_MODES = ("gold", "self_consistency")


@dataclass(frozen=True)
class ExpansionConfig:
    """How the tree grows and how leaves are valued; defaults are the paper configuration (spec §5.8)."""

    max_depth_allowed: int = 6  # paper §4.1 / Table 8 (code default 5)
    max_qg_nodes: int | None = None  # None → floor(max_depth_allowed / 2) = 3, as the reference derives it
    num_a1_steps: int = 2  # OST children per A1 call (run_MCTS.sh)
    num_direct_answer_samples: int = 4  # --mcts_num_last_votes: CRS samples behind one DA child
    num_query_generations: int = 1  # --qg_nodes: QG generations per QG action
    num_subquestions: int = 3  # rStar A3
    disabled_actions: frozenset[ActionName] = frozenset({ActionName.SUBQUESTION, ActionName.REPHRASE})
    # [FIX] S4 / §5.7: reward of a boxed but wrong answer. 0.0 = paper (binary); 0.2 = reference code.
    wrong_answer_reward: float = 0.0
    # [FIX] S1: False → a DA node's value is the best sample's reward (matches its stored text);
    # True → REF: the reward of the last sample.
    reference_da_value: bool = False
    # §5.7: "gold" (paper, --bool_goldanswer_reward) values leaves by the gold answer; "self_consistency"
    # (rStar, the reference without that flag) by how many sibling samples reach the same answer.
    reward: str = "gold"

    def __post_init__(self) -> None:
        if self.max_depth_allowed < 1:
            raise ValueError(f"max_depth_allowed must be >= 1, got {self.max_depth_allowed}")
        for name in ("num_a1_steps", "num_direct_answer_samples", "num_query_generations", "num_subquestions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}; disable the action instead")
        if self.reward not in REWARD_MODES:
            raise ValueError(f"reward must be one of {REWARD_MODES}, got {self.reward!r}")
        if self.max_qg_nodes is not None and self.max_qg_nodes < 0:
            raise ValueError(f"max_qg_nodes must be >= 0 or None, got {self.max_qg_nodes}")

    @property
    def qg_limit(self) -> int:
        """Maximum QG steps on one root→leaf path (spec §5.8: ``int(max_depth_allowed / 2)``)."""
        return self.max_qg_nodes if self.max_qg_nodes is not None else self.max_depth_allowed // 2

    def enabled(self, action: ActionName) -> bool:
        """Whether ``action`` may be attempted at all."""
        return action not in self.disabled_actions


@dataclass
class TreeContext:
    """What every node of one problem's tree shares: settings, the generator, ids. One per problem, never global."""

    question: str
    problem_id: str
    generator: ActionGenerator
    config: ExpansionConfig
    node_ids: Iterator[int] = field(default_factory=itertools.count)


# --- predicates and rewards (spec §5.6, §5.7) -------------------------------------------------------------


def reach_terminal_ost_step(step: str) -> bool:
    """An OST step ends the solution when it mentions a boxed answer or says "answer is" (case-insensitive)."""
    lowered = step.lower()
    return "boxed" in lowered or "answer is" in lowered


def reach_terminal_subquestion(subquestion: str, question: str) -> bool:
    """rStar: a sub-question is final when it says so or restates the question's last sentence."""
    if "Now we can answer" in subquestion:
        return True
    last_sentence = question.strip().rstrip(".").split(".")[-1].strip().lower()
    return bool(last_sentence) and last_sentence in subquestion.lower()


def reward_for_grade(grade: AnswerGrade, wrong_answer_reward: float) -> float:
    """Gold-answer reward G (spec §10.5): 1 correct, ``wrong_answer_reward`` boxed-but-wrong, 0 unboxed."""
    if grade is AnswerGrade.CORRECT:
        return 1.0
    if grade is AnswerGrade.WRONG:
        return wrong_answer_reward
    return 0.0


class ExpandableNode(Protocol):
    """What the expansion table reads from (and records on) a node; ``ReasoningNode`` satisfies it."""

    kind: NodeKind
    payload: Payload
    context: TreeContext
    qg_step_count: int
    theorem_ids: tuple[str, ...]
    question: str
    retrieval_outcome: RetrievalOutcome | None

    @property
    def config(self) -> ExpansionConfig: ...
