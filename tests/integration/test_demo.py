"""``bash scripts/demo.sh --smallest``: the whole pipeline end to end, and no server left behind.

The generator is the session's vLLM CPU server (``--generator-url``), so CI never runs two vLLM engines
at once; the demo still starts and stops its own BM25 server through ``servers/up.sh``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, RunningServer


def _server_groups(out_dir: Path) -> list[int]:
    return [int(p.read_text()) for p in (out_dir / "servers").glob("*.pid")]


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _demo(out_dir: Path, generator: RunningServer, *extra: str) -> list[str]:
    return [
        "bash", str(REPO_ROOT / "scripts/demo.sh"), "--smallest", "--out-dir", str(out_dir),
        "--generator-url", generator.base_url, "--model", generator.model, *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_smallest_demo_runs_end_to_end(generator_server: RunningServer, tmp_path: Path) -> None:
    out_dir = tmp_path / "demo"
    started = time.monotonic()
    result = subprocess.run(
        _demo(out_dir, generator_server), cwd=REPO_ROOT, capture_output=True, text=True, timeout=2400
    )
    assert result.returncode == 0, result.stderr[-6000:]
    report = json.loads((out_dir / "results.json").read_text())
    assert set(report["results"]) == {"bm25", "minilm", "smollm2-base", "rader-smollm2"}
    for scores in report["results"].values():
        assert 0.0 <= scores["NDCG@10"] <= 1.0 and 0.0 <= scores["Recall@10"] <= 1.0
    assert report["results"]["bm25"]["NDCG@10"] > 0.05  # BM25 is far from random (0.06) on CHAMP
    assert sum(report["training_samples"].values()) > 0
    assert "nDCG@10" in result.stdout and "RaDeR-SmolLM2" in result.stdout
    assert (out_dir / "results.png").stat().st_size > 1000
    split = json.loads((out_dir / "split.json").read_text())
    searched = set(json.loads((out_dir / "mcts_problem_ids.json").read_text()))
    assert not searched & set(split["heldout"])  # held-out problems never enter the MCTS
    assert "[down] stopped bm25" in result.stderr  # the demo's own BM25 server, stopped by its exit trap
    assert not [g for g in _server_groups(out_dir) if _alive(g)]
    print(f"smallest demo: {time.monotonic() - started:.0f} s; {report['results']}; {report['timings_s']}")

    rerun = subprocess.run(_demo(out_dir, generator_server), cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "finished in an earlier run" in rerun.stderr


def test_interrupted_demo_stops_its_servers(generator_server: RunningServer, tmp_path: Path) -> None:
    out_dir = tmp_path / "demo"
    process = subprocess.Popen(
        _demo(out_dir, generator_server), cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while not (out_dir / "stages").exists() and not (out_dir / "split.json").exists():  # servers are up by then
        assert process.poll() is None, process.stderr.read().decode()[-3000:] if process.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.5)
    groups = _server_groups(out_dir)
    assert groups, "the demo started no server"
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends to the foreground group
    assert process.wait(timeout=120) != 0
    assert not [g for g in groups if _alive(g)]
