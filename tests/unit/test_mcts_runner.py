"""The MCTS runner end to end against a real BM25 retriever app and a generator that answers nonsense or fails.

The generator here is ``FakeGeneratorServer``: in ``ok`` mode it echoes the prompt ("reply i to: ...") —
garbage for every parser — and in ``error500`` mode it fails every request. These check the plumbing the
real-model integration test cannot force: determinism under concurrency, resume, crash isolation.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from models.retrieval.bm25 import BM25Index  # noqa: F401  (imported so a missing Lucene fails here, clearly)
from models.retrieval.corpus import load_corpus
from models.retrieval.retrievers import BM25Retriever
from models.serving.retriever_app import ServerLimits, create_app
from run_src.run_parallel_workers import EXIT_SOME_FAILED, main
from tests.fakes import FakeGeneratorServer
from tests.local_server import ThreadedAppServer


@pytest.fixture(scope="module")
def bm25_url(champ_mirror: Path):
    corpus = load_corpus(champ_mirror, "champ")
    with ThreadedAppServer(create_app(BM25Retriever.from_corpus(corpus), ServerLimits())) as server:
        yield server.url


def _argv(out: Path, generator_url: str, bm25_url: str, run_name: str, workers: int, *extra: str) -> list[str]:
    return [
        "--dataset_name", "CHAMP", "--model_ckpt", "fake-model", "--generator_urls", generator_url,
        "--retriever", "bm25", "--bm25_url", bm25_url, "--num_rollouts", "3", "--max_depth_allowed", "4",
        "--end_idx", "4", "--retrieval_selfreasoning", "--disable_a3", "--disable_a5",
        "--num_workers", str(workers), "--run_outputs_root", str(out), "--run_name", run_name,
        "--max_retries", "0", "--save_tree", *extra,
    ]  # fmt: skip


def _run_dir(out: Path, run_name: str) -> Path:
    return out / "CHAMP" / "fake-model" / run_name


def test_garbage_generator_run_is_well_formed_deterministic_and_resumable(tmp_path: Path, bm25_url: str) -> None:
    with FakeGeneratorServer("ok") as generator:
        assert main(_argv(tmp_path, generator.base_url, bm25_url, "one", 1)) == 0
        requests_first = generator.attempts
        assert main(_argv(tmp_path, generator.base_url, bm25_url, "four", 4)) == 0
        # Rerunning a finished run directory sends nothing and rewrites nothing.
        before = generator.attempts
        sheet = _run_dir(tmp_path, "four") / "answer_sheets" / "Question 0002 - Answer.json"
        mtime = sheet.stat().st_mtime_ns
        assert main(_argv(tmp_path, generator.base_url, bm25_url, "four", 4)) == 0
        assert generator.attempts == before and sheet.stat().st_mtime_ns == mtime
    assert requests_first > 0

    one, four = _run_dir(tmp_path, "one"), _run_dir(tmp_path, "four")
    record = json.loads((one / "args.json").read_text())
    args = record["settings"]
    assert record["derived"]["corpus_split"] == "champ" and args["end_idx"] == 4
    assert set(record["identity"]["prompt_versions"]) >= {"mcts_ost"}
    assert record["identity"]["problem_set"]["count"] == 4
    for index in range(4):
        stem = f"Question {index:04d}"
        sheet = json.loads((one / "answer_sheets" / f"{stem} - Answer.json").read_text())
        assert sheet["id"] == index and sheet["model"] == "fake-model" and sheet["prompt_version"]
        rollouts = json.loads((one / "answer_sheets" / f"{stem} - Rollout Solutions.json").read_text())
        assert [r["rollout_id"] for r in rollouts] == [0, 1, 2]
        assert all(r["question_id"] == sheet["source_id"] for r in rollouts)
        assert len(list((one / "answer_sheets").glob(f"{stem} - Rollout *.tree"))) == 3
        # Scheduling (1 vs 4 concurrent searches) does not change a byte of any output.
        for name in (f"answer_sheets/{stem} - Final Solutions.json", f"answer_sheets/{stem} - Rollout Solutions.json",
                     f"answer_sheets/{stem} - Answer.json", f"hard_negatives/{index:04d}.jsonl",
                     f"retriever_scores/{index:04d}.jsonl", f"trees/{index:04d}.json"):  # fmt: skip
            assert (one / name).read_bytes() == (four / name).read_bytes(), name
        for line in (one / "hard_negatives" / f"{index:04d}.jsonl").read_text().splitlines():
            record = json.loads(line)
            assert record["question_id"] == sheet["source_id"] and record["LLM_relevance_label"] in (0, 1)
            assert record["qg_key"].startswith(sheet["source_id"] + "_") and record["rank"] >= 1
        for line in (one / "retriever_scores" / f"{index:04d}.jsonl").read_text().splitlines():
            ((key, call),) = json.loads(line).items()
            # The score log goes to --retrieval_score_depth (100; the corpus has 89 concepts), sorted.
            assert key.startswith(sheet["source_id"] + "_") and len(call["scores"]) == 89
            assert list(call["scores"].values()) == sorted(call["scores"].values(), reverse=True)
    assert "Infinity" not in (one / "args.json").read_text()
    # Free-text query mode: every QG reply is a query, so retrieval really ran.
    calls = [line for path in (one / "retriever_scores").glob("*.jsonl") for line in path.read_text().splitlines()]
    assert calls


def test_a_corrupt_answer_sheet_is_moved_aside_and_searched_again(tmp_path: Path, bm25_url: str) -> None:
    with FakeGeneratorServer("ok") as generator:
        assert main(_argv(tmp_path, generator.base_url, bm25_url, "run", 2)) == 0
        run = _run_dir(tmp_path, "run")
        sheet = run / "answer_sheets" / "Question 0001 - Answer.json"
        good = sheet.read_bytes()
        sheet.write_bytes(good[: len(good) // 2])  # e.g. a disk that filled up mid-copy
        stale = run / "trees" / ".0003.json.abc.tmp"
        stale.write_text("{")
        os.utime(stale, (time.time() - 3600, time.time() - 3600))
        assert main(_argv(tmp_path, generator.base_url, bm25_url, "run", 2)) == 0
    assert sheet.read_bytes() == good  # searched again, to the same bytes (seeds per problem)
    (moved,) = (run / "corrupt").iterdir()
    assert moved.name.startswith("Question 0001 - Answer.json.") and moved.read_bytes() == good[: len(good) // 2]
    assert not stale.exists()


def test_failures_are_isolated_recorded_and_retried_on_rerun(tmp_path: Path, bm25_url: str) -> None:
    with FakeGeneratorServer("error500") as broken:
        assert main(_argv(tmp_path, broken.base_url, bm25_url, "r", 2)) == EXIT_SOME_FAILED
    run = _run_dir(tmp_path, "r")
    errors = sorted(p.name for p in (run / "errors").iterdir())
    assert errors == ["0000.json", "0001.json", "0002.json", "0003.json"]
    record = json.loads((run / "errors" / "0001.json").read_text())
    assert record["source_id"] and "LLMServiceError" in record["error"] and "Traceback" in record["traceback"]
    assert not list((run / "answer_sheets").glob("*Answer.json"))
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["failed"] == [0, 1, 2, 3] and summary["finished"] == 0

    with FakeGeneratorServer("ok") as generator:
        assert main(_argv(tmp_path, generator.base_url, bm25_url, "r", 2)) == 0
    assert not list((run / "errors").iterdir())
    assert len(list((run / "answer_sheets").glob("*Answer.json"))) == 4


def test_resume_with_changed_search_settings_is_refused(
    tmp_path: Path, bm25_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeGeneratorServer("ok") as generator:
        assert main([*_argv(tmp_path, generator.base_url, bm25_url, "s", 2), "--end_idx", "1"]) == 0
        code = main([*_argv(tmp_path, generator.base_url, bm25_url, "s", 2), "--end_idx", "1", "--num_rollouts", "5"])
    assert code == 2 and "--num_rollouts: stored 3, now 5" in caplog.text and "new --run_name" in caplog.text


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--shard", "4/4"], "--shard"), (["--threshold", "1.5"], "threshold"), (["--num_rollouts", "0"], "num_rollouts")],
)
def test_bad_flags_fail_before_any_work(
    tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*_argv(tmp_path, "http://127.0.0.1:9/v1", "http://127.0.0.1:9", "x", 1), *extra])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "CHAMP").exists()


def _json_problems(path: Path, ids: list[str]) -> Path:
    rows = [{"id": pid, "problem": f"Problem {pid}: how many apples are {n} plus 1 apples?", "gold_answer": str(n + 1)}
            for n, pid in enumerate(ids)]  # fmt: skip
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def _file_argv(out: Path, problems: Path, generator_url: str, bm25_url: str, *extra: str) -> list[str]:
    return [
        "--dataset_name", "JSON", "--data_file", str(problems), "--model_ckpt", "fake-model",
        "--generator_urls", generator_url, "--retriever", "bm25", "--bm25_url", bm25_url, "--num_rollouts", "2",
        "--max_depth_allowed", "3", "--num_workers", "2", "--run_outputs_root", str(out), "--run_name", "R",
        "--max_retries", "0", "--bool_goldanswer_reward", *extra,
    ]  # fmt: skip


def test_another_problem_file_into_the_same_run_name_is_refused(
    tmp_path: Path, bm25_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    file_a = _json_problems(tmp_path / "a.json", ["a1", "a2", "a3", "a4"])
    file_b = _json_problems(tmp_path / "b.json", ["b1", "b2", "b3", "b4"])
    run = tmp_path / "out" / "JSON" / "fake-model" / "R"
    with FakeGeneratorServer("ok") as generator:
        assert main(_file_argv(tmp_path / "out", file_a, generator.base_url, bm25_url)) == 0
        args_before = (run / "args.json").read_bytes()
        caplog.clear()
        assert main(_file_argv(tmp_path / "out", file_b, generator.base_url, bm25_url)) == 2
        assert "problem_set: stored" in caplog.text and '"a1"' in caplog.text and '"b1"' in caplog.text
        # ... and so is another reward setting, or another shard layout; nothing of the run is touched.
        assert (
            main(_file_argv(tmp_path / "out", file_a, generator.base_url, bm25_url, "--wrong_answer_reward", "0.2"))
            == 2
        )
        assert main(_file_argv(tmp_path / "out", file_a, generator.base_url, bm25_url, "--shard", "0/2")) == 2
        assert "shard_count: stored 1, now 2" in caplog.text
        # Informational settings (concurrency, the path of the same problems) resume: nothing to search.
        before = generator.attempts
        copy = tmp_path / "elsewhere.json"
        copy.write_bytes(file_a.read_bytes())
        assert main([*_file_argv(tmp_path / "out", copy, generator.base_url, bm25_url), "--num_workers", "1"]) == 0
        assert generator.attempts == before
    assert (run / "args.json").read_bytes() != b"" and json.loads(args_before)["identity"] == json.loads(
        (run / "args.json").read_bytes()
    )["identity"]
    sheets = sorted(json.loads(p.read_text())["source_id"] for p in (run / "answer_sheets").glob("*Answer.json"))
    assert sheets == ["a1", "a2", "a3", "a4"]


def test_two_shards_into_one_run_name_complete_the_set(tmp_path: Path, bm25_url: str) -> None:
    problems = _json_problems(tmp_path / "p.json", ["p1", "p2", "p3", "p4", "p5"])
    run = tmp_path / "out" / "JSON" / "fake-model" / "R"
    with FakeGeneratorServer("ok") as generator:
        assert main(_file_argv(tmp_path / "out", problems, generator.base_url, bm25_url, "--shard", "0/2")) == 0
        first = sorted(json.loads(p.read_text())["source_id"] for p in (run / "answer_sheets").glob("*Answer.json"))
        assert first == ["p1", "p3", "p5"]
        assert main(_file_argv(tmp_path / "out", problems, generator.base_url, bm25_url, "--shard", "1/2")) == 0
    sheets = sorted(json.loads(p.read_text())["source_id"] for p in (run / "answer_sheets").glob("*Answer.json"))
    assert sheets == ["p1", "p2", "p3", "p4", "p5"]


def test_discount_and_self_consistency_reach_the_search(tmp_path: Path, bm25_url: str) -> None:
    from models.settings import load_settings
    from run_src.run_parallel_workers import parse_args

    problems = _json_problems(tmp_path / "p.json", ["p1"])
    base = _file_argv(tmp_path / "out", problems, "http://127.0.0.1:9/v1", bm25_url)
    args = parse_args([*base, "--mcts_discount_factor", "0.5", "--reward", "gold"], load_settings())
    assert args.mcts_discount_factor == 0.5 and args.reward == "gold"
    with pytest.raises(SystemExit):  # the paper's flag means gold rewards: it contradicts self-consistency
        parse_args([*base, "--reward", "self_consistency"], load_settings())
    with FakeGeneratorServer("ok") as generator:
        argv = _file_argv(tmp_path / "sc", problems, generator.base_url, bm25_url)
        argv.remove("--bool_goldanswer_reward")
        assert main([*argv, "--reward", "self_consistency", "--mcts_discount_factor", "0.5"]) == 0
    record = json.loads((tmp_path / "sc" / "JSON" / "fake-model" / "R" / "args.json").read_text())
    assert record["settings"]["reward"] == "self_consistency" and record["settings"]["mcts_discount_factor"] == 0.5


def test_inspect_run_draws_a_tree_and_its_counts_match_the_records(tmp_path: Path, bm25_url: str) -> None:
    from run_src import inspect_run

    with FakeGeneratorServer("ok") as generator:
        assert main(_argv(tmp_path, generator.base_url, bm25_url, "i", 2)) == 0
    run = _run_dir(tmp_path, "i")
    assert inspect_run.main([str(run)]) == 0
    result = json.loads((run / "inspect" / "inspect.json").read_text())
    counts = result["counts"]
    hard_negatives = [json.loads(line) for p in (run / "hard_negatives").glob("*.jsonl") for line in p.read_text().splitlines()]
    score_calls = [line for p in (run / "retriever_scores").glob("*.jsonl") for line in p.read_text().splitlines()]
    trees = [json.loads(p.read_text()) for p in sorted((run / "trees").glob("*.json"))]
    summary = json.loads((run / "run_summary.json").read_text())
    assert counts["problems"] == 4 == len(trees)
    assert counts["retrieval_calls"] == len(score_calls) > 0
    assert sum(counts["logged_verdicts"].values()) == len(hard_negatives)
    assert counts["accepted_theorems"] == sum(n["kind"] == "RT" for t in trees for n in t["nodes"])
    assert counts["nodes"]["QG"] == sum(n["kind"] == "QG" for t in trees for n in t["nodes"])
    assert counts["actions"] == summary["actions"] and counts["actions"]["qg"]["requests"] > 0
    # The drawn problem has a retrieval; the report shows its query and verdicts, and the PNG is real.
    index = result["problem_index"]
    drawn = trees[index]
    assert any(n["kind"] == "RT" for n in drawn["nodes"])
    report = (run / "inspect" / "report.md").read_text()
    assert f"![search tree](tree_{index}.png)" in report and "### Retrieval calls" in report and "| qg |" in report
    assert (run / "inspect" / f"tree_{index}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A chosen problem by id; an unknown one is a clear error.
    source_id = json.loads((run / "answer_sheets" / "Question 0001 - Answer.json").read_text())["source_id"]
    assert inspect_run.main([str(run), "--problem", source_id, "--output_dir", str(tmp_path / "one")]) == 0
    assert json.loads((tmp_path / "one" / "inspect.json").read_text())["problem_index"] == 1
    assert inspect_run.main([str(run), "--problem", "nope", "--output_dir", str(tmp_path / "two")]) != 0


def test_sigint_stops_new_requests_keeps_finished_problems_and_exits_130(tmp_path: Path, bm25_url: str) -> None:
    """Each request takes 0.15 s, so 12 problems at 2 searches in flight run long enough to interrupt."""
    import signal
    import subprocess
    import sys

    with FakeGeneratorServer("ok", delay_s=0.15) as generator:
        argv = _argv(tmp_path, generator.base_url, bm25_url, "interrupted", 2, "--interrupt_grace_s", "2")
        argv[argv.index("--end_idx") + 1] = "12"
        log = tmp_path / "interrupted.stderr"  # a file: a pipe read only at the end could fill and block the run
        with open(log, "wb") as stderr_file:
            process = subprocess.Popen([sys.executable, "-m", "run_src.run_parallel_workers", *argv],
                                       stdout=subprocess.DEVNULL, stderr=stderr_file)  # fmt: skip
        sheets = _run_dir(tmp_path, "interrupted") / "answer_sheets"
        deadline = time.monotonic() + 120
        while not (sheets.is_dir() and list(sheets.glob("*Answer.json"))):
            assert process.poll() is None and time.monotonic() < deadline, "no problem finished"
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        sent = time.monotonic()
        process.wait(timeout=30)
        stderr = log.read_text(errors="replace")
        assert process.returncode == 130, stderr[-3000:]
        assert time.monotonic() - sent < 2 + 5
        after_exit = generator.attempts
        time.sleep(1)
        assert generator.attempts == after_exit  # nothing is sent after the process ended
    summary = json.loads((_run_dir(tmp_path, "interrupted") / "run_summary.json").read_text())
    finished = sorted(sheets.glob("*Answer.json"))
    assert summary["interrupted"] is True and summary["finished"] == len(finished) and 1 <= len(finished) < 12
    assert "searches in flight get 2 s to finish" in stderr
    for path in finished:  # every sheet on disk is whole
        assert json.loads(path.read_text())["source_id"]


def test_a_faulty_generator_costs_retries_not_problems_or_bytes(tmp_path: Path, bm25_url: str) -> None:
    """10 % 500s, 5 % hangs and 5 % truncated 200s: one pass finishes every problem, byte-identical."""
    with FakeGeneratorServer("ok") as clean:
        assert main(_argv(tmp_path, clean.base_url, bm25_url, "clean", 4)) == 0
    with FakeGeneratorServer("chaos") as chaos:
        argv = _argv(tmp_path, chaos.base_url, bm25_url, "chaos", 4, "--request_timeout", "1")
        argv[argv.index("--max_retries") + 1] = "6"
        assert main(argv) == 0
        assert chaos.attempts > clean.attempts
    a, b = _run_dir(tmp_path, "clean"), _run_dir(tmp_path, "chaos")
    summary = json.loads((b / "run_summary.json").read_text())
    assert summary["failed"] == [] and summary["finished"] == 4
    assert summary["generator_usage"][0]["retries"] > 0
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file() and p.parent != a)
    assert names and names == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file() and p.parent != b)
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
