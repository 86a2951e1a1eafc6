"""The stage contract (:mod:`models.stage`) and every stage's use of it: ``--config`` files under
command-line flags, reruns refused when a non-informational setting changed (naming it) and accepted when
only informational ones did, and no flag that no code reads."""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
from pathlib import Path

import pytest

from models.stage import (
    SettingsChanged,
    StageError,
    StageRecord,
    check_rerun,
    differences,
    parse_flags,
)
from tests.conftest import REPO_ROOT

# ------------------------------------------------------------------------------------------------ the module


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="probe")
    parser.add_argument("--config")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--name", default="")
    parser.add_argument("--flag", action="store_true")
    parser.add_argument("--opt", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--items", nargs="+", default=["a"])
    parser.add_argument("--pair", action="append", default=[])
    parser.add_argument("--mode", choices=["x", "y"], default="x")
    return parser


def test_config_values_come_first_and_command_line_flags_win(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"k": 3, "name": "file", "flag": True, "opt": False, "items": ["p", "q"],
                                "pair": ["a=1", "b=2"], "_comment": "ignored"}))  # fmt: skip
    args = parse_flags(_parser(), ["--config", str(path)])
    assert (args.k, args.name, args.flag, args.opt, args.items, args.pair) == (3, "file", True, False, ["p", "q"],
                                                                               ["a=1", "b=2"])  # fmt: skip
    args = parse_flags(_parser(), ["--config", str(path), "--k", "7", "--items", "z", "--pair", "c=3", "--opt"])
    assert (args.k, args.items, args.pair, args.opt, args.name) == (7, ["z"], ["c=3"], True, "file")
    # A record a stage wrote is a config file too: its settings are the flags.
    record = StageRecord("probe", {"k": 5, "mode": "y"}, informational=frozenset({"mode"}))
    record.write(tmp_path / "record.json")
    assert parse_flags(_parser(), ["--config", str(tmp_path / "record.json")]).k == 5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"kk": 1}, "unknown keys ['kk']"),
        ({"mode": "z"}, "invalid choice"),
        ({"flag": "yes"}, "true or false"),
        ([1], "object"),
    ],
)
def test_bad_config_files_fail_like_bad_flags(
    tmp_path: Path, content: object, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(content))
    with pytest.raises(SystemExit) as exit_info:
        parse_flags(_parser(), ["--config", str(path)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_reruns_compare_every_setting_but_the_informational_ones(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    assert check_rerun(path, StageRecord("s", {"a": 1, "workers": 2}), "fresh") is False  # nothing stored yet
    StageRecord("s", {"a": 1, "workers": 2}, informational=frozenset({"workers"}), identity={"fp": "x"}).write(path)
    same = StageRecord("s", {"a": 1, "workers": 8}, informational=frozenset({"workers"}), identity={"fp": "x"})
    assert check_rerun(path, same, "fresh") is True
    changed = StageRecord(
        "s", {"a": 2, "workers": 2, "new": 0}, informational=frozenset({"workers"}), identity={"fp": "y"}
    )
    with pytest.raises(SettingsChanged) as caught:
        check_rerun(path, changed, "use --run_name NEW")
    text = str(caught.value)
    assert "--a: stored 1, now 2" in text and "--new: stored null, now 0" in text and "fp: stored" in text
    assert text.endswith("use --run_name NEW") and "workers" not in text
    assert [key for key, _, _ in differences(json.loads(path.read_text()), changed)] == ["a", "identity.fp", "new"]
    with pytest.raises(SettingsChanged, match="belongs to stage 's'"):
        check_rerun(path, StageRecord("other", {"a": 1}), "fresh")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(StageError, match="not a readable stage record"):
        check_rerun(tmp_path / "bad.json", same, "fresh")
    with pytest.raises(ValueError, match="not settings"):
        StageRecord("s", {"a": 1}, informational=frozenset({"b"}))


# ------------------------------------------------------------------------------------------------ every flag is read

STAGES = (
    "encode_corpus",
    "serve_retriever",
    "run_parallel_workers",
    "grade_answers",
    "generate_queries",
    "build_training_data",
    "train_retriever",
    "train_reranker",
    "merge_lora",
    "evaluate_bright",
    "rerank",
    "evaluate_rarb",
    "make_tables",
    "demo",
)
# Flags a stage accepts only so that the paper's own command lines run unchanged, each with the reason.
# Every other flag must be read by some code.
ALIASES = {
    "run_parallel_workers": {"disable_a4": "the paper's command passes it; rStar's A4 is not implemented, always off"},
}


def stage_parser(stage: str) -> argparse.ArgumentParser:
    if stage in ("train_retriever", "train_reranker"):
        from transformers import HfArgumentParser

        from models.training.arguments import RERANKER_ARGUMENT_CLASSES, RETRIEVER_ARGUMENT_CLASSES

        return HfArgumentParser(RETRIEVER_ARGUMENT_CLASSES if stage == "train_retriever" else RERANKER_ARGUMENT_CLASSES)
    build = importlib.import_module(f"run_src.{stage}").build_parser
    if inspect.signature(build).parameters:
        from models.settings import load_settings

        return build(load_settings())
    return build()


def _own_training_fields(stage: str) -> set[str]:
    """Fields our training argument classes declare (HF's TrainingArguments fields are read by transformers)."""
    from transformers import TrainingArguments

    from models.training.arguments import RERANKER_ARGUMENT_CLASSES, RETRIEVER_ARGUMENT_CLASSES

    classes = RETRIEVER_ARGUMENT_CLASSES if stage == "train_retriever" else RERANKER_ARGUMENT_CLASSES
    hf = set(TrainingArguments.__dataclass_fields__)
    return {name for cls in classes for name in cls.__dataclass_fields__ if name not in hf}


def _attribute_reads() -> set[str]:
    """Every ``x.<name>`` read and every ``getattr(x, "<name>")`` in the project's source (tests excluded)."""
    names: set[str] = set()
    for root in ("models", "run_src"):
        for path in (REPO_ROOT / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                    names.add(node.attr)
                elif (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "id", None) == "getattr"
                    and len(node.args) > 1
                    and isinstance(node.args[1], ast.Constant)
                    and isinstance(node.args[1].value, str)
                ):
                    names.add(node.args[1].value)
    return names


READS = _attribute_reads()


@pytest.mark.parametrize("stage", STAGES)
def test_every_flag_of_every_stage_is_read_by_some_code(stage: str) -> None:
    from models.retrieval.encoder_flags import EncoderFlags

    parser = stage_parser(stage)
    dests = {a.dest for a in parser._actions if a.option_strings and a.dest not in ("help", "config")}
    if stage.startswith("train_"):
        dests &= _own_training_fields(stage)
    encoder_fields = set(EncoderFlags.__dataclass_fields__)
    unread = []
    for dest in sorted(dests - set(ALIASES.get(stage, {}))):
        field = dest.removeprefix("dense_") if dest.removeprefix("dense_") in encoder_fields else dest
        if field not in READS:
            unread.append(dest)
    assert unread == [], f"{stage}: flags that no code reads: {unread}"
    assert dests >= set(ALIASES.get(stage, {})), "an alias that is no flag any more"


def test_the_flag_check_finds_an_unread_flag() -> None:
    assert "mcts_discount_factor" in READS and "bool_goldanswer_reward" in READS
    assert "an_unread_flag_name" not in READS


# ------------------------------------------------------------------------------------------------ reruns, per stage


def _make_tables_case(tmp: Path) -> tuple[object, list[str], list[str], list[str], str]:
    from run_src import make_tables

    results = tmp / "results" / "bm25" / "original" / "biology" / "results.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"NDCG@10": 0.2, "Recall@100": 0.5}))
    argv = ["--results_root", str(tmp / "results"), "--output_dir", str(tmp / "tables")]
    return make_tables.main, argv, ["--table", "1"], ["--overwrite"], "--table"


def _grade_case(tmp: Path) -> tuple[object, list[str], list[str], list[str], str]:
    from run_src import grade_answers

    source = tmp / "preds.jsonl"
    source.write_text(json.dumps({"id": "a", "prediction": "\\boxed{2}", "gold": "2"}) + "\n")
    argv = ["--input", str(source), "--output", str(tmp / "graded.jsonl"), "--quiet"]
    return grade_answers.main, argv, ["--timeout_s", "3"], ["--num_workers", "2"], "--timeout_s"


def _build_case(tmp: Path) -> tuple[object, list[str], list[str], list[str], str]:
    from run_src.build_training_data import main
    from run_src.query_synthesis.records import QueryRecord, queries_file, write_records
    from tests.mcts_run_builder import write_corpus

    corpus = write_corpus(tmp / "corpus.jsonl")
    record = QueryRecord(
        query_id="p1:t1:question", query_type="question", query="What is the sum of the roots?", status="ok",
        problem_id="MATH:p1", positive_id="t1", negative_ids=["t2", "t3"], relevant_ids=["t1"],
        corpus={"source": str(corpus), "split": "mini"}, source="MATH",
    )  # fmt: skip
    queries = tmp / "queries"
    write_records(queries_file(queries, "question"), [record])
    (queries / "_SUCCESS").write_text("{}")
    argv = ["--queries_dir", str(queries), "--output", str(tmp / "train.jsonl")]
    return main, argv, ["--seed", "5"], ["--quiet"], "--seed"


def _evaluate_case(tmp: Path) -> tuple[object, list[str], list[str], list[str], str]:
    from run_src import evaluate_bright

    mirror = tmp / "mirror" / "examples"
    mirror.mkdir(parents=True)
    examples = [{"id": f"q{i}", "query": f"query {i}", "reasoning": "", "gold_ids": [f"d{i}"], "gold_ids_long": [],
                 "excluded_ids": ["N/A"], "gold_answer": ""} for i in range(3)]  # fmt: skip
    (mirror / "biology.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    run = tmp / "run.json"
    run.write_text(json.dumps({f"q{i}": {f"d{i}": 1.0, "d9": 0.5} for i in range(3)}))
    argv = ["--task", "biology", "--scores", str(run), "--bright_dir", str(tmp / "mirror"), "--output_dir", str(tmp / "o")]
    return evaluate_bright.main, argv, ["--top_k", "1"], ["--missing_queries", "zero"], "--top_k"


def _generate_case(tmp: Path) -> tuple[object, list[str], list[str], list[str], str]:
    from run_src.generate_queries import main
    from tests.mcts_run_builder import Retrieval, RunDirBuilder, Trajectory, write_corpus

    corpus = write_corpus(tmp / "corpus.jsonl")
    run = RunDirBuilder(tmp / "run", corpus=str(corpus), corpus_split="mini")
    run.add_problem(0, "p0", "What is 1+1?", "2", [
        Trajectory(["We add.", Retrieval("t1", qg_node_id=3, rejected=["t2"])], answer="so \\boxed{2}", value=1),
    ])  # fmt: skip
    argv = ["--run_dirs", str(tmp / "run"), "--output_dir", str(tmp / "queries"), "--query_types", "cot", "question",
            "--quiet"]  # fmt: skip
    return main, argv, ["--trajectory_filter", "all"], ["--grade_workers", "2"], "--trajectory_filter"


@pytest.mark.parametrize(
    "case",
    [_make_tables_case, _grade_case, _build_case, _evaluate_case, _generate_case],
    ids=["make_tables", "grade_answers", "build_training_data", "evaluate_bright", "generate_queries"],
)
def test_a_rerun_with_a_changed_setting_is_refused_and_an_informational_change_is_not(
    case: object, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    main, argv, changed, informational, named = case(tmp_path)  # type: ignore[operator]
    assert main(argv) == 0
    caplog.clear()
    assert main([*argv, *changed]) == 2
    assert f"{named}: stored" in caplog.text and "Rerun with the stored settings" in caplog.text
    assert main([*argv, *informational]) == 0
