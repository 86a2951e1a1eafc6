"""The MCTS on 3 CHAMP problems with the real vLLM CPU server (SmolLM2) and the BM25 server, both started
through ``servers/up.sh``; the run is killed after its first problem and rerun to completion."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, RunningServer, free_port


@pytest.fixture(scope="module")
def bm25_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    run_dir = tmp_path_factory.mktemp("bm25_server")
    port = free_port()
    env = {**os.environ, "SERVER_RUN_DIR": str(run_dir), "RADER_ENV_FILE": str(run_dir / "no.env")}
    up = subprocess.run(
        ["bash", str(REPO_ROOT / "servers/up.sh"), "--timeout", "300", f"bm25=champ,{port}"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if up.returncode != 0:
        pytest.fail(f"servers/up.sh failed ({up.returncode}):\n{up.stderr[-4000:]}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run(["bash", str(REPO_ROOT / "servers/down.sh"), "--run-dir", str(run_dir)], env=env, check=True)


def _command(generator: RunningServer, bm25_url: str, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "run_src.run_parallel_workers", "--dataset_name", "CHAMP", "--end_idx", "3",
        "--api", "vllm-server", "--model_ckpt", generator.model, "--generator_urls", generator.base_url,
        "--retriever", "bm25", "--bm25_url", bm25_url, "--topk_rt", "2",
        "--LLM_candidate_theorems", "--retrieval_selfreasoning", "--bool_goldanswer_reward",
        "--disable_a3", "--disable_a4", "--disable_a5", "--save_tree",
        "--num_rollouts", "2", "--max_depth_allowed", "3", "--num_a1_steps", "2", "--mcts_num_last_votes", "2",
        "--max_tokens", "96", "--ost_max_tokens", "48", "--qg_max_tokens", "160",
        "--summary_max_tokens", "48", "--reflection_max_tokens", "40",
        "--num_workers", "1", "--run_outputs_root", str(out), "--run_name", "killed-and-resumed",
        "--prompt_shape", "chat_turns",  # SmolLM2-135M follows the few-shot format only as chat turns
    ]  # fmt: skip


def test_killed_run_resumes_without_losing_or_duplicating_problems(
    generator_server: RunningServer, bm25_server: str, tmp_path: Path
) -> None:
    command = _command(generator_server, bm25_server, tmp_path)
    run = tmp_path / "CHAMP" / Path(generator_server.model).name / "killed-and-resumed"
    sheets = run / "answer_sheets"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    log = tmp_path / "first-run.stderr"  # a file, not a pipe nobody reads (which could fill and block the run)
    with open(log, "wb") as stderr:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 900
    while not list(sheets.glob("*Answer.json")) if sheets.is_dir() else True:
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, "no problem finished within 15 minutes"
        time.sleep(0.02)  # a SmolLM2 problem can take well under a second: kill soon after the first one
    process.send_signal(signal.SIGKILL)
    process.wait()
    first_done = {p.name: p.stat().st_mtime_ns for p in sheets.iterdir()}
    assert len([n for n in first_done if n.endswith("Answer.json")]) in (1, 2)

    rerun = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "already finished" in rerun.stderr
    for name, mtime in first_done.items():  # finished problems were not searched again
        assert (sheets / name).stat().st_mtime_ns == mtime, name

    answers = sorted(sheets.glob("*Answer.json"))
    assert [p.name for p in answers] == [f"Question {i:04d} - Answer.json" for i in range(3)]
    retrievals = 0
    for index, path in enumerate(answers):
        sheet = json.loads(path.read_text())
        assert sheet["id"] == index and sheet["source_id"].startswith("P_") and sheet["gold_answer"]
        assert sheet["model"] == generator_server.model and sheet["num_nodes"] > 1
        stem = f"Question {index:04d}"
        rollouts = json.loads((sheets / f"{stem} - Rollout Solutions.json").read_text())
        assert [r["rollout_id"] for r in rollouts] == [0, 1]
        finals = json.loads((sheets / f"{stem} - Final Solutions.json").read_text())
        assert len(finals) == sheet["num_solutions"]
        for record in finals + rollouts:
            steps = record["trace"]["0"]["ost_step"]
            keys = list(steps)
            for position, key in enumerate(keys):
                if key.endswith("_retrieval"):  # always right after its query-generation step
                    assert keys[position - 1] == key.replace("_retrieval", "_querygeneration")
                    summary, scores, retriever_name, theorem_id = steps[key]
                    assert retriever_name == "BM25" and theorem_id.startswith("C_") and summary
                    retrievals += 1
        verdicts = [
            json.loads(line) for line in (run / "hard_negatives" / f"{index:04d}.jsonl").read_text().splitlines()
        ]
        pairs = [(v["qg_key"], v["theorem_id"]) for v in verdicts]
        assert len(pairs) == len(set(pairs))  # each theorem judged once per retrieval call
        assert all(v["LLM_relevance_label"] in (0, 1) for v in verdicts)
    calls = [line for p in (run / "retriever_scores").glob("*.jsonl") for line in p.read_text().splitlines()]
    assert calls, "no retrieval call was made in 3 problems"
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["finished"] == 3 and summary["failed"] == []
    print(f"retrieval calls {len(calls)}, RT nodes on traces {retrievals}")
