"""What ``evaluate_bright`` loads and records: the pinned BRIGHT revision, the corpus size, refusals that write
nothing, the hybrid's z-score population, and the excluded-ids check under ``python -O``.

The Hub is replaced by a recorder around ``datasets.load_dataset`` that serves the rows of the hand-written
``tests/resources/bright_mini`` mirror and remembers the revision each call asked for: the point is what
reaches the loader, which a real Hub call would only show by downloading.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest

from models.io_utils import read_jsonl
from models.retrieval.corpus import BRIGHT_REVISION, resolve_revision
from models.retrieval.hybrid import fuse_top_lists, parse_population, zscore
from models.stage import EXIT_USAGE
from run_src import evaluate_bright

REPO_ROOT = Path(__file__).resolve().parents[2]
MINI = REPO_ROOT / "tests" / "resources" / "bright_mini"
TASK = "theoremqa_theorems"


@pytest.fixture
def hub_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """``datasets.load_dataset`` answering from the mini mirror; each call's arguments are appended."""
    calls: list[dict[str, Any]] = []

    def load_dataset_recorder(repo: str, config: str, *, split: str, revision: str | None, cache_dir: str | None):
        calls.append({"repo": repo, "config": config, "split": split, "revision": revision})
        return datasets.Dataset.from_list(list(read_jsonl(MINI / config / f"{split}.jsonl")))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset_recorder)
    return calls


def _argv(tmp_path: Path, *extra: str) -> list[str]:
    return ["--task", TASK, "--model", "bm25", "--output_dir", str(tmp_path / "out"),
            "--cache_root", str(tmp_path / "cache"), *extra]  # fmt: skip


def _record(tmp_path: Path, argv: list[str]) -> dict[str, Any]:
    run_dir = evaluate_bright.parse_config(argv).run_dir
    return json.loads((run_dir / "config.json").read_text())


def test_the_pinned_revision_reaches_the_loader_and_the_record(tmp_path: Path, hub_calls: list) -> None:
    argv = _argv(tmp_path, "--bright_dir", "hf")
    assert evaluate_bright.main(argv) == 0
    assert {(c["config"], c["revision"]) for c in hub_calls} == {("examples", BRIGHT_REVISION),
                                                                 ("documents", BRIGHT_REVISION)}  # fmt: skip
    record = _record(tmp_path, argv)
    n_docs = sum(1 for _ in read_jsonl(MINI / "documents" / f"{TASK}.jsonl"))
    assert record["settings"]["bright_revision"] == BRIGHT_REVISION
    assert record["derived"]["data"]["revision"] == BRIGHT_REVISION
    assert record["derived"]["data"]["corpus_documents"] == n_docs


def test_another_revision_is_passed_and_a_rerun_with_a_third_is_refused(tmp_path: Path, hub_calls: list) -> None:
    argv = _argv(tmp_path, "--bright_dir", "hf", "--bright_revision", "a75a0eb483f6")
    assert evaluate_bright.main(argv) == 0
    assert {c["revision"] for c in hub_calls} == {"a75a0eb483f6"}
    hub_calls.clear()
    # Reusing the stored run keeps the recorded corpus size without loading the corpus again.
    assert evaluate_bright.main(argv) == 0
    assert {c["config"] for c in hub_calls} == {"examples"}
    assert _record(tmp_path, argv)["derived"]["data"]["corpus_documents"] > 0
    assert evaluate_bright.main(argv[:-1] + ["main"]) == EXIT_USAGE


def test_a_mirror_records_no_revision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = _argv(tmp_path, "--bright_dir", str(MINI))
    assert evaluate_bright.main(argv) == 0
    assert _record(tmp_path, argv)["derived"]["data"]["revision"] is None
    n_docs = sum(1 for _ in read_jsonl(MINI / "documents" / f"{TASK}.jsonl"))
    assert f"[bright_mini, {n_docs} documents]" in capsys.readouterr().out


def test_a_scores_file_of_another_split_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    other = tmp_path / "biology.trec"
    other.write_text("bio-q1 Q0 bio-d1 1 3.5 other\nbio-q2 Q0 bio-d2 1 2.0 other\n")
    argv = ["--task", TASK, "--scores", str(other), "--bright_dir", str(MINI), "--output_dir", str(tmp_path / "out")]
    assert evaluate_bright.main(argv) == EXIT_USAGE
    assert not (tmp_path / "out").exists()


def test_hybrid_population_flag_is_checked_and_recorded(tmp_path: Path) -> None:
    base = ["--task", TASK, "--model", "minilm", "--bright_dir", str(MINI), "--output_dir", str(tmp_path)]
    config = evaluate_bright.parse_config([*base, "--hybrid_bm25_alpha", "0.5", "--hybrid_population", "topk:100"])
    assert config.settings()["hybrid_population"] == "topk:100"
    for bad in (["--hybrid_bm25_alpha", "0.5", "--hybrid_population", "top100"],
                ["--hybrid_population", "topk:100"]):  # fmt: skip
        with pytest.raises(SystemExit):
            evaluate_bright.parse_config([*base, *bad])
    assert parse_population("corpus") is None and parse_population("topk:7") == 7


