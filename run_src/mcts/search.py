"""Domain-free Monte-Carlo tree search: UCT selection, expansion, random simulation, backpropagation.

Knows nothing about LLMs, prompts or retrieval: it drives any :class:`MCTSNode`. The semantics are
rStar's ``MCTS_backbone.py`` (spec ``specs/mcts.md`` §5.4–§5.5, §13.1 item 1) with its sentinels and
hidden global RNG replaced by named constants and an explicit ``random.Random``.

Usage::

    searcher = MCTSSearcher(exploration_weight=2.0, weight_scheduler="const", num_rollouts=16,
                            rng=problem_rng(42, "math_train_17"))
    last_nodes = run_search(root, searcher)
"""

from __future__ import annotations

import abc
import hashlib
import math
import random
from collections import defaultdict
from typing import Literal

WeightScheduler = Literal["const", "exp", "lin"]
WEIGHT_SCHEDULERS: tuple[str, ...] = ("const", "exp", "lin")

# The reference returns 666 for the root and 999 for an unvisited child. Only the ordering matters
# (an unvisited child beats every visited one), so both are +inf here; trace/tree writers turn
# non-finite numbers into JSON null.
ROOT_UCT: float = math.inf
UNVISITED_UCT: float = math.inf


class MCTSNode(abc.ABC):
    """A search-tree node. Must hash by identity (do not define ``__eq__``): the searcher keys statistics by node."""

    @abc.abstractmethod
    def find_children(self, rollout_id: int) -> list[MCTSNode]:
        """All children of this node, created once and cached; ``rollout_id`` is the rollout creating them."""

    @abc.abstractmethod
    def is_terminal(self) -> bool:
        """True when the search must not expand this node."""

    @abc.abstractmethod
    def calculate_reward(self) -> float:
        """The reward backed up when a rollout ends at this node."""

    @abc.abstractmethod
    def skip_backprop(self) -> bool:
        """True when backpropagated rewards should not accumulate in this node (rStar: question nodes)."""


