"""``pip install --no-deps .`` gives a complete package: every module, prompt and data file, and every
stage's ``--help`` works from outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGES = (
    "prepare_problems",
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
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``pip wheel`` builds from a copy of the checkout (setuptools writes build/ beside the sources)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("models", "run_src", "prompts"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        check=True, cwd=source,
    )  # fmt: skip
    (found,) = out.glob("*.whl")
    return found


def test_the_wheel_holds_every_module_prompt_and_data_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = set()
    for package, patterns in (("models", ("*.py", "*.json")), ("run_src", ("*.py",)), ("prompts", ("*.py", "*.txt"))):
        for pattern in patterns:
            wanted |= {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / package).rglob(pattern)}
    assert wanted, "no source files found"
    assert sorted(wanted - names) == []
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/")) or "__pycache__" in n]


def test_every_stage_answers_help_from_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    for stage in STAGES:
        done = subprocess.run(
            [sys.executable, "-m", f"run_src.{stage}", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{stage}: {done.stderr[-2000:]}"
        assert "usage" in done.stdout.lower(), stage
        assert str(target) in subprocess.run(
            [sys.executable, "-c", f"import run_src.{stage} as m; print(m.__file__)"],
            cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
        ).stdout, f"{stage} was not imported from the installed wheel"  # fmt: skip
    prompts = subprocess.run(
        [sys.executable, "-c", "from models.llm.prompt_templates import PROMPTS_DIR; print(PROMPTS_DIR)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert prompts.startswith(str(target)) and (Path(prompts) / "mcts_ost.txt").is_file()
