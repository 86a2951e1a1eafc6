"""CHAMP loading and its BRIGHT-mirror export (reads the installed ``champ-dataset`` wheel)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.embedded import champ
from models.embedded.champ import ChampConcept, ChampData, ChampProblem, export_champ_mirror, load_champ
from models.io_utils import read_jsonl

BRIGHT_EXAMPLE_FIELDS = {"id", "query", "reasoning", "gold_ids", "gold_ids_long", "excluded_ids", "gold_answer"}


@pytest.fixture(scope="module")
def data() -> ChampData:
    return load_champ()


@pytest.fixture()
def mirror(tmp_path: Path, data: ChampData) -> Path:
    return export_champ_mirror(tmp_path / "bright_mirror", data=data)


def test_counts_match_the_published_dataset(data: ChampData) -> None:
    stats = data.stats()
    assert stats["problems"] == 270
    assert stats["concepts"] == 89
    assert stats["linked_problems"] == 223
    assert stats["links"] == 382
    # 382 / 270 = 1.41 is the mean over all problems; over linked problems it is 382 / 223 = 1.71.
    assert stats["mean_links_per_problem"] == pytest.approx(1.41, abs=0.005)
    assert stats["mean_links_per_linked_problem"] == pytest.approx(1.71, abs=0.005)
    assert stats["used_concepts"] == 89


def test_concept_links_are_unique_known_concepts(data: ChampData) -> None:
    known = {c.concept_id for c in data.concepts}
    for problem in data.problems:
        assert len(problem.concept_ids) == len(set(problem.concept_ids)), problem.problem_id
        assert set(problem.concept_ids) <= known, problem.problem_id
        assert all(cid.startswith("C_") for cid in problem.concept_ids)


def test_known_records(data: ChampData) -> None:
    assert data.problem("P_Combinatorics_13") == ChampProblem(
        problem_id="P_Combinatorics_13",
        text=(
            "Of 3n+1 objects, n are indistinguishable, and the remaining ones are distinct. "
            "In how many ways can we choose n objects, as an expression of n?"
        ),
        answer="4^n",
        category="Combinatorics",
        concept_ids=["C_comb_def", "C_comb_sum", "C_comb_binom", "C_comb_complement"],
    )
    # A problem whose ch_list holds only hints: no gold concept, not scorable.
    assert data.problem("P_Combinatorics_9") == ChampProblem(
        problem_id="P_Combinatorics_9",
        text=(
            "Consider all 2^n−1 nonempty subsets of the set {1, 2,..., n}. For every such subset, we find "
            "the product of the reciprocals of each of its elements. Find the sum of all these products, "
            "as an expression of n."
        ),
        answer="n",
        category="Combinatorics",
        concept_ids=[],
    )
    fermat = data.concept("C_Fermat_little")
    assert fermat == ChampConcept(
        concept_id="C_Fermat_little",
        text="Let a be a positive integer and p be a prime. Then a^p≡a mod p.",
        category="Number-Theory",
        name="Fermat's little theorem",
    )
    assert (
        fermat.document_text
        == "Fermat's little theorem: Let a be a positive integer and p be a prime. Then a^p≡a mod p."
    )
    assert data.concept("C_div").document_text == "If d | a and d | b, then d | ax+by, d | a + b and d | a-b."


def test_unknown_ids_raise_key_error(data: ChampData) -> None:
    with pytest.raises(KeyError, match="P_nope"):
        data.problem("P_nope")
    with pytest.raises(KeyError, match="C_nope"):
        data.concept("C_nope")


def test_export_round_trips_through_read_jsonl(mirror: Path, data: ChampData) -> None:
    examples = list(read_jsonl(mirror / "examples" / "champ.jsonl"))
    documents = list(read_jsonl(mirror / "documents" / "champ.jsonl"))
    assert len(examples) == 270
    assert len(documents) == 89
    assert all(set(row) == BRIGHT_EXAMPLE_FIELDS | {"category"} for row in examples)
    assert all(set(row) == {"id", "content"} for row in documents)

    doc_ids = {row["id"] for row in documents}
    assert len(doc_ids) == 89
    assert all(set(row["gold_ids"]) <= doc_ids for row in examples)
    assert sum(1 for row in examples if row["gold_ids"]) == 223
    assert all(
        row["gold_ids_long"] == ["N/A"] and row["excluded_ids"] == [] and row["reasoning"] == "" for row in examples
    )

    by_id = {row["id"]: row for row in examples}
    assert by_id["P_Combinatorics_13"] == {
        "id": "P_Combinatorics_13",
        "query": data.problem("P_Combinatorics_13").text,
        "reasoning": "",
        "gold_ids": ["C_comb_def", "C_comb_sum", "C_comb_binom", "C_comb_complement"],
        "gold_ids_long": ["N/A"],
        "excluded_ids": [],
        "gold_answer": "4^n",
        "category": "Combinatorics",
    }
    assert by_id["P_Combinatorics_9"]["gold_ids"] == []
    contents = {row["id"]: row["content"] for row in documents}
    assert contents["C_Fermat_little"] == data.concept("C_Fermat_little").document_text

    marker = json.loads((mirror / champ.MARKER_NAME).read_text(encoding="utf-8"))
    assert set(marker["files"]) == {"examples/champ.jsonl", "documents/champ.jsonl"}


def test_second_export_is_a_no_op(mirror: Path, data: ChampData, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [mirror / "examples" / "champ.jsonl", mirror / "documents" / "champ.jsonl", mirror / champ.MARKER_NAME]
    before = {f: f.stat().st_mtime_ns for f in files}

    def refuse_write(*args: object, **kwargs: object) -> None:
        raise AssertionError("an up-to-date export must not write")

    monkeypatch.setattr(champ, "atomic_write_bytes", refuse_write)
    monkeypatch.setattr(champ, "atomic_write_json", refuse_write)
    assert export_champ_mirror(mirror, data=data) == mirror
    assert {f: f.stat().st_mtime_ns for f in files} == before


def test_tampered_export_is_rewritten(mirror: Path, data: ChampData) -> None:
    documents = mirror / "documents" / "champ.jsonl"
    original = documents.read_bytes()
    documents.write_text('{"id": "C_x", "content": "tampered"}\n', encoding="utf-8")
    export_champ_mirror(mirror, data=data)
    assert documents.read_bytes() == original
