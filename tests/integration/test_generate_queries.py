"""generate_queries + build_training_data end to end on a hand-written MCTS run directory: a fake generator
that returns garbage (every reply gets a named drop reason), a failing generator (failures retried on the
next run), a run killed mid-way (resumed without repeating finished LLM calls), and, marked slow, the real
vLLM CPU server with SmolLM2 plus an in-process MiniLM dense retriever for lexical negatives, and the contract
with the real MCTS runner (its run directory, written under a scripted fake generator, read by these stages)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from models.io_utils import read_jsonl
from models.stage import EXIT_PARTIAL as EXIT_LLM_FAILURES
from run_src.build_training_data import main as build_main
from run_src.generate_queries import main as generate_main
from tests.conftest import REPO_ROOT, RunningServer
from tests.fakes import FakeGeneratorServer
from tests.mcts_run_builder import Retrieval, RunDirBuilder, Trajectory, write_corpus

GENERATED_STATUSES = {"ok", "empty_query", "unparsable_llm_output", "query_too_short", "query_too_long",
                      "prompt_echo", "theorem_name_leak", "llm_error"}  # fmt: skip


class ScriptedFakeGenerator(FakeGeneratorServer):
    """A fake OpenAI-compatible generator whose chat reply is ``script(last user message)``."""

    def __init__(self, script: Callable[[str], str], delay_s: float = 0.0) -> None:
        self.script = script
        super().__init__("ok", delay_s=delay_s)

    async def _respond(self, path: str, body: dict[str, Any], attempt: int, request: Any) -> Any:
        await asyncio.sleep(self.delay_s)
        content = self.script(body["messages"][-1]["content"])
        return {
            "id": f"fake-{attempt}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }


def valid_reply(content: str) -> str:
    """A well-formed reply: lexical queries reuse the theorem's first words (so BM25 finds it)."""
    if content.startswith("Theorem:"):
        words = content[len("Theorem:") :].split()[:8]
        return f"Query: Which statement about {' '.join(words)} holds?"
    return f"Need: the next fact.\nQuery: Which general fact settles a step worth {len(content)} characters here?"


LLMQ_EXAMPLE = "How can the sum and the product of the roots of a polynomial be read off from its coefficients?"
LEXICAL_EXAMPLE = "By stars and bars, how many ordered ways are there to write n as a sum of k non-negative integers?"
GARBAGE = [
    "",
    "Query:",
    "lorem ipsum\ndolor sit\namet consectetur",
    "echo",
    "Query: " + "very " * 200 + "long",
    "Query: no",
]


def garbage_reply(content: str) -> str:
    """Garbage chosen by the request's content; "echo" repeats one of the prompt's few-shot queries."""
    reply = GARBAGE[int(hashlib.sha256(content.encode()).hexdigest(), 16) % len(GARBAGE)]
    if reply == "echo":
        return "Query: " + (LEXICAL_EXAMPLE if content.startswith("Theorem:") else LLMQ_EXAMPLE)
    return reply


def build_run(root: Path, corpus: Path) -> Path:
    run = RunDirBuilder(root, dataset="MATH", corpus=str(corpus), corpus_split="mini")
    run.add_problem(
        0,
        "math_0",
        "The roots of x^2 - 4x + 1 = 0 are r and s. What is r + s?",
        "4",
        [
            Trajectory(
                [
                    "Let the roots be r and s.",
                    Retrieval("t1", qg_node_id=3, rejected=["t5", "t6"]),
                    "So r + s = 4.",
                    Retrieval("t2", qg_node_id=7, rejected=["t6", "t7"]),
                ],
                answer="The sum is \\boxed{4}.",
                value=1,
            )
        ],
    )
    run.add_problem(
        1,
        "math_1",
        "What is the remainder of 3^10 divided by 11?",
        "1",
        [
            Trajectory([Retrieval("t4", qg_node_id=2, rejected=["t7", "t8"])], answer="\\boxed{1}", value=1),
            Trajectory([Retrieval("t3", qg_node_id=4, rejected=["t9"])], answer="\\boxed{3}", value=0.2),  # wrong
        ],
    )
    return run.root


@pytest.fixture()
def workspace(tmp_path: Path) -> dict[str, Path]:
    corpus = write_corpus(tmp_path / "corpus" / "theorems.jsonl")
    return {"run": build_run(tmp_path / "runs" / "MATH" / "m" / "r1", corpus), "tmp": tmp_path}


def argv(ws: dict[str, Path], out: Path, base_url: str, *extra: str) -> list[str]:
    return [
        "--run_dirs", str(ws["run"]), "--output_dir", str(out), "--model", "fake-model", "--base_url", base_url,
        "--cache_root", str(ws["tmp"] / "cache"), "--no_dense_negatives", "--max_retries", "0",
        "--timeout_s", "20", "--quiet", *extra,
    ]  # fmt: skip


