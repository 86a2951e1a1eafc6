"""The domain-free searcher: UCT by hand, weight schedulers, select/expand/simulate/backprop, determinism."""

from __future__ import annotations

import math
import random

import pytest

from run_src.mcts import (
    ROOT_UCT,
    UNVISITED_UCT,
    ExpansionConfig,
    MCTSNode,
    MCTSSearcher,
    ReasoningNode,
    final_solution_records,
    problem_rng,
    rollout_solution_records,
    run_search,
    self_reflection_records,
)
from tests.unit.test_mcts_nodes import QUESTION, ScriptedFakeGenerator


class FakeNode(MCTSNode):
    """A hand-built node: fixed children, terminal flag and reward; counts find_children calls."""

    def __init__(self, name: str, reward: float = 0.0, children: list[FakeNode] | None = None, skip: bool = False):
        self.name = name
        self.reward = reward
        self.kids = children or []
        self.terminal = children is None
        self.skip = skip
        self.expansions = 0

    def __repr__(self) -> str:
        return f"FakeNode({self.name})"

    def find_children(self, rollout_id: int) -> list[MCTSNode]:
        self.expansions += 1
        return list(self.kids)

    def is_terminal(self) -> bool:
        return self.terminal

    def calculate_reward(self) -> float:
        return self.reward

    def skip_backprop(self) -> bool:
        return self.skip


def searcher(rollouts: int = 4, scheduler: str = "const", seed: int = 0, **kwargs: object) -> MCTSSearcher:
    return MCTSSearcher(2.0, scheduler, rollouts, rng=random.Random(seed), **kwargs)  # type: ignore[arg-type]


# --- UCT and schedulers (spec §5.5) ---------------------------------------------------------------------------


def test_weight_schedulers() -> None:
    assert searcher(10, "const").weight(5) == 2.0
    assert searcher(10, "lin").weight(0) == 2.0
    assert searcher(10, "lin").weight(5) == pytest.approx(2.0 * (1 - 0.9 * 0.5))
    assert searcher(10, "exp").weight(0) == 2.0
    assert searcher(10, "exp").weight(5) == pytest.approx(2.0 * 0.1**0.5)


def test_unknown_scheduler_is_rejected() -> None:
    with pytest.raises(ValueError, match="weight_scheduler"):
        searcher(4, "cosine")


def test_uct_by_hand() -> None:
    s = searcher(10)
    parent, child, fresh = FakeNode("p", children=[]), FakeNode("c"), FakeNode("f")
    s.q[parent], s.n[parent] = 3.0, 4
    s.q[child], s.n[child] = 1.0, 2
    assert s.uct(None, parent, 0) == ROOT_UCT == math.inf
    assert s.uct(parent, fresh, 0) == UNVISITED_UCT == math.inf
    assert s.uct(parent, child, 0) == pytest.approx(0.5 + 2.0 * math.sqrt(math.log(4) / 2))
    lin = searcher(10, "lin")
    lin.q, lin.n = s.q, s.n
    assert lin.uct(parent, child, 5) == pytest.approx(0.5 + 2.0 * 0.55 * math.sqrt(math.log(4) / 2))


def test_uct_selection_picks_the_maximum_and_breaks_ties_by_list_order() -> None:
    a, b, c = FakeNode("a"), FakeNode("b"), FakeNode("c")
    root = FakeNode("root", children=[a, b, c])
    s = searcher()
    s.children[root] = [a, b, c]
    s.explored.update({root, a, b, c})
    s.n[root] = 3
    for node, q in ((a, 0.0), (b, 1.0), (c, 1.0)):
        s.q[node], s.n[node] = q, 1
    assert s.select(root, 0) == [root, b]  # b and c tie; max() keeps the first


def test_select_prefers_unexplored_children_chosen_by_the_rng() -> None:
    kids = [FakeNode(str(i)) for i in range(5)]
    root = FakeNode("root", children=kids)
    picks = set()
    for seed in range(20):
        s = searcher(seed=seed)
        s.children[root] = list(kids)
        s.explored.update({root, kids[0], kids[1]})
        path = s.select(root, 0)
        assert len(path) == 2 and path[1] in kids[2:]
        picks.add(path[1].name)
    assert len(picks) > 1


# --- a full search on a hand-made tree (spec §5.4) -----------------------------------------------------------


