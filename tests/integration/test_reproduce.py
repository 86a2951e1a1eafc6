"""``scripts/reproduce.sh``: the paper's recipe as one chain of stage scripts.

The paper profile is checked as a dry run (every resolved command, GPU placement, and a closed
stage-to-stage chain); the tiny profile runs for real, end to end, on CPU stand-ins: what CI proves of
the GPU recipe. The tiny run uses the session's vLLM server (``TINY_GENERATOR_URL``) so that CI never
runs two vLLM engines; everything else (the dense retriever server, BM25, training) it starts itself.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, RunningServer


def _reproduce(*args: str, env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(REPO_ROOT / "scripts/reproduce.sh"), *args], cwd=REPO_ROOT,
                          env=env or os.environ.copy(), capture_output=True, text=True, timeout=timeout)  # fmt: skip


def _inputs(stderr: str) -> list[tuple[str, str, str]]:
    """(stage, path, where from) for every input line of a dry run."""
    return re.findall(r"^\[reproduce\] (\d\d) input (\S+) \((.+)\)$", stderr, flags=re.MULTILINE)


def test_the_paper_recipe_dry_run_resolves_every_command_and_closes_the_chain(tmp_path: Path) -> None:
    out = tmp_path / "paper"
    done = _reproduce("--profile", "paper", "--out-dir", str(out), "--dry-run")
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stderr
    assert "the chain is closed" in log and not out.exists()  # nothing was run, nothing written
    stages = re.findall(r"^\[reproduce\] (\d\d) (\w+)[^:\n]*: ", log, flags=re.MULTILINE)
    assert [s for s, _ in stages] == ["00", "01", "02", "03", "04", "05", "06", "06", "07"]
    for stage, path, origin in _inputs(log):
        assert origin.startswith(("written by stage", "brought by the user")), (stage, path, origin)
        if origin.startswith("written by stage"):
            assert origin.split()[-1] < stage and path.startswith(str(out))
    # GPU placement: generator and retriever on their GPUs, stopped before training on the paper's two GPUs.
    assert "server generator on GPU(s) 0: generator=Qwen/Qwen2.5-7B-Instruct,8010" in log
    assert "server repllama on GPU(s) 1" in log
    assert log.index("stopping the servers") < log.index("[reproduce] 05 train")
    assert "TRAIN_GPUS=0\\,1" in log and "KEEP_PAPER_GLOBAL_BATCH=1" in log
    # Table 1's RaDeR row: q_llmq + q_CoT + q_lexical, lexical negatives from the RepLLaMA server.
    assert "QUERY_TYPES=llmq\\ cot\\ lexical" in log and "DENSE_URL=http://127.0.0.1:8011" in log
    assert "HYBRID=auto" in log and "QUERY_TYPES=original\\ gpt4_reason" in log


def test_the_paper_profile_reranks_in_the_published_style_when_asked(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QWEN_RERANK", "RERANK"))}
    plain = _reproduce("--profile", "paper", "--out-dir", str(tmp_path / "p"), "--dry-run", env=env)
    assert plain.returncode == 0 and "RERANK=" not in plain.stderr  # needs a 32B server the chain does not start
    done = _reproduce(
        "--profile", "paper", "--out-dir", str(tmp_path / "p"), "--dry-run", env={**env, "QWEN_RERANK": "1"}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rader, bm25 = re.findall(r"^\[reproduce\] 06 eval .*$", done.stderr, flags=re.MULTILINE)
    # Table 2's "+QwenRerank (top-100)": the RaDeR hybrid only, Qwen2.5-32B-Instruct, the published style.
    assert "HYBRID=auto" in rader and "RERANK=llm RERANK_MODEL=Qwen/Qwen2.5-32B-Instruct" in rader
    assert "RERANK_ARGS=--rerank_style\\ published " in rader and "RERANK" not in bm25
    from run_src.gpu_check import unknown_flags

    assert unknown_flags("run_src.rerank", ["--rerank_style", "published", "--top_k", "100"]) == []


@pytest.mark.parametrize("profile", ["tiny", "demo"])
def test_the_cpu_profiles_close_their_chains(profile: str, tmp_path: Path) -> None:
    done = _reproduce("--profile", profile, "--out-dir", str(tmp_path / profile), "--dry-run")
    assert done.returncode == 0 and "the chain is closed" in done.stderr, done.stderr[-3000:]


def test_a_partial_run_needs_the_earlier_stages_outputs(tmp_path: Path) -> None:
    done = _reproduce("--profile", "paper", "--out-dir", str(tmp_path / "p"), "--dry-run", "--from", "04")
    assert done.returncode == 2
    assert re.search(r"04 input \S+/queries is missing: .*stage 03 does: run it first", done.stderr)


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_the_tiny_recipe_runs_end_to_end(generator_server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    env = {**os.environ, "TINY_GENERATOR_URL": generator_server.base_url, "RADER_ENV_FILE": str(tmp_path / "no.env")}
    started = time.monotonic()
    done = _reproduce("--profile", "tiny", "--out-dir", str(out), env=env, timeout=1800)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-6000:]
    assert "finished: tables in" in done.stderr

    # Every stage's outputs, each read by the next.
    problems = json.loads((out / "problems" / "CHAMP" / "train_pool.json").read_text())
    split = json.loads((out / "problems" / "CHAMP" / "train_pool.split.json").read_text())
    assert len(problems) == 2 and not {p["id"] for p in problems} & set(split["heldout"])
    assert len(json.loads((out / "problems" / "MATH" / "shuffled_train.json").read_text())) == 4
    assert list((out / "cache" / "doc_emb").glob("SmolLM2-135M-Instruct-repllama-*/champ/embeddings.npy"))
    run = out / "mcts" / "CHAMP" / "SmolLM2-135M-Instruct" / "tiny"
    assert len(list((run / "answer_sheets").glob("*Answer.json"))) == 2
    # inspect_run on the real run: a drawn tree with a retrieval, counts that match the run's records.
    from run_src.inspect_run import inspect_run

    inspected = inspect_run(run, tmp_path / "inspect")
    counts = inspected["counts"]
    verdict_lines = sum(len(p.read_text().splitlines()) for p in (run / "hard_negatives").glob("*.jsonl"))
    score_calls = sum(len(p.read_text().splitlines()) for p in (run / "retriever_scores").glob("*.jsonl"))
    assert counts["retrieval_calls"] == score_calls > 0 and sum(counts["logged_verdicts"].values()) == verdict_lines
    assert counts["actions"] == json.loads((run / "run_summary.json").read_text())["actions"]
    assert Path(inspected["image"]).stat().st_size > 1000 and "### Retrieval calls" in Path(inspected["report"]).read_text()
    assert (out / "queries" / "_SUCCESS").is_file()
    assert sum(1 for _ in (out / "train" / "train.jsonl").open()) > 0
    assert (out / "model" / "rader-smollm2-merged" / "_SUCCESS").is_file()
    for task in ("theoremqa_theorems", "biology"):
        for query_type in ("original", "gpt4_reason"):
            assert (out / "bright" / "rader-smollm2" / query_type / task / "results.json").is_file()
    assert (out / "bright" / "rader-smollm2" / "original" / "champ" / "results.json").is_file()

    # The tiny row next to the paper's rows; BM25 on the fixture lands on the paper's BM25 row by its recipe.
    table = (out / "tables" / "table1.md").read_text(encoding="utf-8")
    assert "| rader-smollm2 | ours |" in table and "| (paper) | paper: " in table
    assert "| bm25 | ours |" in table and "paper: BM25⋆" in table
    assert "champ" in (out / "tables" / "extra_splits.md").read_text(encoding="utf-8")

    # No server left behind; a rerun skips every finished stage.
    assert not [int(p.read_text()) for p in (out / "servers").glob("*.pid") if _alive(int(p.read_text()))]
    again = _reproduce("--profile", "tiny", "--out-dir", str(out), env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("finished in an earlier run with this command; skipped") >= 8
    print(f"tiny recipe: {seconds:.0f} s")
