"""Training-set assembly (spec training.md §5–§6): drop reasons, de-duplication across query types,
false-negative removal, lexical negatives, statistics, and the Tevatron JSONL that ``datasets`` loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.io_utils import read_jsonl
from models.retrieval.corpus import Corpus
from run_src.build_training_data import main as build_main
from run_src.query_synthesis.assembly import Assembler, AssemblyConfig, stats_markdown
from run_src.query_synthesis.records import QueryRecord, queries_file, read_records, write_records

CORPUS = {f"t{i}": f"Theorem {i} statement.\n\\begin{{proof}}Proof {i}.\\end{{proof}}" for i in range(1, 60)}
KEY = ("corpus.jsonl", "mini")


def record(query_id: str, query_type: str, query: str, positive: str, **kwargs: object) -> QueryRecord:
    base = {
        "status": "ok",
        "source": "MATH",
        "corpus": {"source": KEY[0], "split": KEY[1]},
        "problem_id": None if query_type == "lexical" else "MATH:p1",
        "relevant_ids": [positive],
    }
    return QueryRecord(
        query_id=query_id, query_type=query_type, query=query, positive_id=positive, **{**base, **kwargs}
    )


def records() -> list[QueryRecord]:
    q = "How many days are in a week?"
    return [
        record("n1:llmq", "llmq", "Which count of weekdays applies?", "t1", negative_ids=["t2", "t3", "t1"]),
        record("n1:cot", "cot", q, "t1", negative_ids=["t2", "t4"], relevant_ids=["t1", "t4"]),  # = the question
        record("p1:t1:question", "question", q, "t1", negative_ids=["t2", "t3"]),
        record("n2:llmq", "llmq", "", "t1", status="unparsable_llm_output", generation={"error": None}),
        record("n3:llmq", "llmq", "Anything", "t1", status="llm_error", generation={"error": "HTTP 500"}),
        record("n4:llmq", "llmq", "  ", "t1"),
        record("n5:llmq", "llmq", "Ask about t99", "t99", negative_ids=["t2"]),
        record("n6:llmq", "llmq", "A query without negatives", "t5", negative_ids=[]),
        record("n7:llmq", "llmq", "A query with a missing negative id", "t6", negative_ids=["zz", "t7"]),
        record(
            "lexical:mini:t8:0",
            "lexical",
            "theorem 8 statement",
            "t8",
            bm25_rank=3,
            bm25_ids=[f"t{i}" for i in range(9, 59)],
            dense_ids=["t8", "t9", "t10"],
        ),  # fmt: skip
        record("lexical:mini:t9:0", "lexical", "theorem 9 words", "t9", bm25_rank=21, bm25_ids=["t1"]),
        record("lexical:mini:t10:0", "lexical", "nothing matches", "t10", bm25_rank=None),
    ]


@pytest.fixture()
def corpus() -> Corpus:
    return Corpus("mini", list(CORPUS), list(CORPUS.values()))


def test_drop_reasons_negatives_and_rows(corpus: Corpus) -> None:
    result = Assembler(AssemblyConfig(seed=3), {KEY: corpus}).assemble(records())
    drops = {d.query_id: d.reason for d in result.drops}
    assert drops == {
        "n1:cot": "duplicate",  # same problem, positive and text as the q_question (kept first)
        "n2:llmq": "unparsable_llm_output",
        "n3:llmq": "llm_error",
        "n4:llmq": "empty_query",
        "n5:llmq": "positive_missing_from_corpus",
        "n6:llmq": "too_few_negatives",
        "lexical:mini:t9:0": "failed_lexical_filter",  # rank 21 > 20
        "lexical:mini:t10:0": "failed_lexical_filter",  # not retrieved
    }
    assert next(d for d in result.drops if d.query_id == "n3:llmq").detail == "HTTP 500"
    rows = {row["query_id"]: row for row in result.rows}
    assert sorted(rows) == ["lexical:mini:t8:0", "n1:llmq", "n7:llmq", "p1:t1:question"]
    llmq = rows["n1:llmq"]
    assert [p["docid"] for p in llmq["negative_passages"]] == ["t2", "t3"]  # the positive never a negative
    assert llmq["positive_passages"] == [{"docid": "t1", "title": "", "text": CORPUS["t1"]}]
    assert [p["docid"] for p in rows["n7:llmq"]["negative_passages"]] == ["t7"]  # unknown id dropped
    lexical = [p["docid"] for p in rows["lexical:mini:t8:0"]["negative_passages"]]
    window = [f"t{i}" for i in range(39, 59)]  # BM25 ranks 31-50 of the stored list
    assert len(lexical) == 12 and set(lexical[:10]) <= set(window) and lexical[10:] == ["t9", "t10"]
    assert "t8" not in lexical
    again = Assembler(AssemblyConfig(seed=3), {KEY: corpus}).assemble(list(reversed(records())))
    assert [r["negative_passages"] for r in again.rows] == [r["negative_passages"] for r in result.rows]
    other = Assembler(AssemblyConfig(seed=4), {KEY: corpus}).assemble(records())
    assert next(r for r in other.rows if r["query_type"] == "lexical") != rows["lexical:mini:t8:0"]
    stats = result.stats
    assert stats["by_type"]["llmq"]["kept"] == 2 and stats["by_type"]["llmq"]["avg_negatives"] == 1.5
    assert stats["by_type"]["all"]["kept"] == 4 and stats["by_type"]["all"]["dropped"]["failed_lexical_filter"] == 2
    assert stats["by_source"]["MATH"] == {"llmq": 2, "cot": 0, "question": 1, "lexical": 1, "all": 4}
    assert stats["negatives_missing_from_corpus"] == 1
    assert "| MATH | 2 | 0 | 1 | 1 | 4 |" in stats_markdown(stats)


def test_false_negatives_caps_statement_text_and_min_negatives(corpus: Corpus) -> None:
    config = AssemblyConfig(query_types=("cot", "llmq"), min_negatives=2, max_negatives=2, passage_text="statement")
    result = Assembler(config, {KEY: corpus}).assemble(records())
    rows = {row["query_id"]: row for row in result.rows}
    # Without q_question the q_CoT stays; t4 is relevant to its problem, so only t2 remains -> too few.
    assert "n1:cot" not in rows and {d.query_id: d.reason for d in result.drops}["n1:cot"] == "too_few_negatives"
    assert [p["docid"] for p in rows["n1:llmq"]["negative_passages"]] == ["t2", "t3"]
    assert rows["n1:llmq"]["positive_passages"][0]["text"] == "Theorem 1 statement."
    assert all(r["query_type"] in ("cot", "llmq") for r in result.rows)


def test_backfill_from_bm25(corpus: Corpus) -> None:
    calls: list[tuple[str, ...]] = []

    def fake_bm25(key: tuple[str, str], queries: list[str], depth: int) -> list[list[str]]:
        calls.append(tuple(queries))
        return [["t1", "t4", "t30", "t31", "t32"] for _ in queries]

    config = AssemblyConfig(query_types=("llmq",), backfill="bm25", backfill_to=4)
    result = Assembler(config, {KEY: corpus}, fake_bm25).assemble(records())
    rows = {row["query_id"]: row for row in result.rows}
    assert [p["docid"] for p in rows["n1:llmq"]["negative_passages"]] == ["t2", "t3", "t4", "t30"]
    assert [p["docid"] for p in rows["n6:llmq"]["negative_passages"]] == ["t1", "t4", "t30", "t31"]
    assert len(calls) == 1


def test_build_main_writes_a_tevatron_set_that_datasets_loads(tmp_path: Path) -> None:
    corpus_file = tmp_path / "corpus.jsonl"
    corpus_file.write_text("".join(json.dumps({"id": k, "content": v}) + "\n" for k, v in CORPUS.items()))
    queries_dir = tmp_path / "queries"
    items = [QueryRecord(**{**r.to_dict(), "corpus": {"source": str(corpus_file), "split": "mini"}}) for r in records()]
    for query_type in ("llmq", "cot", "question", "lexical"):
        write_records(queries_file(queries_dir, query_type), [r for r in items if r.query_type == query_type])
    output = tmp_path / "train" / "set.jsonl"
    argv = ["--queries_dir", str(queries_dir), "--output", str(output), "--seed", "1", "--quiet"]
    assert build_main(argv) == 2  # bad input: no _SUCCESS marker, generate_queries did not finish
    (queries_dir / "_SUCCESS").write_text("")
    assert build_main(argv) == 0
    rows = list(read_jsonl(output))
    assert [r["query_id"] for r in rows] == ["n1:llmq", "n7:llmq", "p1:t1:question", "lexical:mini:t8:0"]
    drops = list(read_jsonl(output.with_name("set.drops.jsonl")))
    assert len(drops) == 8 and {d["reason"] for d in drops} >= {"duplicate", "failed_lexical_filter"}
    stats = json.loads(output.with_name("set.stats.json").read_text())
    assert stats["by_type"]["all"]["kept"] == 4 and stats["config"]["seed"] == 1
    assert output.with_name("set.stats.md").read_text().startswith("# Training set statistics")
    assert json.loads(output.with_name("set.config.json").read_text())["settings"]["seed"] == 1
    first = output.read_bytes()
    assert build_main(argv) == 0 and output.read_bytes() == first  # deterministic given --seed
    empty = tmp_path / "empty.jsonl"
    strict = ["--queries_dir", str(queries_dir), "--output", str(empty), "--query_types", "lexical"]
    assert build_main([*strict, "--lexical_top_k", "1", "--quiet"]) == 1  # nothing survives: an error
    assert len(list(read_jsonl(tmp_path / "empty.drops.jsonl"))) == 3 and empty.read_text() == ""
    replay = tmp_path / "replay.jsonl"
    assert build_main(["--config", str(output.with_name("set.config.json")), "--output", str(replay)]) == 0
    assert replay.read_bytes() == first  # an earlier run's config reproduces it

    import datasets

    loaded = datasets.load_dataset("json", data_files=str(output), split="train")
    assert loaded.num_rows == 4
    assert {"query_id", "query", "positive_passages", "negative_passages"} <= set(loaded.column_names)
    assert loaded[0]["positive_passages"][0].keys() >= {"docid", "title", "text"}
    assert all(len(r["negative_passages"]) >= 1 for r in loaded)


def test_records_round_trip_and_reject_unknown_fields(tmp_path: Path) -> None:
    path = tmp_path / "queries_llmq.jsonl"
    write_records(path, records()[:2])
    assert [r.query_id for r in read_records(path)] == ["n1:cot", "n1:llmq"]
    data = records()[0].to_dict() | {"surprise": 1}
    with pytest.raises(ValueError, match="unknown fields"):
        QueryRecord.from_dict(data)
    with pytest.raises(ValueError, match="unknown status"):
        record("x", "llmq", "q", "t1", status="weird")


@pytest.mark.parametrize(
    "field, value",
    [("negative_ids", "t2"), ("negative_ids", [2]), ("relevant_ids", None), ("query", 3), ("bm25_rank", "1"),
     ("bm25_rank", True), ("positive_id", ["t1"])],
)  # fmt: skip
def test_records_with_the_wrong_types_are_refused_naming_the_field(field: str, value: object) -> None:
    """A string where a list of ids belongs would otherwise be read as characters and silently dropped."""
    data = records()[0].to_dict() | {field: value}
    with pytest.raises(ValueError, match=f"queries.jsonl:3: record .*{field} must be"):
        QueryRecord.from_dict(data, where="queries.jsonl:3")
