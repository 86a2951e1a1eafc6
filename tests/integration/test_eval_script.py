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