def test_backprop_sums_and_visit_counts_after_known_rollouts() -> None:
    win, loss = FakeNode("win", reward=1.0), FakeNode("loss", reward=0.0)
    root = FakeNode("root", children=[win, loss])
    s = searcher(rollouts=3, seed=1)
    first = s.do_rollout(root, 0)  # expand root, simulate to one random child
    second = s.do_rollout(root, 1)  # the other child is the only unexplored one
    assert {first, second} == {win, loss}
    assert s.q[root] == 1.0 and s.n[root] == 2
    assert (s.q[win], s.n[win], s.q[loss], s.n[loss]) == (1.0, 1, 0.0, 1)
    # Rollout 2: both explored; UCT(win) = 1 + 2·sqrt(ln 2) > UCT(loss) = 0 + 2·sqrt(ln 2).
    assert s.do_rollout(root, 2) is win
    assert (s.q[root], s.n[root], s.q[win], s.n[win]) == (2.0, 3, 2.0, 2)
    assert root.expansions == 1  # children registered once


def test_simulation_goes_down_to_a_terminal_node_and_marks_the_start_explored() -> None:
    leaf = FakeNode("leaf", reward=0.5)
    middle = FakeNode("middle", children=[leaf])
    root = FakeNode("root", children=[middle])
    s = searcher()
    assert s.do_rollout(root, 0) is leaf
    assert s.children == {root: [middle], middle: [leaf]}
    assert all(s.n[node] == 1 and s.q[node] == 0.5 for node in (root, middle, leaf))
    assert s.explored == {root, middle, leaf}


def test_discount_and_skip_backprop() -> None:
    leaf = FakeNode("leaf", reward=1.0)
    middle = FakeNode("middle", children=[leaf])
    root = FakeNode("root", children=[middle], skip=True)
    s = searcher(discount=0.5, honour_skip_backprop=True)
    s.do_rollout(root, 0)
    assert (s.q[leaf], s.q[middle], s.q[root]) == (1.0, 0.5, 0.0)
    assert s.n[root] == 1  # visits still count, so ln N[root] stays defined
    ref = searcher()  # reference: skip_backprop unused, no discount
    ref.do_rollout(root, 0)
    assert ref.q[root] == 1.0


def test_dead_end_without_children_does_not_crash() -> None:
    stuck = FakeNode("stuck", children=[])
    root = FakeNode("root", children=[stuck])
    s = searcher(rollouts=3)
    last = run_search(root, s)
    assert last[0] is stuck and all(node in (root, stuck) for node in last)
    assert s.n[root] == 3


def test_terminal_root_is_explored_without_expansion() -> None:
    root = FakeNode("root", reward=0.3)
    s = searcher()
    assert s.do_rollout(root, 0) is root
    assert root.expansions == 0 and s.q[root] == 0.3 and root in s.explored


# --- the reasoning tree under search ---------------------------------------------------------------------------


def _tree_signature(root: ReasoningNode) -> list[tuple[int, str, int | None, str]]:
    out = []
    stack = [root]
    while stack:
        node = stack.pop()
        out.append((node.node_id, node.kind.value, node.created_in_rollout, str(node.payload)))
        stack.extend(reversed(node.children or []))
    return out


def _search(seed: int, rollouts: int = 12) -> tuple[ReasoningNode, MCTSSearcher, list[MCTSNode]]:
    root = ReasoningNode.new_root(QUESTION, "math_17", ScriptedFakeGenerator(), ExpansionConfig(max_depth_allowed=6))
    s = MCTSSearcher(2.0, "const", rollouts, rng=problem_rng(seed, "math_17"))
    return root, s, run_search(root, s)


def test_same_seed_gives_the_same_tree_and_records() -> None:
    root_a, s_a, last_a = _search(42)
    root_b, s_b, last_b = _search(42)
    assert _tree_signature(root_a) == _tree_signature(root_b)
    assert [n.node_id for n in last_a] == [n.node_id for n in last_b]
    assert final_solution_records(root_a) == final_solution_records(root_b)
    assert rollout_solution_records(last_a) == rollout_solution_records(last_b)
    assert sorted((n.node_id, s_a.n[n]) for n in s_a.n) == sorted((n.node_id, s_b.n[n]) for n in s_b.n)


def test_search_over_the_reasoning_tree_respects_the_invariants() -> None:
    root, s, last = _search(7)
    assert len(last) == 12 and s.n[root] == 12
    for node in last:
        assert node.is_terminal()
    for record in final_solution_records(root):
        steps = list(record["trace"]["0"]["ost_step"])
        for i, key in enumerate(steps):
            if key.endswith("_retrieval"):
                assert steps[i - 1] == key.replace("_retrieval", "_querygeneration")
    assert all(r["LLM_relevance_label"] in (0, 1) for r in self_reflection_records(root))
    # Q of the root equals the sum of the rewards of the rollouts' last nodes (no discount).
    assert s.q[root] == pytest.approx(sum(node.calculate_reward() for node in last))


def test_problem_rng_is_stable_and_problem_specific() -> None:
    assert problem_rng(42, "a").random() == problem_rng(42, "a").random()
    assert problem_rng(42, "a").random() != problem_rng(42, "b").random()
    assert problem_rng(42, "a").random() != problem_rng(43, "a").random()
