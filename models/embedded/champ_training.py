"""A Tevatron-format training set from the embedded CHAMP mirror, with a held-out evaluation split.

The embedded default has no MCTS-generated queries worth training on (SmolLM2 solves no CHAMP problem,
DESIGN.md §5), so the CPU training check uses CHAMP's own gold links: problem text -> its linked concept
statements as positives, the other concepts of the same category as hard negatives. Problems are split
with a seeded shuffle; training never sees a held-out problem (concepts are shared, as theorems are shared
between BRIGHT queries).

Written layout (``out_dir``)::

    train.jsonl                       legacy Tevatron records {query_id, query, positive_passages, negative_passages}
    heldout/examples/champ.jsonl      the held-out problems as BRIGHT example rows
    heldout/documents/champ.jsonl     all concepts (the evaluation corpus)
    split.json                        seed, fraction and the problem ids of both sides

Usage::

    split = write_champ_training_set(champ_mirror_dir, out_dir, train_fraction=0.6, seed=13)
    # then: python -m run_src.train_retriever --dataset_path out_dir/train.jsonl ...
    #       python -m run_src.evaluate_bright --task champ --bright_dir out_dir/heldout ...
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.io_utils import atomic_write_json, atomic_write_jsonl, read_jsonl


@dataclass(frozen=True)
class ChampSplit:
    """Paths and ids of one written split."""

    train_path: Path
    heldout_dir: Path
    train_ids: list[str]
    heldout_ids: list[str]


def _concept_category(problems: list[dict[str, Any]]) -> dict[str, str]:
    """Concept -> category of the problems that link it (CHAMP concepts belong to one category)."""
    return {gold: p["category"] for p in problems for gold in p["gold_ids"]}


def build_records(
    problems: list[dict[str, Any]], documents: list[dict[str, str]], min_negatives: int = 8, seed: int = 0
) -> list[dict[str, Any]]:
    """One legacy record per problem: linked concepts positive, same-category concepts negative
    (topped up with other concepts to ``min_negatives``)."""
    text = {d["id"]: d["content"] for d in documents}
    category = _concept_category(problems)
    records = []
    for problem in problems:
        gold = set(problem["gold_ids"])
        same = [d for d in text if d not in gold and category.get(d) == problem["category"]]
        others = [d for d in text if d not in gold and d not in same]
        random.Random(f"{seed}:{problem['id']}").shuffle(others)
        negatives = same + others[: max(0, min_negatives - len(same))]
        records.append(
            {
                "query_id": problem["id"],
                "query": problem["query"],
                "positive_passages": [{"docid": d, "title": "", "text": text[d]} for d in problem["gold_ids"]],
                "negative_passages": [{"docid": d, "title": "", "text": text[d]} for d in negatives],
            }
        )
    return records


def write_champ_training_set(
    mirror_dir: str | Path, out_dir: str | Path, train_fraction: float = 0.6, seed: int = 13, min_negatives: int = 8
) -> ChampSplit:
    """Split CHAMP's linked problems by a seeded shuffle and write the files listed in the module docstring."""
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    mirror, out = Path(mirror_dir), Path(out_dir)
    problems = [p for p in read_jsonl(mirror / "examples" / "champ.jsonl") if p["gold_ids"]]
    documents = list(read_jsonl(mirror / "documents" / "champ.jsonl"))
    order = sorted(p["id"] for p in problems)
    random.Random(seed).shuffle(order)
    n_train = round(len(order) * train_fraction)
    train_ids, heldout_ids = set(order[:n_train]), set(order[n_train:])
    train = [p for p in problems if p["id"] in train_ids]
    heldout = [p for p in problems if p["id"] in heldout_ids]
    atomic_write_jsonl(out / "train.jsonl", build_records(train, documents, min_negatives, seed))
    atomic_write_jsonl(out / "heldout" / "examples" / "champ.jsonl", heldout)
    atomic_write_jsonl(out / "heldout" / "documents" / "champ.jsonl", documents)
    split = ChampSplit(out / "train.jsonl", out / "heldout", sorted(train_ids), sorted(heldout_ids))
    atomic_write_json(
        out / "split.json",
        {"seed": seed, "train_fraction": train_fraction, "train_ids": split.train_ids, "heldout_ids": split.heldout_ids},
    )
    return split
