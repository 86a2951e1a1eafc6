"""Problem loaders (MATH, NuminaMath, BRIGHT TheoremQA, CHAMP, generic JSON) and slicing for job arrays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from run_src.mcts.problems import Problem, load_problems, parse_shard, select_problems

MATH_FILE = Path(__file__).resolve().parents[3] / "shared" / "data" / "math" / "math_train_1000.json"


def test_math_file_gold_answers_come_from_the_last_box() -> None:
    if not MATH_FILE.is_file():
        pytest.skip(f"shared MATH data not found at {MATH_FILE}")
    problems = load_problems("MATH", data_file=str(MATH_FILE))
    assert problems.total_items == 1000
    assert len(problems.problems) + sum(problems.skipped.values()) == 1000
    assert len(problems.problems) >= 995
    first = problems.problems[0]
    assert first.index == 0 and first.source_id == "0"
    assert first.solution is not None and f"\\boxed{{{first.gold_answer}}}" in first.solution.replace(" ", "")


def test_reference_layout_and_skips(tmp_path: Path) -> None:
    folder = tmp_path / "NUMINA_MATH"
    folder.mkdir()
    items = [
        {"problem": "1+1?", "solution": "so \\boxed{2}"},
        {"problem": "no box", "solution": "the answer is two"},
        {"problem": "3+3?", "solution": "\\boxed{5} then \\boxed{6}"},
    ]
    (folder / "filtered.json").write_text(json.dumps(items))
    loaded = load_problems("NUMINA_MATH", tmp_path, "filtered")
    assert [(p.index, p.gold_answer) for p in loaded.problems] == [(0, "2"), (2, "6")]
    assert loaded.skipped == {"no_gold_answer": 1}


def test_bright_theoremqa_uses_gold_answer_field_and_ids(tmp_path: Path) -> None:
    rows = [
        {"id": "TheoremQA_a.json", "problem": "P1", "solution": "unboxed", "gold_answer": "3.5"},
        {"id": "TheoremQA_b.json", "problem": "P2", "solution": "", "gold_answer": "True"},
    ]
    path = tmp_path / "test_all.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    loaded = load_problems("BRIGHT", data_file=str(path))
    assert [(p.source_id, p.gold_answer) for p in loaded.problems] == [("TheoremQA_a.json", "3.5"), ("TheoremQA_b.json", "True")]


def test_champ_comes_from_its_package(tmp_path: Path) -> None:
    loaded = load_problems("CHAMP", data_root=tmp_path)
    assert loaded.total_items == 270 and len(loaded.problems) == 270
    assert loaded.problems[0].source_id == "P_Combinatorics_1" and loaded.problems[0].gold_answer == "239"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"problem": "x"}', "JSON array"),
        ('[{"solution": "\\\\boxed{1}"}]', "no 'problem'"),
        ('[{"id": 1, "problem": "a", "gold_answer": "1"}, {"id": 1, "problem": "b", "gold_answer": "2"}]', "not unique"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_problems("JSON", data_file=str(path))


def test_missing_file_names_the_flags(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--data_root"):
        load_problems("MATH", tmp_path, "nope")


def _problems(n: int) -> list[Problem]:
    return [Problem(i, f"id{i}", f"p{i}", None, str(i)) for i in range(n)]


def test_slices_shards_and_id_lists_compose() -> None:
    problems = _problems(10)
    assert [p.index for p in select_problems(problems, 2, 7)] == [2, 3, 4, 5, 6]
    shards = [select_problems(problems, shard=(i, 3)) for i in range(3)]
    assert sorted(p.index for shard in shards for p in shard) == list(range(10))  # a partition
    assert [p.index for p in shards[1]] == [1, 4, 7]
    assert [p.index for p in select_problems(problems, 0, None, (0, 2), {"id2", "id3", "id4"})] == [2, 4]
    with pytest.raises(ValueError, match="not in the dataset"):
        select_problems(problems, problem_ids={"id99"})


@pytest.mark.parametrize("value", ["3", "a/b", "2/2", "-1/4", "0/0"])
def test_bad_shard_values(value: str) -> None:
    with pytest.raises(ValueError, match="--shard"):
        parse_shard(value)


def test_good_shard_value() -> None:
    assert parse_shard("3/8") == (3, 8)
