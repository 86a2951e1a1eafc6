"""The RaDeR reasoning tree's node class (its kinds, payloads and settings are in :mod:`run_src.mcts.tree_types`).

A :class:`ReasoningNode` is an :class:`~run_src.mcts.search.MCTSNode` whose children come from the
expansion table in :mod:`run_src.mcts.expansion`, which in turn calls the injected
:class:`~run_src.mcts.actions.ActionGenerator`. Spec ``specs/mcts.md`` §5.1–§5.3, §5.6–§5.8.

Usage::

    root = ReasoningNode.new_root("If x + 1/x = 3, ...", problem_id="math_17", generator=gen, config=ExpansionConfig())
    children = root.find_children(rollout_id=0)
"""

from __future__ import annotations

from run_src.mcts.actions import ActionGenerator, RetrievalOutcome, RStarActionGenerator, SelfConsistencyGenerator
from run_src.mcts.expansion import plan_children
from run_src.mcts.search import MCTSNode
from run_src.mcts.tree_types import (
    KIND_OF_PAYLOAD,
    ActionName,
    DirectAnswer,
    ExpansionConfig,
    NodeKind,
    OstStep,
    Payload,
    QueryGeneration,
    RephrasedQuestion,
    Retrieval,
    Subquestion,
    TreeContext,
    UserQuestion,
    reach_terminal_ost_step,
    reach_terminal_subquestion,
    reward_for_grade,
)

__all__ = [
    "ActionName",
    "DirectAnswer",
    "ExpansionConfig",
    "NodeKind",
    "OstStep",
    "Payload",
    "QueryGeneration",
    "ReasoningNode",
    "RephrasedQuestion",
    "Retrieval",
    "Subquestion",
    "TreeContext",
    "UserQuestion",
    "collect_solution_nodes",
    "reach_terminal_ost_step",
    "reach_terminal_subquestion",
    "reward_for_grade",
]


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
        self.kind = KIND_OF_PAYLOAD[type(payload)]
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
        if config.reward == "self_consistency" and not isinstance(generator, SelfConsistencyGenerator):
            raise ValueError(f"{type(generator).__name__} has no answer_key(); the self-consistency reward needs it")
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