def test_top_list_population_fuses_as_designed() -> None:
    """z over each retriever's own top 3; a document missing from one list gets that list's minimum z."""
    dense = np.array([0.9, 0.8, 0.1, 0.7, 0.2, np.nan])
    bm25 = np.array([0.0, 5.0, 4.0, 0.0, 3.0, np.nan])
    alpha = 0.6
    fused = fuse_top_lists(dense, bm25, alpha, 3)
    dense_top, bm25_top = [0, 1, 3], [1, 2, 4]
    z_dense, z_bm25 = zscore(dense[dense_top]), zscore(bm25[bm25_top])
    side_dense = dict(zip(dense_top, z_dense, strict=True))
    side_bm25 = dict(zip(bm25_top, z_bm25, strict=True))
    for doc in (0, 1, 2, 3, 4):
        expected = alpha * side_dense.get(doc, z_dense.min()) + (1 - alpha) * side_bm25.get(doc, z_bm25.min())
        assert fused[doc] == pytest.approx(expected, abs=1e-12)
    assert np.isnan(fused[5])  # excluded: in neither list
    # Over the whole corpus the same query fuses differently (BM25's zeros join the population).
    corpus_z = alpha * zscore(dense) + (1 - alpha) * zscore(bm25)
    assert not np.allclose(corpus_z[:5], fused[:5])


def test_excluded_ids_check_holds_under_python_O() -> None:
    code = (
        "from models.evaluation.runs import check_no_excluded\n"
        "from models.retrieval.corpus import Example\n"
        "e = Example(query_id='q', query='x', gold_ids=['g'], excluded_ids=['bad'])\n"
        "check_no_excluded({'q': {'bad': 1.0, 'g': 0.5}}, {'q': {'g': 1}}, [e])\n"
    )
    done = subprocess.run([sys.executable, "-O", "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 1
    assert "ValueError: query q: excluded documents ['bad'] are retrieved" in done.stderr


def test_stage_1_loads_the_pinned_revision(tmp_path: Path, hub_calls: list) -> None:
    from models.embedded.assets import minilm_path
    from run_src import encode_corpus

    argv = ["--split", TASK, "--source", "hf", "--model_path", str(minilm_path()), "--text_format", "plain",
            "--cache_root", str(tmp_path), "--quiet"]  # fmt: skip
    assert encode_corpus.main(argv) == 0
    assert [(c["config"], c["revision"]) for c in hub_calls] == [("documents", BRIGHT_REVISION)]
    (record_path,) = tmp_path.glob(f"doc_emb/*/{TASK}/encode_config.json")
    record = json.loads(record_path.read_text())
    assert record["settings"]["bright_revision"] == BRIGHT_REVISION
    assert record["derived"]["revision"] == BRIGHT_REVISION


def test_later_stages_follow_the_revision_their_inputs_recorded() -> None:
    assert resolve_revision(None, {"run-a": "abc", "run-b": "abc", "old-run": None}) == "abc"
    assert resolve_revision("flag", {"run-a": "abc"}) == "flag"
    assert resolve_revision(None, {"old-run": None}) == BRIGHT_REVISION
    with pytest.raises(ValueError, match="run-a: abc; run-b: def"):
        resolve_revision(None, {"run-a": "abc", "run-b": "def"})


def test_a_sweep_loads_the_model_once_and_writes_the_runs_alone_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.retrieval import encoders

    built: list[str] = []
    real_build = encoders.build_encoder

    def counting_build_encoder(config: Any) -> Any:
        built.append(config.model_name_or_path)
        return real_build(config)

    monkeypatch.setattr(encoders, "build_encoder", counting_build_encoder)
    common = ["--model", "minilm", "--bright_dir", str(MINI), "--cache_root", str(tmp_path / "cache")]
    sweep = [*common, "--output_dir", str(tmp_path / "sweep"), "--task", "biology", "--task", TASK,
             "--query_type", "original", "--query_type", "gpt4_reason"]  # fmt: skip
    assert evaluate_bright.main(sweep) == 0
    assert len(built) == 1
    runs = sorted(p.parent.relative_to(tmp_path / "sweep").as_posix() for p in (tmp_path / "sweep").rglob("score.json"))
    assert runs == [f"minilm/{q}/{t}" for q in ("gpt4_reason", "original") for t in ("biology", TASK)]
    alone = [*common, "--output_dir", str(tmp_path / "alone"), "--task", TASK, "--query_type", "gpt4_reason"]
    assert evaluate_bright.main(alone) == 0
    for name in ("score.json", "results.json"):
        swept = (tmp_path / "sweep" / "minilm" / "gpt4_reason" / TASK / name).read_text()
        assert swept == (tmp_path / "alone" / "minilm" / "gpt4_reason" / TASK / name).read_text()
    with pytest.raises(ValueError, match="sweep of 4 runs"):
        evaluate_bright.parse_config(sweep)


def test_a_failing_run_of_a_sweep_does_not_stop_the_others(tmp_path: Path) -> None:
    argv = ["--model", "bm25", "--bright_dir", str(MINI), "--output_dir", str(tmp_path), "--task", "aops",
            "--task", TASK]  # fmt: skip  (the mini mirror has no aops split)
    assert evaluate_bright.main(argv) == EXIT_USAGE
    assert (tmp_path / "bm25" / "original" / TASK / "results.json").is_file()