def records(out: Path, query_type: str) -> list[dict[str, Any]]:
    return list(read_jsonl(out / f"queries_{query_type}.jsonl"))


def test_garbage_generator_gives_named_drop_reasons(workspace: dict[str, Path]) -> None:
    out = workspace["tmp"] / "queries"
    with ScriptedFakeGenerator(garbage_reply) as server:
        assert generate_main(argv(workspace, out, server.base_url)) == 0
        assert server.attempts == 6  # 3 q_llmq nodes + 3 unique positives for q_lexical
    llmq, lexical = records(out, "llmq"), records(out, "lexical")
    assert sorted(r["query_id"] for r in llmq) == ["MATH:math_0:3:t1:llmq", "MATH:math_0:7:t2:llmq",
                                                    "MATH:math_1:2:t4:llmq"]  # fmt: skip
    assert [r["query_id"] for r in lexical] == ["lexical:mini:t1:0", "lexical:mini:t2:0", "lexical:mini:t4:0"]
    expected = {"", "Query:"}
    for record in [*llmq, *lexical]:
        assert record["status"] != "ok" and record["status"] in GENERATED_STATUSES
        assert record["generation"]["model"] == "fake-model"
        if record["generation"]["text"] in expected:
            assert record["status"] == "empty_query"
    assert all(r["status"] == "ok" for r in records(out, "cot") + records(out, "question"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selection"]["trajectories_selected"] == 2 and summary["selection"]["nodes"] == 3
    assert summary["llm"]["generated"] == 6 and summary["llm"]["failures"] == 0
    assert (out / "_SUCCESS").is_file()

    train = workspace["tmp"] / "train.jsonl"
    assert build_main(["--queries_dir", str(out), "--output", str(train), "--quiet"]) == 0
    kept = list(read_jsonl(train))
    # One q_question per retrieval node (it mirrors q_CoT, as in Table 9), named by the node.
    assert sorted(r["query_id"] for r in kept) == [
        "MATH:math_0:3:t1:cot", "MATH:math_0:3:t1:question", "MATH:math_0:7:t2:cot", "MATH:math_0:7:t2:question",
        "MATH:math_1:2:t4:question",
    ]  # fmt: skip
    drops = {d["query_id"]: d["reason"] for d in read_jsonl(workspace["tmp"] / "train.drops.jsonl")}
    # t4's q_CoT has no steps before its query node, so it equals its q_question: a duplicate.
    assert drops == {r["query_id"]: r["status"] for r in [*llmq, *lexical]} | {"MATH:math_1:2:t4:cot": "duplicate"}
    negatives = {r["query_id"]: [p["docid"] for p in r["negative_passages"]] for r in kept}
    assert negatives["MATH:math_0:7:t2:cot"] == ["t6", "t7"] and negatives["MATH:math_1:2:t4:question"] == ["t7", "t8"]


def test_failed_requests_are_retried_by_the_next_run(workspace: dict[str, Path]) -> None:
    out = workspace["tmp"] / "queries"
    with FakeGeneratorServer("error500") as failing:
        assert generate_main(argv(workspace, out, failing.base_url, "--query_types", "llmq")) == EXIT_LLM_FAILURES
        assert failing.attempts == 3
    assert {r["status"] for r in records(out, "llmq")} == {"llm_error"}
    assert "Error code: 500" in records(out, "llmq")[0]["generation"]["error"]
    assert json.loads((out / "summary.json").read_text())["llm"]["failures"] == 3
    with ScriptedFakeGenerator(valid_reply) as server:
        assert generate_main(argv(workspace, out, server.base_url, "--query_types", "llmq")) == 0
        assert server.attempts == 3
    llmq = records(out, "llmq")
    assert {r["status"] for r in llmq} == {"ok"}
    params = llmq[0]["generation"]["params"]
    assert (params["temperature"], params["top_p"], params["top_k"]) == (0.8, 0.95, 40)
    assert len({r["generation"]["params"]["seed"] for r in llmq}) == 3  # one seed per sample


def test_killed_run_resumes_without_repeating_llm_calls(workspace: dict[str, Path]) -> None:
    out, fresh = workspace["tmp"] / "queries", workspace["tmp"] / "fresh"
    cache = out / "cache" / "completions.jsonl"
    with ScriptedFakeGenerator(valid_reply, delay_s=0.8) as server:
        env = {**os.environ, "RADER_ENV_FILE": str(workspace["tmp"] / "no.env"), "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, "-m", "run_src.generate_queries", *argv(workspace, out, server.base_url),
                   "--max_concurrency", "1"]  # fmt: skip
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not (cache.is_file() and cache.read_text().count("\n") >= 2):
                assert process.poll() is None, "the run ended before it could be killed"
                assert time.monotonic() < deadline, "no completions were cached within 120 s"
                time.sleep(0.05)
            os.killpg(process.pid, signal.SIGKILL)
        finally:
            process.wait(timeout=30)
        cached = sum(1 for line in cache.read_text().splitlines() if line.strip())
        assert 2 <= cached < 6 and not (out / "_SUCCESS").exists()
        before = server.attempts
        assert generate_main(argv(workspace, out, server.base_url)) == 0
        assert server.attempts - before == 6 - cached  # only the unfinished requests were sent again
        summary = json.loads((out / "summary.json").read_text())
        assert summary["llm"]["cached"] == cached and summary["llm"]["generated"] == 6 - cached
        assert generate_main(argv(workspace, fresh, server.base_url)) == 0
    for query_type in ("llmq", "cot", "question", "lexical"):
        assert (out / f"queries_{query_type}.jsonl").read_bytes() == (
            fresh / f"queries_{query_type}.jsonl"
        ).read_bytes()
    lexical = records(out, "lexical")
    assert [r["bm25_rank"] for r in lexical] == [1, 1, 1] and all(r["status"] == "ok" for r in lexical)


def test_unreachable_generator_fails_before_any_work(workspace: dict[str, Path]) -> None:
    out = workspace["tmp"] / "queries"
    assert generate_main(argv(workspace, out, "http://127.0.0.1:9/v1")) == 1
    assert not (out / "nodes.jsonl").exists()


@pytest.mark.slow
def test_real_smollm2_generation_and_minilm_negatives(
    generator_server: RunningServer, minilm_dir: Path, workspace: dict[str, Path]
) -> None:
    import torch

    torch.set_num_threads(1)
    out, again = workspace["tmp"] / "queries", workspace["tmp"] / "again"
    common = [
        "--run_dirs", str(workspace["run"]), "--model", generator_server.model,
        "--base_url", generator_server.base_url, "--cache_root", str(workspace["tmp"] / "cache"),
        "--dense_model_path", str(minilm_dir), "--dense_text_format", "plain", "--dense_k", "3",
        "--query_types", "llmq", "lexical",
        "--llmq_max_tokens", "96", "--lexical_max_tokens", "48", "--seed", "7", "--max_concurrency", "1", "--quiet",
    ]  # fmt: skip
    assert generate_main([*common, "--output_dir", str(out)]) == 0
    llmq, lexical = records(out, "llmq"), records(out, "lexical")
    assert len(llmq) == 3 and len(lexical) == 3
    config = json.loads((out / "config.json").read_text())
    for record in [*llmq, *lexical]:
        generation = record["generation"]
        assert record["status"] in GENERATED_STATUSES - {"llm_error"}
        assert generation["model"] == generator_server.model and generation["text"]
        assert generation["prompt"] == config["identity"]["prompts"][record["query_type"]]
        assert isinstance(generation["params"]["seed"], int)
    for record in lexical:
        if record["status"] == "ok":
            assert record["dense_ids"] and set(record["dense_ids"]) <= {f"t{i}" for i in range(1, 13)}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["llm"]["generated"] == 6 and summary["llm"]["usage"]["completion_tokens"] > 0
    # Same command again: everything comes from the cache. Another directory, same seed: same samples.
    assert generate_main([*common, "--output_dir", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["llm"]["cached"] == 6
    assert generate_main([*common, "--output_dir", str(again)]) == 0
    assert [r["generation"]["text"] for r in records(again, "llmq")] == [r["generation"]["text"] for r in llmq]
    print("SmolLM2 statuses:", {r["query_id"]: (r["status"], r["query"]) for r in [*llmq, *lexical]})


def mcts_reply(answers: dict[str, str]) -> Callable[[list[dict[str, str]], int], str]:
    """A fake generator for every MCTS action, recognised by its system prompt; self-reflection accepts about
    half of the theorems and half of the final answers are the gold one, chosen by a hash of the request."""

    def reply(messages: list[dict[str, str]], sample: int) -> str:
        system, user = messages[0]["content"], messages[-1]["content"]
        coin = int(hashlib.sha256(f"{sample}:{user}".encode()).hexdigest(), 16) % 2
        if system.startswith("You check whether a retrieved theorem"):
            return "Relevant: True\nReason: it applies." if coin else "Relevant: False\nReason: it does not apply."
        if system.startswith("You rewrite mathematical theorems"):
            return "Summary - " + " ".join(user.split()[1:12])
        if system.startswith("You help a student continue"):
            return ("Theorem 1: Rule of sum\nTheorem Statement: Disjoint cases add up.\nPreconditions: disjoint cases\n"
                    "Why Preconditions are Satisfied: the cases do not overlap\nSubject: Combinatorics")  # fmt: skip
        if system.startswith("You finish solutions"):
            question = user.split("\n")[0].removeprefix("Question: ").strip()
            return f"So the answer is \\boxed{{{answers.get(question, '0') if coin else 'nothing'}}}."
        if system.startswith("You solve math problems one step"):
            return f"We count the cases of kind {(len(user) + sample) % 7}."
        return valid_reply(user)  # the query-synthesis prompts

    return reply


class MessagesFakeGenerator(ScriptedFakeGenerator):
    """Like :class:`ScriptedFakeGenerator`, but the script sees the whole message list and the sample index."""

    async def _respond(self, path: str, body: dict[str, Any], attempt: int, request: Any) -> Any:
        texts = [self.script(body["messages"], i) for i in range(int(body.get("n", 1)))]
        return {
            "id": f"fake-{attempt}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "fake"),
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                for i, text in enumerate(texts)
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5 * len(texts), "total_tokens": 10 + 5 * len(texts)},
        }


@pytest.mark.slow  # a whole (fake-generator) MCTS run first: 20-80 s on two cores
def test_contract_with_the_mcts_runner(tmp_path: Path, champ_mirror: Path) -> None:
    """The real MCTS runner (fake generator, real BM25 app over CHAMP) writes a run directory; the query stages
    read it: every positive is a theorem self-reflection accepted in that call, every negative one it rejected."""
    import socket
    import threading

    import uvicorn

    from models.retrieval.corpus import load_corpus, load_examples
    from models.retrieval.retrievers import BM25Retriever
    from models.serving.retriever_app import create_app
    from run_src.run_parallel_workers import main as mcts_main

    corpus = load_corpus(champ_mirror, "champ")
    answers = {" ".join(e.query.split()): e.gold_answer for e in load_examples(champ_mirror, "champ")}
    answers = {q.split("\n")[0]: a for q, a in answers.items()}
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    bm25_server = uvicorn.Server(uvicorn.Config(create_app(BM25Retriever.from_corpus(corpus)), log_level="warning"))
    thread = threading.Thread(target=bm25_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not bm25_server.started:
            time.sleep(0.01)
        with MessagesFakeGenerator(mcts_reply(answers)) as generator:
            mcts_argv = [
                "--dataset_name", "CHAMP", "--model_ckpt", "fake-model", "--generator_urls", generator.base_url,
                "--retriever", "bm25", "--bm25_url", f"http://127.0.0.1:{sock.getsockname()[1]}",
                "--num_rollouts", "3", "--max_depth_allowed", "5", "--end_idx", "4", "--LLM_candidate_theorems",
                "--retrieval_selfreasoning", "--disable_a3", "--disable_a5", "--num_workers", "3",
                "--run_outputs_root", str(tmp_path / "mcts"), "--run_name", "r", "--max_retries", "0",
            ]  # fmt: skip
            assert mcts_main(mcts_argv) == 0
            run_dir = tmp_path / "mcts" / "CHAMP" / "fake-model" / "r"
            out = tmp_path / "queries"
            gq_argv = [
                "--run_dirs", str(run_dir), "--output_dir", str(out), "--model", "fake-model",
                "--base_url", generator.base_url, "--cache_root", str(tmp_path / "cache"),
                "--no_dense_negatives", "--trajectory_filter", "all", "--quiet",
            ]  # fmt: skip
            assert generate_main(gq_argv) == 0
    finally:
        bm25_server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    nodes = list(read_jsonl(out / "nodes.jsonl"))
    assert nodes, "the fake search produced no retrieval node"
    verdicts: dict[tuple[str, str], int] = {}
    for path in (run_dir / "hard_negatives").glob("*.jsonl"):
        for line in read_jsonl(path):
            verdicts[(line["qg_key"], line["theorem_id"])] = line["LLM_relevance_label"]
    for node in nodes:
        assert node["theorem_id"] in corpus and node["corpus"]["split"] == "champ"
        assert any(verdicts.get((key, node["theorem_id"])) == 1 for key in node["qg_keys"])
        for negative in node["negative_ids"]:
            assert any(verdicts.get((key, negative)) == 0 for key in node["qg_keys"])
            assert negative not in node["relevant_ids"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["read"]["problems_finished"] == 4 and summary["selection"]["trajectories_selected"] > 0
    train = tmp_path / "train.jsonl"
    assert build_main(["--queries_dir", str(out), "--output", str(train), "--quiet"]) in (0, 1)
    stats = json.loads((tmp_path / "train.stats.json").read_text())
    print("contract run:", summary["selection"], {t: v["kept"] for t, v in stats["by_type"].items()})