def problem_rng(seed: int, problem_id: str) -> random.Random:
    """Per-problem RNG seeded from (global seed, problem id): reproducible in any worker layout ([FIX] §5.9).

    Uses SHA-256 rather than ``hash()``, which is salted per process for strings.
    """
    digest = hashlib.sha256(f"{seed}\x00{problem_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class MCTSSearcher:
    """Holds the statistics of one search (one problem): Q sums, N counts, registered children, explored set."""

    def __init__(
        self,
        exploration_weight: float,
        weight_scheduler: WeightScheduler,
        num_rollouts: int,
        rng: random.Random,
        discount: float = 1.0,
        honour_skip_backprop: bool = False,
    ) -> None:
        """Build an empty searcher.

        Args:
            exploration_weight: UCT constant ``c`` (paper: 2.0, §5.5).
            weight_scheduler: ``const`` (paper), ``exp`` or ``lin`` decay of ``c`` over the rollouts.
            num_rollouts: total rollouts ``R``; the schedulers need it (paper: 16).
            rng: the only source of randomness (unexplored-child choice and simulation).
            discount: reward multiplier per step away from the rollout's last node. 1.0 = the
                reference, which ignores ``--mcts_discount_factor``.
            honour_skip_backprop: when True, nodes whose ``skip_backprop()`` is True still count the
                visit (so UCT's ``ln N[parent]`` stays defined) but do not accumulate reward. False =
                the reference, where ``skip_backprop`` is defined but never called.
        """
        if weight_scheduler not in WEIGHT_SCHEDULERS:
            raise ValueError(f"weight_scheduler must be one of {WEIGHT_SCHEDULERS}, got {weight_scheduler!r}")
        if num_rollouts < 1:
            raise ValueError(f"num_rollouts must be >= 1, got {num_rollouts}")
        if not 0.0 < discount <= 1.0:
            raise ValueError(f"discount must be in (0, 1], got {discount}")
        self.exploration_weight = exploration_weight
        self.weight_scheduler: WeightScheduler = weight_scheduler
        self.num_rollouts = num_rollouts
        self.rng = rng
        self.discount = discount
        self.honour_skip_backprop = honour_skip_backprop
        self.q: defaultdict[MCTSNode, float] = defaultdict(float)
        self.n: defaultdict[MCTSNode, int] = defaultdict(int)
        self.children: dict[MCTSNode, list[MCTSNode]] = {}
        self.explored: set[MCTSNode] = set()

    def weight(self, rollout_id: int) -> float:
        """Exploration weight ``w(r)`` for rollout ``r`` under the configured scheduler (spec §5.5)."""
        progress = rollout_id / self.num_rollouts
        if self.weight_scheduler == "exp":
            return self.exploration_weight * (0.1**progress)
        if self.weight_scheduler == "lin":
            return self.exploration_weight * (1.0 - 0.9 * progress)
        return self.exploration_weight

    def uct(self, parent: MCTSNode | None, node: MCTSNode, rollout_id: int) -> float:
        """UCT of ``node`` under ``parent``: ``Q/N + w(r)·sqrt(ln N[parent] / N)``; +inf for root or unvisited."""
        if parent is None:
            return ROOT_UCT
        if self.n[node] == 0:
            return UNVISITED_UCT
        exploit = self.q[node] / self.n[node]
        explore = math.sqrt(math.log(self.n[parent]) / self.n[node])
        return exploit + self.weight(rollout_id) * explore

    def do_rollout(self, root: MCTSNode, rollout_id: int) -> MCTSNode:
        """One select → expand → simulate → backpropagate pass; returns the rollout's last node."""
        path = self.select(root, rollout_id)
        leaf = path[-1]
        self.expand(leaf, rollout_id)
        tail = self.simulate(leaf, rollout_id)
        self.backpropagate(path + tail)
        return tail[-1] if tail else path[-1]

    def select(self, root: MCTSNode, rollout_id: int) -> list[MCTSNode]:
        """Walk down by UCT until a node without registered children or with an unexplored child."""
        path = [root]
        node = root
        while True:
            children = self.children.get(node)
            # DEVIATION: a registered but empty child list (every action failed) is a dead end here;
            # the reference would crash in max() over an empty list.
            if not children:
                return path
            unexplored = [child for child in children if child not in self.explored]
            if unexplored:
                path.append(self.rng.choice(unexplored))
                return path
            # max() keeps the first maximal child in list order, as the reference does.
            node = max(children, key=lambda child, parent=node: self.uct(parent, child, rollout_id))
            path.append(node)

    def expand(self, leaf: MCTSNode, rollout_id: int) -> None:
        """Register the leaf's children once, unless it is already explored or terminal."""
        if leaf in self.explored:
            return
        if leaf.is_terminal():
            self.explored.add(leaf)
            return
        self.children[leaf] = leaf.find_children(rollout_id)

    def simulate(self, leaf: MCTSNode, rollout_id: int) -> list[MCTSNode]:
        """Descend from ``leaf`` by uniformly random children until a terminal node; returns the nodes below it."""
        tail: list[MCTSNode] = []
        node = leaf
        while True:
            if node.is_terminal():
                # REF: the reference marks the simulation's start, not the terminal node, as explored.
                self.explored.add(leaf)
                return tail
            if node not in self.children:
                self.children[node] = node.find_children(rollout_id)
            children = self.children[node]
            if not children:
                # DEVIATION: dead end (no action produced a child); the reference would crash.
                self.explored.add(leaf)
                return tail
            node = self.rng.choice(children)
            tail.append(node)

    def backpropagate(self, path: list[MCTSNode]) -> None:
        """Add the last node's reward to Q and one visit to N of every node on ``path`` (root included)."""
        reward = path[-1].calculate_reward()
        for steps_from_end, node in enumerate(reversed(path)):
            self.n[node] += 1
            self.explored.add(node)
            if self.honour_skip_backprop and node.skip_backprop():
                continue
            self.q[node] += reward * self.discount**steps_from_end


def run_search(root: MCTSNode, searcher: MCTSSearcher) -> list[MCTSNode]:
    """Run all ``searcher.num_rollouts`` rollouts from ``root``; returns each rollout's last node in order."""
    return [searcher.do_rollout(root, rollout_id) for rollout_id in range(searcher.num_rollouts)]
