"""scripts/gpu_check.sh: the dry run resolves every step here; without a GPU no step can report a pass."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from run_src.gpu_check import STEPS, retriever_argv, unknown_flags
from tests.conftest import REPO_ROOT


def test_dry_run_resolves_every_step(tmp_path: Path) -> None:
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", "--work_dir", str(tmp_path)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [s["name"] for s in summary] == list(STEPS) and all(s["passed"] for s in summary)


def test_a_renamed_flag_fails_the_dry_run(tmp_path: Path) -> None:
    argv = [*retriever_argv(tmp_path, tmp_path, tmp_path, 1), "--no_such_flag"]
    assert unknown_flags("run_src.train_retriever", argv) == ["run_src.train_retriever does not know --no_such_flag"]


def test_without_a_gpu_the_env_step_fails(tmp_path: Path) -> None:
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--steps", "env", "--work_dir", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 1
    (step,) = json.loads((tmp_path / "summary.json").read_text())
    assert step["name"] == "env" and not step["passed"] and "cuda" in step["figure"].lower()
