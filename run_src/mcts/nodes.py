"""The RaDeR reasoning tree: node kinds, payloads, settings, predicates, rewards and the node class.

A :class:`ReasoningNode` is an :class:`~run_src.mcts.search.MCTSNode` whose children come from the
expansion table in :mod:`run_src.mcts.expansion`, which in turn calls the injected
:class:`~run_src.mcts.actions.ActionGenerator`. Spec ``specs/mcts.md`` §5.1–§5.3, §5.6–§5.8.

Usage::

    root = ReasoningNode.new_root("If x + 1/x = 3, ...", problem_id="math_17", generator=gen, config=ExpansionConfig())
    children = root.find_children(rollout_id=0)
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from run_src.mcts.actions import (
    ActionGenerator,
    AnswerGrade,
    QueryCandidate,
    RetrievalOutcome,
    RetrievedTheorem,
    RStarActionGenerator,
)
from run_src.mcts.search import MCTSNode


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

_KIND_OF_PAYLOAD: dict[type, NodeKind] = {
    UserQuestion: NodeKind.USER_QUESTION,
    RephrasedQuestion: NodeKind.REPHRASED_USER_QUESTION,
    OstStep: NodeKind.OST,
    DirectAnswer: NodeKind.DIRECT_ANSWER,
    QueryGeneration: NodeKind.QUERY_GENERATION,
    Retrieval: NodeKind.RETRIEVAL,
    Subquestion: NodeKind.SUBQUESTION,
}


# --- settings ---------------------------------------------------------------------------------------------


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

    def __post_init__(self) -> None:
        if self.max_depth_allowed < 1:
            raise ValueError(f"max_depth_allowed must be >= 1, got {self.max_depth_allowed}")
        for name in ("num_a1_steps", "num_direct_answer_samples", "num_query_generations", "num_subquestions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}; disable the action instead")
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


# --- the node ---------------------------------------------------------------------------------------------


class ReasoningNode(MCTSNode):
    """One step of a retrieval-augmented solution. Hashes by identity; children are created once and cached.

    Path state is carried down explicitly (not recomputed) because the expansion rules and prompts need it:
    ``ost_steps`` (texts of the OST steps on the path), ``qg_step_count``, ``theorem_ids`` (theorems
    retrieved on the path, for de-duplication) and ``question`` (the rephrased one below an RU node).
    """

    def __init__(
        self,
        payload: Payload,
        context: TreeContext,
        parent: ReasoningNode | None = None,
        created_in_rollout: int | None = None,
    ) -> None:
        self.payload = payload
        self.kind = _KIND_OF_PAYLOAD[type(payload)]
        self.context = context
        self.parent = parent
        self.node_id = next(context.node_ids)
        self.created_in_rollout = created_in_rollout
        self.children: list[ReasoningNode] | None = None
        # Set on QG nodes once expanded: the full retrieval result, including rejected theorems' labels.
        self.retrieval_outcome: RetrievalOutcome | None = None
        if parent is None:
            self.depth = 0
            self.ost_steps: tuple[str, ...] = ()
            self.qg_step_count = 0
            self.theorem_ids: tuple[str, ...] = ()
            self.subquestion_count = 0
            self.question = context.question
        else:
            self.depth = parent.depth + 1
            self.ost_steps = parent.ost_steps + ((payload.text,) if isinstance(payload, OstStep) else ())
            self.qg_step_count = parent.qg_step_count + isinstance(payload, QueryGeneration)
            extra_id = (payload.theorem.theorem_id,) if isinstance(payload, Retrieval) else ()
            self.theorem_ids = parent.theorem_ids + extra_id
            self.subquestion_count = parent.subquestion_count + isinstance(payload, Subquestion)
            self.question = payload.text if isinstance(payload, RephrasedQuestion) else parent.question

    @classmethod
    def new_root(
        cls, question: str, problem_id: str, generator: ActionGenerator, config: ExpansionConfig | None = None
    ) -> ReasoningNode:
        """The USER_QUESTION root of a fresh tree (node id 0); checks the generator covers enabled actions."""
        config = config or ExpansionConfig()
        rstar_on = config.enabled(ActionName.SUBQUESTION) or config.enabled(ActionName.REPHRASE)
        if rstar_on and not isinstance(generator, RStarActionGenerator):
            raise ValueError(
                f"{type(generator).__name__} lacks generate_subquestions/rephrase_question but the config enables "
                "the rStar actions; add ActionName.SUBQUESTION and ActionName.REPHRASE to disabled_actions"
            )
        context = TreeContext(question=question, problem_id=problem_id, generator=generator, config=config)
        return cls(UserQuestion(question), context, created_in_rollout=None)

    def __repr__(self) -> str:
        return f"ReasoningNode({self.kind.value}-{self.node_id}, depth={self.depth})"

    @property
    def config(self) -> ExpansionConfig:
        return self.context.config

    @property
    def ost_step_count(self) -> int:
        """Running OST count on the path; numbers OST trace keys and prefixes QG/RT keys (spec §9.4)."""
        return len(self.ost_steps)

    @property
    def value(self) -> float | None:
        """The node value of spec §5.7: set on DA, terminal OST and SQ nodes, None elsewhere."""
        payload = self.payload
        if isinstance(payload, DirectAnswer | Subquestion):
            return payload.value
        if isinstance(payload, OstStep):
            return payload.value
        return None

    def path(self) -> list[ReasoningNode]:
        """Nodes from the root down to this node, both included."""
        nodes: list[ReasoningNode] = []
        node: ReasoningNode | None = self
        while node is not None:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]

    def is_valid_leaf(self) -> bool:
        """DA, terminal OST or terminal SQ node (spec §5.6)."""
        payload = self.payload
        if isinstance(payload, DirectAnswer):
            return True
        if isinstance(payload, OstStep):
            return reach_terminal_ost_step(payload.text)
        if isinstance(payload, Subquestion):
            return payload.is_terminal
        return False

    def is_valid_solution(self) -> bool:
        """Same predicate as a valid leaf; used to collect Final Solutions (spec §5.6)."""
        return self.is_valid_leaf()

    def is_terminal(self) -> bool:
        """Depth limit reached or valid leaf."""
        return self.depth >= self.config.max_depth_allowed or self.is_valid_leaf()

    def calculate_reward(self) -> float:
        """The node value for a valid leaf, 0 otherwise (e.g. a non-answer that hit the depth limit)."""
        if self.is_valid_leaf():
            value = self.value
            return 0.0 if value is None else value
        return 0.0

    def skip_backprop(self) -> bool:
        """rStar skips question nodes (U, RU); used only when the searcher is told to honour it."""
        return self.kind in (NodeKind.USER_QUESTION, NodeKind.REPHRASED_USER_QUESTION)

    def find_children(self, rollout_id: int) -> list[MCTSNode]:
        """Run the expansion table once (spec §5.3) and cache the children; terminal nodes get none."""
        if self.children is None:
            # Imported here because expansion.py imports this module for the payload types.
            from run_src.mcts.expansion import plan_children

            # ``created_in_rollout`` is stamped once, at creation: the rollout Final Solutions report (§9.5).
            # The reference re-stamps cached children on every call, but its searcher calls once per node.
            payloads = [] if self.is_terminal() else plan_children(self)
            self.children = [
                ReasoningNode(p, self.context, parent=self, created_in_rollout=rollout_id) for p in payloads
            ]
        return list(self.children)


def collect_solution_nodes(root: ReasoningNode) -> list[ReasoningNode]:
    """All valid solution nodes in the tree, depth-first, not descending below one (spec §5.6, §9.5)."""
    found: list[ReasoningNode] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_valid_solution():
            found.append(node)
            continue
        stack.extend(reversed(node.children or []))
    return found
