"""Trajectory and retrieval-node selection (spec training.md §3.3) on hand-written run directories:
correctness recomputed by our grader, the three filters, several retrievals per trajectory, merging of shared
nodes, self-reflection rejects as negatives (never positives), and the q_CoT / q_question records."""

from __future__ import annotations

from pathlib import Path

import pytest

from run_src.query_synthesis.negatives import JudgmentIndex, backfill, lexical_negatives, reasoning_negatives
from run_src.query_synthesis.run_reader import Judgment, ReadReport, iter_problems, read_run_info
from run_src.query_synthesis.samples import SynthesisMix, cot_records, question_records
from run_src.query_synthesis.trajectories import (
    AnswerGrader,
    SelectionConfig,
    parse_retrieval_steps,
    select_nodes,
)
from tests.mcts_run_builder import Retrieval, RunDirBuilder, Trajectory

Q0 = "What is 2 + 2 written as a single number?"
Q1 = "How many days are in a week?"


def build_run(root: Path) -> Path:
    """Problem 7 (gold 4): four trajectories; problem 10012 (gold 7): one; problem 3: unfinished."""
    run = RunDirBuilder(root, width=5)
    r1 = Retrieval("t1", qg_node_id=3, rejected=["t5", "t6"])
    r2 = Retrieval("t2", qg_node_id=7, rejected=["t6", "t7", "t1"])  # t1 is relevant elsewhere: not a negative
    r3 = Retrieval("t3", qg_node_id=9, rejected=["t9"])
    run.add_problem(
        7,
        "math_7",
        Q0,
        "4",
        [
            # correct, two retrievals
            Trajectory(["Add the numbers.", r1, "Both are two.", r2], answer="so the sum is \\boxed{4}.", value=1),
            # stored value 1 but wrong: our grader says 5 != 4
            Trajectory(["Add the numbers.", r1, "Add again.", r3], answer="the answer is \\boxed{5}", value=1),
            # stored 0.2 but right: 2+2 equals 4 symbolically; shares its first node with the first trajectory
            Trajectory(["Add the numbers.", r1], terminal_ost="Hence \\boxed{2+2}.", value=0.2),
            # correct but without retrieval: never used
            Trajectory(["Count."], answer="\\boxed{4}", value=1),
        ],
    )
    rejected_positive = Retrieval("t8", qg_node_id=5, positive_label=0)  # a label-0 theorem in an RT entry
    run.add_problem(
        10012,
        "math_10012",
        Q1,
        "7",
        [
            Trajectory(
                [Retrieval("t4", qg_node_id=2, rejected=["t1", "t8"]), "A week has seven days.", rejected_positive],
                answer="\\boxed{7}",
            )
        ],
    )
    run.add_problem(3, "math_3", "Unfinished?", "1", [Trajectory([r1], answer="\\boxed{1}", value=1)], finished=False)
    return run.root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run(tmp_path_factory.mktemp("mcts") / "MATH" / "SmolLM2" / "run1")


@pytest.fixture(scope="module")
def grader() -> AnswerGrader:
    with AnswerGrader(num_workers=1, timeout_s=20.0) as shared:
        yield shared


def select(run_dir: Path, grader: AnswerGrader, **kwargs: object):
    run = read_run_info(run_dir)
    report = ReadReport()
    nodes, selection = select_nodes(iter_problems(run, ("final",), report), SelectionConfig(**kwargs), grader)
    return nodes, selection, report


