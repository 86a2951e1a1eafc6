"""Hard-negative pools (spec ``specs/training.md`` §5): pure functions over ids, no I/O.

* Reasoning queries (q_llmq, q_CoT, q_question), §5.1 [REC]: the theorems that self-reflection rejected
  (label 0) for the same retrieval call (``qg_key``), in retrieval-rank order; optionally widened to every
  rejection for the problem. Any id judged relevant (label 1) anywhere for the problem, and every positive
  of the problem, is removed: those are false negatives (§5.4), not hard ones.
* Lexical queries, §4.4 L4: a seeded sample of BM25 ranks 31–50 plus the dense top-10, gold removed.
* Back-fill (§5.3 [REC], opt-in): top-ranked retrieval candidates added until a sample has enough.

Usage::

    index = JudgmentIndex.build(problem.judgments)
    negatives = reasoning_negatives(index, ["MATH:17_4"], "20113", excluded=index.relevant, scope="node")
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from run_src.query_synthesis.records import ordered_union
from run_src.query_synthesis.run_reader import Judgment

NEGATIVE_SCOPES = ("node", "question")


@dataclass(frozen=True)
class JudgmentIndex:
    """A problem's self-reflection verdicts grouped by retrieval call."""

    by_call: dict[str, list[Judgment]] = field(default_factory=dict)
    unlinked: list[Judgment] = field(default_factory=list)  # verdicts without a qg_key (old run format)
    relevant: frozenset[str] = frozenset()  # ids labelled 1 anywhere for the problem
    labels: dict[tuple[str, str], int] = field(default_factory=dict)  # (qg_key, theorem_id) -> label

    @classmethod
    def build(cls, judgments: Iterable[Judgment]) -> JudgmentIndex:
        by_call: dict[str, list[Judgment]] = {}
        unlinked: list[Judgment] = []
        labels: dict[tuple[str, str], int] = {}
        relevant: set[str] = set()
        for judgment in judgments:
            if judgment.label == 1:
                relevant.add(judgment.theorem_id)
            if judgment.qg_key is None:
                unlinked.append(judgment)
                continue
            by_call.setdefault(judgment.qg_key, []).append(judgment)
            key = (judgment.qg_key, judgment.theorem_id)
            # Conflicting verdicts for one call (should not happen after the MCTS fix): relevant wins,
            # so the theorem can never become a negative.
            labels[key] = max(labels.get(key, 0), judgment.label)
        for items in by_call.values():
            items.sort(key=_rank_order)
        unlinked.sort(key=_rank_order)
        return cls(by_call=by_call, unlinked=unlinked, relevant=frozenset(relevant), labels=labels)

    def label(self, qg_key: str | None, theorem_id: str) -> int | None:
        """The verdict on ``theorem_id`` in retrieval call ``qg_key``; ``None`` if it was not judged there."""
        return None if qg_key is None else self.labels.get((qg_key, theorem_id))

    def rejected(self, qg_key: str) -> list[str]:
        return [j.theorem_id for j in self.by_call.get(qg_key, []) if j.label == 0]

    def all_rejected(self) -> list[str]:
        ordered = sorted((j for items in self.by_call.values() for j in items), key=_rank_order)
        return [j.theorem_id for j in [*ordered, *self.unlinked] if j.label == 0]

    @property
    def linked(self) -> bool:
        """Whether verdicts name their retrieval call; without that only question-level pools exist."""
        return bool(self.by_call)


def _rank_order(judgment: Judgment) -> tuple[int, int]:
    return (judgment.rank if judgment.rank is not None else 1 << 30, judgment.position)


def reasoning_negatives(
    index: JudgmentIndex, qg_keys: Sequence[str], positive_id: str, excluded: Iterable[str], scope: str = "node"
) -> list[str]:
    """Rejected theorems of the retrieval calls ``qg_keys`` (scope ``node``), then, with scope ``question``
    or when the run's verdicts carry no ``qg_key``, every rejection for the problem; ``excluded`` and the
    positive removed, duplicates dropped, rank order kept."""
    if scope not in NEGATIVE_SCOPES:
        raise ValueError(f"negative scope must be one of {NEGATIVE_SCOPES}, got {scope!r}")
    pools = [index.rejected(key) for key in qg_keys]
    if scope == "question" or not index.linked:
        pools.append(index.all_rejected())
    banned = {positive_id, *excluded}
    return [doc_id for doc_id in ordered_union(*pools) if doc_id not in banned]


def lexical_negatives(
    bm25_ids: Sequence[str],
    dense_ids: Sequence[str],
    positive_id: str,
    rng: random.Random,
    *,
    bm25_rank_start: int = 31,
    bm25_rank_end: int = 50,
    num_bm25: int = 10,
    num_dense: int = 10,
) -> list[str]:
    """§4.4 L4: ``num_bm25`` sampled from BM25 ranks ``[start, end]`` (1-based, gold removed), then the dense
    top ``num_dense`` without gold; the sample keeps rank order so the output depends only on ``rng``."""
    if not 1 <= bm25_rank_start <= bm25_rank_end:
        raise ValueError(f"need 1 <= bm25_rank_start <= bm25_rank_end, got {bm25_rank_start}, {bm25_rank_end}")
    window = ordered_union(d for d in bm25_ids[bm25_rank_start - 1 : bm25_rank_end] if d != positive_id)
    chosen = set(rng.sample(window, min(num_bm25, len(window))))
    sampled = [doc_id for doc_id in window if doc_id in chosen]
    dense = [doc_id for doc_id in ordered_union(dense_ids) if doc_id != positive_id][:num_dense]
    return ordered_union(sampled, dense)


def backfill(
    negatives: Sequence[str], candidates: Sequence[str], positive_id: str, excluded: Iterable[str], target: int
) -> list[str]:
    """Append ranked ``candidates`` (not the positive, not ``excluded``, not already present) up to ``target``."""
    banned = {positive_id, *excluded}
    filled = list(negatives)
    present = set(filled)
    for doc_id in candidates:
        if len(filled) >= target:
            break
        if doc_id not in banned and doc_id not in present:
            filled.append(doc_id)
            present.add(doc_id)
    return filled
