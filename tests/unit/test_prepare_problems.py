"""Stage 0 (``run_src.prepare_problems``) through the local-directory path, on the 1,000 MATH training
problems beside the repository (``../shared/data/math``), and its hand-off to stage 2's loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.answers.extraction import extract_boxed
from run_src.mcts.problems import load_problems
from run_src.prepare_problems import main, problem_id
from tests.conftest import REPO_ROOT

MATH_DIR = REPO_ROOT.parent / "shared" / "data" / "math"


@pytest.fixture(scope="module")
def math_dir() -> Path:
    if not (MATH_DIR / "math_train_1000.json").is_file():
        pytest.skip(f"shared MATH data not found at {MATH_DIR}")
    return MATH_DIR


def test_math_from_a_local_directory_is_shuffled_with_ids_and_gold_answers(math_dir: Path, tmp_path: Path) -> None:
    source = json.loads((math_dir / "math_train_1000.json").read_text(encoding="utf-8"))
    argv = ["--dataset", "MATH", "--source", str(math_dir), "--output_dir", str(tmp_path / "problems"), "--seed", "7"]
    assert main(argv) == 0
    path = tmp_path / "problems" / "MATH" / "shuffled_train.json"
    items = json.loads(path.read_text(encoding="utf-8"))
    with_box = [row for row in source if extract_boxed(row["solution"])]
    assert len(items) == len({row["problem"] for row in with_box}) >= 990
    assert [item["problem"] for item in items] != [row["problem"] for row in with_box][: len(items)]  # shuffled
    by_problem = {row["problem"]: row for row in source}
    for item in items[:50]:
        original = by_problem[item["problem"]]
        assert item["gold_answer"] == extract_boxed(original["solution"])
        assert item["id"] == problem_id("MATH", item["problem"]) and item["type"] == original["type"]
    record = json.loads((path.with_name("shuffled_train.config.json")).read_text())
    assert record["settings"]["seed"] == 7 and record["derived"]["problems"] == len(items)

    # Stage 2 reads the file as it is: dataset ids and gold answers carry over.
    problems = load_problems("MATH", str(tmp_path / "problems"), "shuffled_train", None).problems
    assert [p.source_id for p in problems] == [i["id"] for i in items]
    assert [p.gold_answer for p in problems[:20]] == [i["gold_answer"] for i in items[:20]]

    # The same seed gives the same file; another seed into the same name is refused.
    first = path.read_bytes()
    assert main(argv) == 0 and path.read_bytes() == first
    assert main([*argv[:-1], "8"]) == 2


def test_numina_filter_keeps_the_papers_sources_with_boxed_answers(tmp_path: Path) -> None:
    rows = [
        {"source": "olympiads", "problem": "P1", "solution": "so \\boxed{3}"},
        {"source": "synthetic_math", "problem": "P2", "solution": "\\boxed{4}"},  # not a paper source
        {"source": "amc_aime", "problem": "P3", "solution": "no box"},
        {"source": "cn_k12", "problem": "P1", "solution": "\\boxed{3}"},  # repeated problem text
        {"source": "aops_forum", "problem": "P5", "solution": "\\boxed{x+1}"},
    ]
    (tmp_path / "numina.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["--dataset", "NUMINA_MATH", "--source", str(tmp_path / "numina.jsonl"), "--output_dir", str(tmp_path / "o")]
    assert main(argv) == 0
    out = tmp_path / "o" / "NUMINA_MATH" / "filtered_numina_math_10000.json"
    items = json.loads(out.read_text())
    assert sorted(i["problem"] for i in items) == ["P1", "P5"] and {i["source"] for i in items} <= {
        "olympiads",
        "aops_forum",
    }
    dropped = json.loads(out.with_name("filtered_numina_math_10000.config.json").read_text())["derived"]["dropped"]
    assert dropped == {"no_boxed_answer": 1, "other_source": 1, "repeated_problem": 1}
    with pytest.raises(SystemExit):  # a missing source fails before any work
        main(["--dataset", "NUMINA_MATH", "--source", str(tmp_path / "nowhere"), "--output_dir", "o"])