def test_correct_filter_recomputes_correctness_and_merges_shared_nodes(run_dir: Path, grader: AnswerGrader) -> None:
    nodes, report, read = select(run_dir, grader)
    assert (read.problems_finished, read.problems_unfinished, read.problems_unreadable) == (2, 1, 0)
    assert report.trajectories == 5 and report.trajectories_without_retrieval == 1
    assert report.trajectories_correct == 3  # 4, 2+2 and the 10012 answer; not the stored-1 "5"
    assert report.stored_correct_but_wrong == 1  # the "\boxed{5}" trajectory
    assert report.stored_wrong_but_correct == 2  # "\boxed{2+2}" (0.2) and problem 10012 (value null)
    assert report.trajectories_selected == 3
    assert report.retrieval_steps_merged == 1  # the 2+2 trajectory re-visits node t1
    assert report.retrieval_steps_rejected_positive == 1  # t8 is never a positive
    assert [(n.problem_id, n.theorem_id) for n in nodes] == [
        ("MATH:math_7", "t1"),
        ("MATH:math_7", "t2"),
        ("MATH:math_10012", "t4"),
    ]
    t1, t2, t4 = nodes
    assert t1.node_id == "MATH:math_7:3:t1" and t1.trajectories == ["final:0", "final:2"]
    assert t1.context == ["Add the numbers."]
    assert t2.context == ["Add the numbers.", "Summary of theorem t1.", "Both are two."]
    assert t2.cot_query == f"{Q0} Add the numbers. Summary of theorem t1. Both are two."
    # Negatives: rejects of the same retrieval call, in rank order; t1 is relevant for the problem so it is
    # dropped from t2's pool; every positive of the problem (t3 from the wrong trajectory too) is relevant.
    assert t1.negative_ids == ["t5", "t6"]
    assert t2.negative_ids == ["t6", "t7"]
    assert set(t1.relevant_ids) == {"t1", "t2", "t3"}
    # t8 is rejected for call 5 only; for t4 (call 2) it is a hard negative of another call, t1 is a negative
    # because problem 10012 never judged it relevant.
    assert t4.negative_ids == ["t1", "t8"]
    assert "t8" not in t4.relevant_ids


def test_all_and_self_reflection_filters(run_dir: Path, grader: AnswerGrader) -> None:
    nodes_all, report_all, _ = select(run_dir, grader, trajectory_filter="all")
    assert report_all.trajectories_selected == 4
    assert sorted(n.theorem_id for n in nodes_all) == ["t1", "t2", "t3", "t4"]
    t3 = next(n for n in nodes_all if n.theorem_id == "t3")
    assert t3.context == ["Add the numbers.", "Summary of theorem t1.", "Add again."]
    assert t3.negative_ids == ["t9"]
    nodes_sr, report_sr, _ = select(run_dir, grader, trajectory_filter="self_reflection_passed")
    assert report_sr.trajectories_selected == 4  # every trajectory with a retrieval has a label-1 positive
    assert {n.theorem_id for n in nodes_sr} == {"t1", "t2", "t3", "t4"}


def test_context_without_retrieved_summaries_and_question_scope(run_dir: Path, grader: AnswerGrader) -> None:
    nodes, _, _ = select(run_dir, grader, include_retrieved_in_context=False, negative_scope="question")
    t2 = next(n for n in nodes if n.theorem_id == "t2")
    assert t2.context == ["Add the numbers.", "Both are two."]
    # Question scope: the call's own rejects first, then the problem's other rejects (t9 from t3's call).
    assert t2.negative_ids == ["t6", "t7", "t5", "t9"]


def test_cot_and_question_records_deduplicate(run_dir: Path, grader: AnswerGrader) -> None:
    nodes, _, _ = select(run_dir, grader)
    cot = {r.query_id: r for r in cot_records(nodes)}
    assert set(cot) == {"MATH:math_7:3:t1:cot", "MATH:math_7:7:t2:cot", "MATH:math_10012:2:t4:cot"}
    assert cot["MATH:math_7:3:t1:cot"].query == f"{Q0} Add the numbers."
    assert cot["MATH:math_10012:2:t4:cot"].query == Q1  # no steps before the first query node
    questions = question_records([*nodes, *nodes], SynthesisMix(dedup_key={"question": "text"}))  # duplicates merge
    assert sorted((r.query_id, r.query) for r in questions) == [
        ("MATH:math_10012:t4:question", Q1),
        ("MATH:math_7:t1:question", Q0),
        ("MATH:math_7:t2:question", Q0),
    ]
    assert all(r.status == "ok" and r.source == "MATH" and r.dedup_key == "text" for r in questions)
    # The default (Table 9's equal q_CoT and q_question counts): one q_question per retrieval node.
    per_node = question_records(nodes)
    assert sorted(r.query_id for r in per_node) == sorted(f"{n.node_id}:question" for n in nodes)
    assert {r.dedup_key for r in per_node} == {"node"} and len(per_node) == len(cot)


def test_occurrence_key_makes_one_sample_per_trajectory_through_the_node(run_dir: Path, grader: AnswerGrader) -> None:
    nodes, _, _ = select(run_dir, grader)
    node = nodes[0]
    node.trajectories = ["final:0", "final:1", "final:2"]
    mix = SynthesisMix(dedup_key={"cot": "occurrence"})
    copies = [r for r in cot_records(nodes, mix) if r.node_ids == [node.node_id]]
    assert [r.query_id for r in copies] == [f"{node.node_id}:cot", f"{node.node_id}:cot:1", f"{node.node_id}:cot:2"]
    assert len({r.query for r in copies}) == 1 and {r.dedup_key for r in copies} == {"occurrence"}
    assert mix.copies(node, "cot") == 3 and SynthesisMix(samples_per_node={"llmq": 2}).copies(node, "llmq") == 6


