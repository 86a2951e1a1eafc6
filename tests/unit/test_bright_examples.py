"""The real BRIGHT ``examples`` (shared/data/bright beside the repository) against specs/evaluation.md §1.

Checks that our loader and qrels builder reproduce the statistics the spec verified from the Hub
data: query counts per split (1,384 in all), which splits exclude documents and how many (§1.1,
§1.2), the ``"N/A"`` sentinels, mean gold ids per query (short and long documents), the 178 duplicated
gold ids of theoremqa_questions that collapse in the qrels (§10.17), and that excluded ids never meet
gold ids. The data is read in place, never copied into the repository; without it the tests skip.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from models.retrieval.corpus import BRIGHT_SPLITS, LONG_DOCUMENT_SPLITS, load_examples
from run_src.evaluate_bright import TASKS, qrels_from_examples

REPO_ROOT = Path(__file__).resolve().parents[2]
BRIGHT_DIR = Path(REPO_ROOT).parent / "shared" / "data" / "bright"

pytestmark = pytest.mark.skipif(
    not (BRIGHT_DIR / "examples").is_dir(),
    reason=f"BRIGHT examples mirror not found at {BRIGHT_DIR}/examples (shared/ beside the repository)",
)

# §1.2 table: #queries, avg gold (short), avg gold (long; None where the split has no long documents).
SPLIT_STATS = {
    "biology": (103, 3.61, 1.30),
    "earth_science": (116, 5.04, 1.61),
    "economics": (103, 7.77, 1.06),
    "psychology": (101, 6.85, 1.15),
    "robotics": (101, 5.15, 1.05),
    "stackoverflow": (117, 4.09, 1.10),
    "sustainable_living": (108, 5.33, 1.19),
    "leetcode": (142, 1.85, None),
    "pony": (112, 19.81, 6.87),
    "aops": (111, 4.72, None),
    "theoremqa_questions": (194, 3.18, None),
    "theoremqa_theorems": (76, 1.99, None),
}
# §1.1: mean excluded ids per query where a split excludes documents for every query.
EXCLUDED_MEAN = {"leetcode": 235.8, "aops": 5610.4, "theoremqa_questions": 3126.4}


@pytest.fixture(scope="module")
def examples() -> dict[str, list]:
    return {split: load_examples(BRIGHT_DIR, split) for split in BRIGHT_SPLITS}


def raw_rows(split: str) -> list[dict]:
    with gzip.open(BRIGHT_DIR / "examples" / f"{split}.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_query_counts_per_split_and_total(examples: dict[str, list]) -> None:
    assert set(SPLIT_STATS) == set(BRIGHT_SPLITS) and set(BRIGHT_SPLITS) <= set(TASKS)
    counts = {split: len(rows) for split, rows in examples.items()}
    assert counts == {split: stats[0] for split, stats in SPLIT_STATS.items()}
    assert sum(counts.values()) == 1384
    for split, rows in examples.items():
        assert len({e.query_id for e in rows}) == len(rows), split
        # Every BRIGHT query is scorable, so the evaluation keeps all of them in the qrels.
        assert len(qrels_from_examples(rows)) == len(rows), split


def test_excluded_id_statistics(examples: dict[str, list]) -> None:
    for split, rows in examples.items():
        with_excluded = sum(bool(e.excluded_ids) for e in rows)
        if split in EXCLUDED_MEAN:
            assert with_excluded == len(rows), split
            mean = sum(len(e.excluded_ids) for e in rows) / len(rows)
            assert round(mean, 1) == EXCLUDED_MEAN[split], split
        else:
            assert with_excluded == 0, split
        for e in rows:
            assert not set(e.excluded_ids) & set(e.gold_ids), (split, e.query_id)
    # §1.3: leetcode's exclusions are 33,485 (query, doc) pairs; aops/theoremqa_questions exclude the query itself.
    assert sum(len(e.excluded_ids) for e in examples["leetcode"]) == 33_485
    for split in ("aops", "theoremqa_questions"):
        assert all(e.query_id in e.excluded_ids for e in examples[split]), split


def test_na_sentinels_are_dropped_by_the_loader(examples: dict[str, list]) -> None:
    for split in BRIGHT_SPLITS:
        raw = raw_rows(split)
        sentinel_excluded = {tuple(r["excluded_ids"]) for r in raw if r["excluded_ids"] in (["N/A"], [])}
        if split in EXCLUDED_MEAN:
            assert not sentinel_excluded, split
        elif split == "theoremqa_theorems":
            assert sentinel_excluded == {()}  # an empty list, not the "N/A" sentinel
        else:
            assert sentinel_excluded == {("N/A",)}, split
        if split not in LONG_DOCUMENT_SPLITS:
            assert all(r["gold_ids_long"] == ["N/A"] for r in raw), split
        for e in examples[split]:
            assert "N/A" not in e.excluded_ids and "N/A" not in e.gold_ids_long


def test_gold_id_statistics_and_duplicates(examples: dict[str, list]) -> None:
    for split, (_, short_mean, long_mean) in SPLIT_STATS.items():
        rows = examples[split]
        assert round(sum(len(e.gold_ids) for e in rows) / len(rows), 2) == short_mean, split
        long_total = sum(len(e.gold_ids_long) for e in rows)
        if long_mean is None:
            assert long_total == 0, split
        else:
            assert round(long_total / len(rows), 2) == long_mean, split
            assert len(qrels_from_examples(rows, long_context=True)) == len(rows), split
    # §1.1: theoremqa_questions lists 178 gold ids twice; the qrels hold each once.
    rows = examples["theoremqa_questions"]
    listed = sum(len(e.gold_ids) for e in rows)
    judged = sum(len(judged) for judged in qrels_from_examples(rows).values())
    assert listed - judged == 178
    for split in BRIGHT_SPLITS:
        if split != "theoremqa_questions":
            assert all(len(set(e.gold_ids)) == len(e.gold_ids) for e in examples[split]), split
