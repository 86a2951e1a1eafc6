"""``bash scripts/demo.sh``: ``reproduce.sh --profile demo`` plus the demo's report.

The pipeline itself runs end to end in ``tests/integration/test_reproduce.py`` (the tiny profile, the same
stage scripts); here: a Ctrl-C stops the demo's servers, and the report from a finished run's files. The
generator is the session's vLLM CPU server (``--generator-url``), so CI never runs two vLLM engines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

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


def test_interrupted_demo_stops_its_servers(generator_server: RunningServer, tmp_path: Path) -> None:
    out_dir = tmp_path / "demo"
    log = tmp_path / "demo.stderr"  # a file, not a pipe: a pipe nobody reads fills up and blocks the demo
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            _demo(out_dir, generator_server), cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 600
    while not list((out_dir / "reproduce").glob("02-*.done")) and not _server_groups(out_dir):  # servers are up
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.5)
    time.sleep(3)  # let up.sh finish writing its pid files
    groups = _server_groups(out_dir)
    assert groups, "the demo started no server"
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends to the foreground group
    try:
        returncode = process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        processes = subprocess.run(["ps", "-s", str(process.pid), "-o", "pid,pgid,stat,etime,args"],
                                   capture_output=True, text=True).stdout  # fmt: skip
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise AssertionError(
            f"the demo still ran 120 s after Ctrl-C; its processes:\n{processes}\n"
            f"its stderr (end):\n{log.read_text(errors='replace')[-3000:]}"
        ) from None
    assert returncode != 0
    assert not [g for g in groups if _alive(g)]


def _write_mcts_run(run: Path) -> None:
    """A one-problem MCTS run directory as stage 02 writes it: question → query → one accepted theorem."""
    for sub in ("answer_sheets", "trees", "hard_negatives"):
        (run / sub).mkdir(parents=True)
    (run / "args.json").write_text(json.dumps({"settings": {"model_ckpt": "SmolLM2", "seed": 42}, "derived": {"index_width": 4}}))
    sheet = {"id": 0, "source_id": "P_1", "problem": "Find x.", "gold_answer": "2", "num_solutions": 1,
             "num_correct_solutions": 0, "action_counts": {"actions": {"qg": {"requests": 1, "outputs": 1, "unparsable": 0}}}}
    (run / "answer_sheets" / "Question 0000 - Answer.json").write_text(json.dumps(sheet))
    candidates = [{"theorem_id": "C_1", "rank": 1, "score": 3.0, "label": "relevant", "reason": "fits", "summary": "s"},
                  {"theorem_id": "C_2", "rank": 2, "score": 1.0, "label": "irrelevant", "reason": "no", "summary": "t"}]
    nodes = [
        {"id": 0, "parent": None, "kind": "U", "depth": 0, "rollout": 0, "visits": 2, "q": 0.0, "value": None, "solution": False, "text": "Find x."},
        {"id": 1, "parent": 0, "kind": "QG", "depth": 1, "rollout": 0, "visits": 1, "q": 0.0, "value": None, "solution": False,
         "text": "Theorem Name: T", "retrieval": {"query": "Theorem Name: T", "retriever": "BM25", "candidates": candidates}},
        {"id": 2, "parent": 1, "kind": "RT", "depth": 2, "rollout": 0, "visits": 1, "q": 0.0, "value": None, "solution": False,
         "text": "s", "theorem_id": "C_1"},
        {"id": 3, "parent": 2, "kind": "DA", "depth": 3, "rollout": 0, "visits": 1, "q": 0.0, "value": 0.0, "solution": True,
         "text": "\\boxed{3}", "correct": False},
    ]  # fmt: skip
    (run / "trees" / "0000.json").write_text(json.dumps({"nodes": nodes}))
    verdicts = [{"theorem_id": "C_1", "LLM_relevance_label": 1, "verdict": "relevant"},
                {"theorem_id": "C_2", "LLM_relevance_label": 0, "verdict": "irrelevant"}]  # fmt: skip
    (run / "hard_negatives" / "0000.jsonl").write_text("".join(json.dumps(v) + "\n" for v in verdicts))


def test_the_report_puts_the_four_retrievers_side_by_side(tmp_path: Path) -> None:
    from run_src.demo import DEMO_MODELS, main

    out = tmp_path / "demo"
    champ = out / "problems" / "CHAMP"
    champ.mkdir(parents=True)
    (champ / "train_pool.json").write_text(json.dumps([{"id": "P_1"}, {"id": "P_2"}]))
    (champ / "train_pool.split.json").write_text(
        json.dumps({"seed": 7, "heldout": ["P_9"], "train_pool": ["P_1", "P_2"]})
    )
    for i, model in enumerate(DEMO_MODELS):
        run = out / "bright" / model / "original" / "champ"
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps({"NDCG@10": 0.1 * (i + 1), "Recall@10": 0.2}))
    (out / "train").mkdir()
    (out / "train" / "train.jsonl").write_text(
        '{"query_type": "cot"}\n{"query_type": "lexical"}\n{"query_type": "lexical"}\n'
    )
    (out / "reproduce").mkdir()
    (out / "reproduce" / "02-2-mcts.done").write_text("bash scripts/02_mcts.sh ...\n113\n")
    _write_mcts_run(out / "mcts" / "CHAMP" / "SmolLM2-135M-Instruct" / "demo")
    assert main(["--out_dir", str(out)]) == 0
    assert "inspect/report.md" in (out / "results.md").read_text()
    assert (out / "inspect" / "tree_0.png").stat().st_size > 1000 and "QG1" in (out / "inspect" / "report.md").read_text()
    report = json.loads((out / "results.json").read_text())
    assert list(report["results"]) == list(DEMO_MODELS) and report["results"]["minilm"]["NDCG@10"] == 0.2
    assert report["training_samples"] == {"cot": 1, "lexical": 2} and report["timings_s"] == {"02 mcts": 113.0}
    assert "| RaDeR-SmolLM2 (LoRA, trained here) | 0.4000 | 0.2000 |" in (out / "results.md").read_text()
    assert (out / "results.png").stat().st_size > 1000
    assert json.loads((out / "mcts_problem_ids.json").read_text()) == ["P_1", "P_2"]
    # A split whose held-out problems were searched is an error, not a report.
    (champ / "train_pool.split.json").write_text(json.dumps({"seed": 7, "heldout": ["P_1"], "train_pool": ["P_2"]}))
    assert main(["--out_dir", str(out)]) == 2