@pytest.mark.parametrize(
    ("mix_args", "message"),
    [
        ({"samples_per_node": {"cot": 2}}, "fixed texts"),
        ({"samples_per_node": {"llmq": 0}}, ">= 1"),
        ({"dedup_key": {"lexical": "occurrence"}}, "theorems, not trajectories"),
        ({"dedup_key": {"llmq": "sometimes"}}, "keys"),
    ],
)
def test_bad_mix_is_refused_naming_the_flag(mix_args: dict[str, dict[str, object]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SynthesisMix(**mix_args)  # type: ignore[arg-type]


def test_unreadable_problem_is_skipped_and_reported(tmp_path: Path, grader: AnswerGrader) -> None:
    root = build_run(tmp_path / "run")
    (root / "answer_sheets" / "Question 00007 - Final Solutions.json").write_text("[{broken", encoding="utf-8")
    nodes, _, read = select(root, grader)
    assert read.problems_unreadable == 1 and "not valid JSON" in read.errors[0]
    assert [n.theorem_id for n in nodes] == ["t4"]


def test_run_info_errors_name_the_file_and_flag(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="args.json"):
        read_run_info(tmp_path)
    root = build_run(tmp_path / "run")
    (root / "args.json").write_text('{"dataset_name": "MATH"}', encoding="utf-8")
    with pytest.raises(ValueError, match="corpus.*--corpus"):
        read_run_info(root)
    assert read_run_info(root, corpus_source="hf", corpus_split="x").corpus_split == "x"


def test_parse_retrieval_steps_reads_qg_candidate_and_call_key(tmp_path: Path) -> None:
    from run_src.query_synthesis.run_reader import read_problem

    run = read_run_info(build_run(tmp_path / "run"))
    problem = read_problem(run, 7, "00007")
    steps = parse_retrieval_steps(problem.trajectories[0])
    assert [(s.key, s.theorem_id, s.qg_key) for s in steps] == [
        ("1_retrieval", "t1", "math_7_3"),
        ("2_retrieval", "t2", "math_7_7"),
    ]
    assert steps[0].qg_candidate.startswith("Theorem Name:") and steps[0].retriever == "bm25"


def test_negative_helpers() -> None:
    judgments = [
        Judgment("a", 0, "k1", 2, 1),
        Judgment("b", 1, "k1", 1, 2),
        Judgment("c", 0, "k1", None, 3),
        Judgment("b", 0, "k2", 1, 4),  # relevant in k1: never a negative
        Judgment("d", 0, "k2", 2, 5),
    ]
    index = JudgmentIndex.build(judgments)
    assert index.label("k1", "b") == 1 and index.label("k2", "b") == 0 and index.label(None, "b") is None
    assert reasoning_negatives(index, ["k2"], "x", index.relevant) == ["d"]
    assert reasoning_negatives(index, ["k1"], "a", index.relevant, scope="question") == ["c", "d"]
    import random

    bm25 = [f"r{i}" for i in range(1, 61)]
    sample = lexical_negatives(bm25, ["r35", "g", "z1"], "g", random.Random("0:q"), num_bm25=5, num_dense=10)
    assert set(sample[:5]) <= set(bm25[30:50]) and len(set(sample)) == len(sample)
    assert sample[5:] == [d for d in ["r35", "z1"] if d not in sample[:5]]
    again = lexical_negatives(bm25, ["r35", "g", "z1"], "g", random.Random("0:q"), num_bm25=5, num_dense=10)
    assert sample == again and "g" not in sample
    assert backfill(["a"], ["a", "g", "b", "c", "d"], "g", ["c"], 3) == ["a", "b", "d"]


def test_malformed_trace_skips_only_its_problem(tmp_path: Path, grader: AnswerGrader) -> None:
    import json

    root = build_run(tmp_path / "run")
    path = root / "answer_sheets" / "Question 00007 - Final Solutions.json"
    solutions = json.loads(path.read_text())
    solutions[0]["trace"]["0"]["ost_step"]["1_retrieval"] = ["summary only"]
    path.write_text(json.dumps(solutions))
    nodes, report, _ = select(root, grader)
    assert report.problems_malformed == 1 and report.problems == 1
    assert [n.theorem_id for n in nodes] == ["t4"]
