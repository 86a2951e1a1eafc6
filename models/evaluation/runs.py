"""BRIGHT-shaped runs: qrels from examples, external runs post-processed as BRIGHT does, and the
excluded-id check (specs/evaluation.md §2.2 steps 6-7). Shared by evaluation and reranking.

Usage::

    qrels = qrels_from_examples(examples)
    run = postprocess_run(read_run("my.trec"), examples, top_k=1000)
    check_no_excluded(run, qrels, examples)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from models.evaluation.metrics import Qrels, Run
from models.retrieval.corpus import Example

logger = logging.getLogger(__name__)


def gold_ids(example: Example, long_context: bool) -> list[str]:
    return example.gold_ids_long if long_context else example.gold_ids


def qrels_from_examples(examples: Sequence[Example], long_context: bool = False) -> Qrels:
    """BRIGHT's ground truth: ``{qid: {gold_id: 1}}`` (duplicates collapse, specs/evaluation.md §10.17)."""
    return {e.query_id: dict.fromkeys(gold_ids(e, long_context), 1) for e in examples if gold_ids(e, long_context)}


def postprocess_run(run: Run, examples: Sequence[Example], top_k: int) -> Run:
    """An external run made BRIGHT-shaped: known queries only, excluded ids removed, top ``top_k``.

    The cut ranks by score with ties in file order (a stable sort, like BRIGHT's get_scores).
    """
    by_id = {e.query_id: e for e in examples}
    unknown = [qid for qid in run if qid not in by_id]
    if unknown:
        logger.warning("%d run queries are not in the examples and are dropped (first: %s)", len(unknown), unknown[:5])
    removed = truncated = 0
    out: Run = {}
    for qid, ranking in run.items():
        if qid not in by_id:
            continue
        excluded = set(by_id[qid].excluded_ids)
        kept = [(doc_id, score) for doc_id, score in ranking.items() if doc_id not in excluded]
        removed += len(ranking) - len(kept)
        kept.sort(key=lambda item: item[1], reverse=True)
        truncated += max(0, len(kept) - top_k)
        out[qid] = dict(kept[:top_k])
    if removed or truncated:
        logger.warning(
            "run post-processing: removed %d excluded documents, cut %d beyond top %d", removed, truncated, top_k
        )
    return out


def check_no_excluded(run: Run, qrels: Qrels, examples: Sequence[Example]) -> None:
    """BRIGHT asserts this too (§2.2 step 7): an excluded id must be neither retrieved nor judged.

    A real check, not an ``assert``: it must hold under ``python -O`` as well.
    """
    for example in examples:
        excluded = set(example.excluded_ids)
        if not excluded:
            continue
        for what, found in (
            ("retrieved", run.get(example.query_id, {})),
            ("judged relevant", qrels.get(example.query_id, {})),
        ):
            clash = sorted(excluded & set(found))
            if clash:
                raise ValueError(f"query {example.query_id}: excluded documents {clash[:5]} are {what}")
