"""The numbered stage scripts the GPU recipe runs, on the points where they used to break: stage 2 without
a retriever model when it starts no servers, stage 5's explicit GPU list and the paper's global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from models.retrieval.corpus import load_corpus
from models.retrieval.retrievers import BM25Retriever
from models.serving.retriever_app import ServerLimits, create_app
from tests.conftest import REPO_ROOT
from tests.fakes import FakeGeneratorServer
from tests.local_server import ThreadedAppServer


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "RADER_ENV_FILE": str(tmp_path / "no.env"), "PYTHON": sys.executable, **extra}


def test_stage_2_needs_no_retriever_model_when_it_starts_no_servers(champ_mirror: Path, tmp_path: Path) -> None:
    problems = tmp_path / "problems"
    subprocess.run([sys.executable, "-m", "run_src.prepare_problems", "--dataset", "CHAMP", "--limit", "1",
                    "--output_dir", str(problems)], check=True, cwd=REPO_ROOT, capture_output=True)  # fmt: skip
    corpus = load_corpus(champ_mirror, "champ")
    # The dense server's API is the BM25 server's: a BM25 app stands in for the RepLLaMA server here.
    with ThreadedAppServer(create_app(BM25Retriever.from_corpus(corpus), ServerLimits())) as retriever, \
            FakeGeneratorServer("ok") as generator:  # fmt: skip
        env = _env(tmp_path, START_SERVERS="0", DATASET="CHAMP", TEST_JSON="train_pool", DATA_ROOT=str(problems),
                   RETRIEVER="repllama", REPLLAMA_URL=retriever.url, CORPUS_SPLIT="champ", NUM_ROLLOUTS="1",
                   NUM_WORKERS="1", RUN_OUTPUTS_ROOT=str(tmp_path / "mcts"))  # fmt: skip
        env.pop("RETRIEVER_MODEL", None)
        env.pop("REPLLAMA_MODEL_PATH", None)
        done = subprocess.run(["bash", str(REPO_ROOT / "scripts/02_mcts.sh"), "fake-model", "--generator_urls",
                               generator.base_url, "--max_depth_allowed", "2", "--max_retries", "0"],
                              env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    sheets = list((tmp_path / "mcts" / "CHAMP" / "fake-model" / "train_pool" / "answer_sheets").glob("*Answer.json"))
    assert len(sheets) == 1


def test_stage_5_trains_on_the_listed_gpus_and_keeps_the_papers_global_batch(tmp_path: Path) -> None:
    """DeepSpeed ignores CUDA_VISIBLE_DEVICES, so the script must pass the list; a recording stand-in for the
    deepspeed launcher (``fake_bin/deepspeed``) shows what it was given."""
    fake_bin = tmp_path / "fake_bin"
    fake_bin.mkdir()
    (fake_bin / "python").symlink_to(sys.executable)
    calls = tmp_path / "deepspeed_calls.txt"
    (fake_bin / "deepspeed").write_text(f'#!/usr/bin/env bash\necho "$@" >> {calls}\nexit 0\n')
    (fake_bin / "deepspeed").chmod(0o755)
    train = tmp_path / "train.jsonl"
    train.write_text("{}\n")
    env = _env(tmp_path, PYTHON=str(fake_bin / "python"), TASK="reranker", TRAIN_GPUS="2", KEEP_PAPER_GLOBAL_BATCH="1")
    done = subprocess.run(["bash", str(REPO_ROOT / "scripts/05_train.sh"), str(train), str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    args = calls.read_text().split()
    assert args[:2] == ["--include", "localhost:2"] and "--module" in args
    # 1 GPU where the paper used 2: accumulation 16 -> 32 keeps 2 x 16 x 2 = 64 sequences per step.
    assert "WARNING: 1 GPU(s) where the paper used 2" in done.stderr
    assert args[args.index("--gradient_accumulation_steps") + 1] == "32"
    config = json.loads((REPO_ROOT / "tevatron_configs" / "reranker-qwen2.5-7b-instruct.json").read_text())
    assert config["gradient_accumulation_steps"] == 16 and config["per_device_train_batch_size"] == 2
