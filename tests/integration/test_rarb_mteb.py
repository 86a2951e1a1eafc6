"""``python -m run_src.evaluate_rarb`` through the real ``mteb`` package on a hand-written RAR-b-shaped fixture.

``tests/resources/rarb_mini`` holds RARbMath as BEIR files (7 judged problems + one unjudged, 19 answers
with near-miss distractors) and RARbCode as a copy of the Hub repo layout (6 problems, 18 solutions).
all-MiniLM-L6-v2 is evaluated by mteb; its saved top-1000 run is then scored again with our
:func:`models.evaluation.metrics.evaluate_run` (same nDCG@10), and rebuilt from scratch with our own encoder and
exact search (same ranking), which pins what the wrapper feeds the model: the task's own instruction
and a space before each query, documents as they are.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.evaluation import rarb_data
from models.evaluation.metrics import evaluate_run, read_run
from models.io_utils import read_jsonl
from run_src import evaluate_rarb
from tests.conftest import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "resources" / "rarb_mini"
INSTRUCTIONS = {
    "RARbMath": "Retrieve the answer for the following math problem.",
    "RARbCode": "Retrieve the answer for the following coding problem.",
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("rarb")
    argv = ["--model", "minilm", "--model_path", str(minilm_dir), "--data_dir", str(FIXTURE), "--output_dir", str(out),
            "--save_predictions", "--encode_batch_size", "16"]  # fmt: skip
    assert evaluate_rarb.main(argv) == 0
    return out / "minilm"


def fixture_data(task: str) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """Queries, corpus and qrels of a fixture task, read without mteb."""
    split = rarb_data.load_local_split(FIXTURE / task)
    queries = dict(zip(split["queries"]["id"], split["queries"]["text"], strict=True))
    corpus = dict(zip(split["corpus"]["id"], split["corpus"]["text"], strict=True))
    return queries, corpus, split["relevant_docs"]


def test_both_layouts_load() -> None:
    math_queries, math_corpus, math_qrels = fixture_data("RARbMath")
    assert len(math_queries) == 7 and len(math_corpus) == 19 and "m8" not in math_queries  # unjudged query dropped
    assert all(len(docs) == 1 for docs in math_qrels.values())  # RAR-b: one answer per problem
    code_queries, code_corpus, code_qrels = fixture_data("RARbCode")
    assert (len(code_queries), len(code_corpus), code_qrels["c1"]) == (6, 18, {"s1": 1})
    assert [row["_id"] for row in read_jsonl(FIXTURE / "RARbMath" / "corpus.jsonl")][:2] == ["a1", "a2"]


@pytest.mark.parametrize("task", sorted(INSTRUCTIONS))
def test_mteb_scores_match_our_metrics_and_our_own_retrieval(evaluated: Path, task: str, minilm_dir: Path) -> None:
    results = json.loads((evaluated / task / "results.json").read_text())
    config = json.loads((evaluated / task / "config.json").read_text())
    assert list(results)[:2] == ["ndcg_at_10", "main_score"] and results["main_score"] == results["ndcg_at_10"]
    assert config["derived"]["query_instruction_text"] == INSTRUCTIONS[task] + " "
    assert config["settings"]["instruction_template"] == "{instruction} " and config["settings"]["text_format"] == "plain"

    queries, corpus, qrels = fixture_data(task)
    predictions = read_run(evaluated / task / "predictions.json")
    assert set(predictions) == set(queries) and all(len(r) == len(corpus) for r in predictions.values())
    ours, _ = evaluate_run(qrels, predictions)
    for k in (1, 5, 10):
        assert ours[f"NDCG@{k}"] == pytest.approx(results[f"ndcg_at_{k}"], abs=1e-5)
    assert ours["MRR"] == pytest.approx(results["mrr_at_1000"], abs=1e-5)

    # The same run without mteb: our encoder, the instruction + " " before each query, exact cosine.
    from models.retrieval.encoders import EncoderConfig, build_encoder

    encoder = build_encoder(EncoderConfig(str(minilm_dir), pooling="mean", batch_size=16))
    qids, doc_ids = list(queries), list(corpus)
    q = encoder.encode_queries([INSTRUCTIONS[task] + " " + queries[qid] for qid in qids])
    d = encoder.encode_documents([corpus[doc_id] for doc_id in doc_ids], show_progress=False)
    scores = q @ d.T
    for row, qid in enumerate(qids):
        ranking = [doc_ids[i] for i in np.argsort(-scores[row], kind="stable")]
        theirs = sorted(predictions[qid], key=lambda doc_id: -predictions[qid][doc_id])
        assert ranking[:5] == theirs[:5]
        assert [predictions[qid][doc_id] for doc_id in theirs[:5]] == pytest.approx(
            [float(scores[row, doc_ids.index(doc_id)]) for doc_id in theirs[:5]], abs=1e-5
        )
    print(f"\n{task} all-MiniLM-L6-v2 (w/ Inst.): nDCG@10 {results['ndcg_at_10']:.5f}")


def test_summary_and_resume(evaluated: Path, minilm_dir: Path) -> None:
    summary = json.loads((evaluated / "rarb_summary.json").read_text())
    assert set(summary) == set(INSTRUCTIONS) and 0.5 < summary["RARbMath"] < 1.0
    before = {task: (evaluated / task / "results.json").stat().st_mtime_ns for task in INSTRUCTIONS}
    argv = ["--model", "minilm", "--model_path", str(minilm_dir), "--data_dir", str(FIXTURE), "--output_dir",
            str(evaluated.parent), "--save_predictions", "--encode_batch_size", "4"]  # fmt: skip
    assert evaluate_rarb.main(argv) == 0  # batch size is not a scoring setting: both tasks are reused
    assert {task: (evaluated / task / "results.json").stat().st_mtime_ns for task in INSTRUCTIONS} == before
    assert evaluate_rarb.main([*argv, "--instruction_template", "none"]) == 2  # other scores: refused


def test_instruction_templates(minilm_dir: Path) -> None:
    from models.evaluation.mteb_wrapper import INSTRUCT_QUERY_TEMPLATE, default_instruction_template

    rader = evaluate_rarb.parse_config(["--model", "rader", "--model_path", "/m/rader", "--output_dir", "o"])
    assert (rader.encoder.text_format, rader.encoder.pooling, rader.instruction_template) == (
        "rader", "eos", INSTRUCT_QUERY_TEMPLATE
    )  # fmt: skip
    assert INSTRUCT_QUERY_TEMPLATE.format(instruction=INSTRUCTIONS["RARbMath"]) == (
        "Instruct: Retrieve the answer for the following math problem.\nQuery: "
    )
    assert default_instruction_template("repllama_ref_eval") == "{instruction} "
    bare = evaluate_rarb.parse_config(["--model", "minilm", "--model_path", str(minilm_dir), "--output_dir", "o",
                                       "--instruction_template", "none", "--tasks", "RARbCode"])  # fmt: skip
    assert bare.instruction_template is None and bare.tasks == ("RARbCode",)
    with pytest.raises(SystemExit):
        evaluate_rarb.parse_config(["--model", "minilm", "--output_dir", "o", "--instruction_template", "Q: "])


def test_a_rerun_reuses_results_and_refuses_other_settings(evaluated: Path, minilm_dir: Path) -> None:
    out = evaluated.parent
    argv = ["--model", "minilm", "--model_path", str(minilm_dir), "--data_dir", str(FIXTURE), "--output_dir", str(out),
            "--tasks", "RARbMath"]  # fmt: skip
    stamp = (evaluated / "RARbMath" / "results.json").stat().st_mtime_ns
    assert evaluate_rarb.main([*argv, "--encode_batch_size", "4"]) == 0  # informational: reused
    assert (evaluated / "RARbMath" / "results.json").stat().st_mtime_ns == stamp
    assert evaluate_rarb.main([*argv, "--instruction_template", "none"]) == 2
