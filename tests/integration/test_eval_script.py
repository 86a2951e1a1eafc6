"""scripts/06_eval.sh drives evaluate_bright over a task list and reuses finished runs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import REPO_ROOT


def test_eval_script_runs_bm25_on_champ_and_resumes(champ_mirror: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TASKS": "champ",
        "QUERY_TYPES": "original",
        "OUTPUT_DIR": str(tmp_path / "bright"),
        "BRIGHT_DIR": str(champ_mirror),
        "BRIGHT_CACHE_DIR": str(tmp_path / "cache"),
        "RADER_ENV_FILE": str(tmp_path / "no.env"),
    }
    command = ["bash", str(REPO_ROOT / "scripts/06_eval.sh"), "bm25"]
    subprocess.run(command, env=env, check=True, capture_output=True, text=True, cwd=tmp_path)
    run_dir = tmp_path / "bright" / "bm25" / "original" / "champ"
    results = json.loads((run_dir / "results.json").read_text())
    assert 0.15 < results["NDCG@10"] < 1.0
    score_mtime = (run_dir / "score.json").stat().st_mtime_ns
    second = subprocess.run(command, env=env, check=True, capture_output=True, text=True, cwd=tmp_path)
    assert (run_dir / "score.json").stat().st_mtime_ns == score_mtime  # reused, not retrieved again
    assert "reus" in second.stderr.lower()


def test_eval_script_reads_dotenv_names_runs_and_reranks_reasoning_queries_only(tmp_path: Path) -> None:
    """.env is read by the stage script itself; dense/hybrid/reranked runs get their own directories; the
    default reranks GPT-4 reasoning queries only, as the paper did."""
    from tests.rerank_fakes import ScriptedRerankFake

    dotenv = tmp_path / "stage.env"
    fixture = REPO_ROOT / "tests" / "resources" / "bright_mini"
    dotenv.write_text(f"BRIGHT_DIR={fixture}\nBRIGHT_CACHE_DIR={tmp_path / 'cache'}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("BRIGHT_DIR", "BRIGHT_CACHE_DIR")}
    env.update(TASKS="theoremqa_theorems", QUERY_TYPES="original gpt4_reason", OUTPUT_DIR=str(tmp_path / "bright"),
               RADER_ENV_FILE=str(dotenv), RERANK="llm", RERANK_TOP_K="3")  # fmt: skip
    with ScriptedRerankFake(lambda doc: "Relevance score: 3") as server:
        env.update(RERANK_MODEL="fake-judge", RERANK_BASE_URL=server.base_url, RERANK_ARGS="--max_queries 2")
        done = subprocess.run(["bash", str(REPO_ROOT / "scripts/06_eval.sh"), "bm25"], env=env,
                              capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[06_eval] python:" in done.stderr
    runs = sorted(p.parent.relative_to(tmp_path / "bright").as_posix() for p in (tmp_path / "bright").glob("*/*/*/results.json"))
    assert runs == ["bm25+llm-fake-judge/gpt4_reason/theoremqa_theorems", "bm25/gpt4_reason/theoremqa_theorems",
                    "bm25/original/theoremqa_theorems"]  # fmt: skip
