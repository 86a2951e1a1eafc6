"""Metrics and run files (``models.evaluation.metrics``) and the ``--scores`` path of ``run_src.evaluate_bright``.

The fixture is a hand-made BRIGHT-shaped split (a mirror with ``examples/theoremqa_questions.jsonl``)
and a run that exercises every rule of specs/evaluation.md §2.3:

* ``q1``: tied scores (pytrec_eval ranks ties by *descending* doc id: ``d2`` > ``d10`` > ``d1``), and
  an excluded id (``d9``) scored highest, which must be removed before evaluation;
* ``q2``: retrieves none of its relevant documents (counts, with zeros);
* ``q3``: missing from the run (pytrec_eval drops it from the means; ``--missing_queries zero`` keeps it);
* ``q4``: has no gold ids (not in the qrels, so not evaluated even though the run has it);
* ``q5``: duplicated gold id, and the query's own id excluded (as in aops/theoremqa_questions);
* ``qx``: not a query of the split at all.

Expected numbers come from pytrec_eval called directly here, averaged the way BRIGHT's
``calculate_retrieval_metrics`` does, plus a few values worked out by hand.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval

from models.evaluation.metrics import (
    DEFAULT_K_VALUES,
    detect_run_format,
    evaluate_run,
    metric_keys,
    read_run,
    trec_measure_name,
    write_trec_run,
)
from models.retrieval.hybrid import fuse_scores, top_k_stable, zscore
from run_src import evaluate_bright
from run_src.evaluate_bright import parse_config

TASK = "theoremqa_questions"
EXAMPLES = [
    {"id": "q1", "query": "first", "gold_ids": ["d1", "d3"], "excluded_ids": ["d9"]},
    {"id": "q2", "query": "second", "gold_ids": ["d5"], "excluded_ids": []},
    {"id": "q3", "query": "third", "gold_ids": ["d7"], "excluded_ids": []},
    {"id": "q4", "query": "fourth", "gold_ids": [], "excluded_ids": []},
    {"id": "q5", "query": "fifth", "gold_ids": ["d4", "d4", "d6"], "excluded_ids": ["q5", "N/A"]},
]
RUN = {
    "q1": {"d9": 9.0, "d1": 2.0, "d10": 2.0, "d2": 2.0, "d3": 0.5},
    "q2": {"d1": 0.3, "d2": 0.2},
    "q4": {"d1": 1.0},
    "q5": {"q5": 5.0, "d8": 0.95, "d6": 0.9, "d11": 0.5, "d4": 0.1},
    "qx": {"d1": 1.0},
}
# What BRIGHT evaluates: excluded ids gone, unknown queries gone; gold ids as a set.
QRELS = {"q1": {"d1": 1, "d3": 1}, "q2": {"d5": 1}, "q3": {"d7": 1}, "q5": {"d4": 1, "d6": 1}}
CLEAN_RUN = {
    "q1": {"d1": 2.0, "d10": 2.0, "d2": 2.0, "d3": 0.5},
    "q2": {"d1": 0.3, "d2": 0.2},
    "q4": {"d1": 1.0},
    "q5": {"d8": 0.95, "d6": 0.9, "d11": 0.5, "d4": 0.1},
}


def pytrec_reference(qrels: dict, run: dict) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """BRIGHT's calculate_retrieval_metrics, written out against pytrec_eval directly."""
    cut = ",".join(map(str, DEFAULT_K_VALUES))
    measures = {f"ndcg_cut.{cut}", f"map_cut.{cut}", f"recall.{cut}", f"P.{cut}", "recip_rank"}
    scores = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    out: dict[str, float] = {}
    for ours, theirs in (("NDCG", "ndcg_cut"), ("MAP", "map_cut"), ("Recall", "recall"), ("P", "P")):
        for k in DEFAULT_K_VALUES:
            total = 0.0
            for qid in scores:
                total += scores[qid][f"{theirs}_{k}"]
            out[f"{ours}@{k}"] = round(total / len(scores), 5)
    mrr = 0.0
    for qid in scores:
        mrr += scores[qid]["recip_rank"]
    out["MRR"] = round(mrr / len(scores), 5)
    return out, scores


@pytest.fixture()
def mirror(tmp_path: Path) -> Path:
    root = tmp_path / "bright"
    (root / "examples").mkdir(parents=True)
    with open(root / "examples" / f"{TASK}.jsonl", "w", encoding="utf-8") as handle:
        for row in EXAMPLES:
            handle.write(json.dumps(row) + "\n")
    return root


def run_main(mirror: Path, scores: Path, out: Path, *extra: str) -> tuple[int, Path]:
    rc = evaluate_bright.main(
        ["--task", TASK, "--model", "rader", "--bright_dir", str(mirror), "--scores", str(scores),
         "--output_dir", str(out), *extra]
    )  # fmt: skip
    return rc, out / "rader" / "original" / TASK


def write_score_json(path: Path, run: dict) -> Path:
    path.write_text(json.dumps(run, indent=2), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- evaluate_run


def test_evaluate_run_matches_pytrec_eval_and_bright_averaging() -> None:
    expected, expected_per_query = pytrec_reference(QRELS, CLEAN_RUN)
    aggregate, per_query = evaluate_run(QRELS, CLEAN_RUN)
    assert aggregate == expected
    assert list(aggregate) == metric_keys() and len(aggregate) == 25
    assert set(per_query) == {"q1", "q2", "q5"}  # q3 missing from the run, q4 unjudged
    for qid, values in per_query.items():
        assert values == {key: expected_per_query[qid][trec_measure_name(key)] for key in metric_keys()}
    assert all(value == round(value, 5) for value in aggregate.values())


def test_hand_computed_values_ties_by_descending_doc_id() -> None:
    _, per_query = evaluate_run(QRELS, CLEAN_RUN)
    q1 = per_query["q1"]
    # Ranking d2, d10, d1 (ties at 2.0, ids descending as strings), then d3: relevant at ranks 3 and 4.
    assert q1["MRR"] == pytest.approx(1 / 3)
    assert q1["P@1"] == 0.0 and q1["P@5"] == pytest.approx(2 / 5) and q1["P@10"] == pytest.approx(2 / 10)
    assert q1["Recall@1"] == 0.0 and q1["Recall@5"] == 1.0
    idcg = 1 + 1 / math.log2(3)
    assert q1["NDCG@10"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(5)) / idcg)
    assert q1["MAP@10"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert per_query["q2"] == dict.fromkeys(metric_keys(), 0.0)
    # q5: d6 at rank 2, d4 at rank 4 (the duplicate gold id counts once).
    assert per_query["q5"]["Recall@5"] == 1.0 and per_query["q5"]["MRR"] == 0.5

    # Dict order never matters, only score then doc id: "9" ranks before "10", "b" before "a".
    for run in ({"q": {"a": 1.0, "b": 1.0}}, {"q": {"b": 1.0, "a": 1.0}}):
        assert evaluate_run({"q": {"a": 1}}, run)[0]["P@1"] == 0.0
    assert evaluate_run({"q": {"10": 1}}, {"q": {"10": 1.0, "9": 1.0}})[0]["MRR"] == 0.5


def test_missing_queries_drop_or_zero(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="models.evaluation.metrics"):
        dropped, per_query = evaluate_run(QRELS, CLEAN_RUN)
    assert "1 of 4 judged queries are missing from the run" in caplog.text and "q3" in caplog.text
    zero, zero_per_query = evaluate_run(QRELS, CLEAN_RUN, missing_queries="zero")
    assert zero_per_query["q3"] == dict.fromkeys(metric_keys(), 0.0) and len(zero_per_query) == 4
    assert zero == pytrec_reference(QRELS, {**CLEAN_RUN, "q3": {}})[0]
    assert zero["NDCG@10"] < dropped["NDCG@10"]


def test_evaluate_run_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="no query can be evaluated"):
        evaluate_run(QRELS, {"other": {"d1": 1.0}})
    with pytest.raises(ValueError, match="finite"):
        evaluate_run(QRELS, {"q1": {"d1": float("nan")}})
    with pytest.raises(ValueError, match="integers"):
        evaluate_run({"q1": {"d1": 0.5}}, CLEAN_RUN)
    with pytest.raises(ValueError, match="k_values"):
        evaluate_run(QRELS, CLEAN_RUN, k_values=())
    assert trec_measure_name("NDCG@10") == "ndcg_cut_10" and trec_measure_name("MRR") == "recip_rank"
    with pytest.raises(ValueError, match="unknown metric key"):
        trec_measure_name("nDCG@10")


def test_integer_scores_and_custom_cutoffs() -> None:
    # BRIGHT rerank files hold JSON ints (0, -1); pytrec_eval needs floats.
    aggregate, _ = evaluate_run({"q": {"a": 1}}, {"q": {"a": 0, "b": -1}}, k_values=(1, 3))
    assert list(aggregate) == ["NDCG@1", "NDCG@3", "MAP@1", "MAP@3", "Recall@1", "Recall@3", "P@1", "P@3", "MRR"]
    assert aggregate["MRR"] == 1.0


# ---------------------------------------------------------------------------------------------- evaluate_bright --scores


def test_evaluate_bright_scores_file_end_to_end(mirror: Path, tmp_path: Path) -> None:
    rc, run_dir = run_main(mirror, write_score_json(tmp_path / "run.json", RUN), tmp_path / "out")
    assert rc == 0
    results = json.loads((run_dir / "results.json").read_text())
    per_query = json.loads((run_dir / "per_query.json").read_text())
    stored = json.loads((run_dir / "score.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())["settings"]

    expected, _ = pytrec_reference(QRELS, CLEAN_RUN)
    assert results == expected == evaluate_run(QRELS, CLEAN_RUN)[0]
    assert set(per_query) == {"q1", "q2", "q5"}
    # score.json: excluded ids and unknown queries gone, best first (ties in file order).
    assert stored == CLEAN_RUN and "qx" not in stored and "d9" not in stored["q1"] and "q5" not in stored["q5"]
    assert list(stored["q1"]) == ["d1", "d10", "d2", "d3"]
    assert config["scores"] == str(tmp_path / "run.json") and config["task"] == TASK
    # The excluded id counted would have changed the numbers: BRIGHT removes it first.
    assert evaluate_run(QRELS, {**CLEAN_RUN, "q1": RUN["q1"]})[0] != results


def test_trec_tevatron_and_score_json_inputs_give_identical_results(mirror: Path, tmp_path: Path) -> None:
    # Scores that do not survive a short decimal print: repr round-trips them exactly.
    run = {qid: {doc: score / 3 + 1e-9 for doc, score in docs.items()} for qid, docs in RUN.items()}
    json_path = write_score_json(tmp_path / "run.json", run)
    trec_path = write_trec_run(run, tmp_path / "run.trec", tag="test")
    tev_path = tmp_path / "run.tsv"
    tev_path.write_text("".join(f"{q}\t{d}\t{s!r}\n" for q, docs in run.items() for d, s in docs.items()))
    gz_path = tmp_path / "run.trec.gz"
    gz_path.write_bytes(gzip.compress(trec_path.read_bytes()))

    assert [detect_run_format(p) for p in (json_path, trec_path, tev_path)] == ["score_json", "trec", "tevatron"]
    for path in (trec_path, tev_path, gz_path):
        assert read_run(path) == read_run(json_path) == run
    outputs = []
    for name, path in (("json", json_path), ("trec", trec_path), ("tevatron", tev_path), ("gz", gz_path)):
        rc, run_dir = run_main(mirror, path, tmp_path / name)
        assert rc == 0
        outputs.append(
            {f: json.loads((run_dir / f).read_text()) for f in ("results.json", "per_query.json", "score.json")}
        )
    # Equal as dicts; score.json's key order may differ among tied documents (file order is kept for ties).
    assert all(output == outputs[0] for output in outputs[1:])


def test_write_trec_run_ranks_as_trec_eval_does(tmp_path: Path) -> None:
    path = write_trec_run({"q1": RUN["q1"]}, tmp_path / "q1.trec")
    lines = [line.split() for line in path.read_text().splitlines()]
    assert [(cols[2], cols[3]) for cols in lines] == [("d9", "1"), ("d2", "2"), ("d10", "3"), ("d1", "4"), ("d3", "5")]
    assert all(cols[1] == "Q0" and cols[5] == "rader" for cols in lines)
    with pytest.raises(ValueError, match="whitespace"):
        write_trec_run({"q 1": {"d": 1.0}}, tmp_path / "bad.trec")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("q1 Q0 d1 1 0.5 run\nq1 Q0 d2 2 0.4\n", r"line 2 has 5 columns but the file is trec"),
        ("q1 d1 0.5\n\nq1 d2 high\n", r"line 3: score 'high' is not a number"),
        ("q1 Q0 d1 first 0.5 run\n", r"line 1: rank 'first' \(column 4\) is not an integer"),
        ("q1 d1 0.5 extra\n", r"line 1 has 4 columns; expected 6 .* 3"),
        ("q1 d1 nan\n", r"line 1: score 'nan' is not finite"),
        ("q1 d1 0.5\nq1 d1 0.4\n", r"line 2: document 'd1' appears twice for query 'q1'"),
        ('{"q1": {"d1": 0.5,}}', r"not valid JSON: .* at line 1 column"),
        ('{"q1": ["d1", "d2"]}', r"query 'q1' holds a list"),
        ('{"q1": {"d1": "0.5"}}', r"query 'q1' doc 'd1' has score '0.5'"),
        ('{"q1": {"d1": true}}', r"has score True"),
    ],
)
def test_malformed_run_files_name_the_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad_run.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        read_run(path)
    assert str(path) in str(info.value)


def test_main_reports_a_malformed_run_and_returns_2(
    mirror: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 d1 1 0.5 run\nq1 Q0 d2 2\n", encoding="utf-8")
    with caplog.at_level(logging.ERROR):
        rc, _ = run_main(mirror, bad, tmp_path / "out")
    assert rc == 2
    assert f"run file {bad} line 2 has 4 columns" in caplog.text
    rc, _ = run_main(mirror, tmp_path / "missing.trec", tmp_path / "out")
    assert rc == 2


# ---------------------------------------------------------------------------------------------- configuration


def test_parse_config_hybrid_alpha_names_and_config_file(tmp_path: Path) -> None:
    base = ["--model", "rader", "--model_path", str(tmp_path), "--output_dir", str(tmp_path / "out")]
    auto = {task: parse_config([*base, "--task", task, "--hybrid_bm25_alpha"]) for task in ("biology", "aops", "champ")}
    assert {task: c.hybrid_bm25_alpha for task, c in auto.items()} == {"biology": 0.8, "aops": 1.0, "champ": 1.0}
    # a --model_path names the run after its folder, so two checkpoints never share one
    assert auto["biology"].model_name == f"rader-{tmp_path.name}+bm25"
    explicit = parse_config([*base, "--task", "biology", "--hybrid_bm25_alpha", "0.5"])
    assert explicit.hybrid_bm25_alpha == 0.5 and explicit.model_name == f"rader-{tmp_path.name}+bm25_a0.5"
    assert auto["champ"].encoder.instruction_task == "theoremqa_theorems"
    assert auto["champ"].run_dir == tmp_path / "out" / f"rader-{tmp_path.name}+bm25" / "original" / "champ"
    for bad in (["--hybrid_bm25_alpha", "1.5"], ["--hybrid_bm25_alpha", "x"], ["--long_context"]):
        with pytest.raises(SystemExit):
            parse_config([*base, "--task", "aops", *bad])
    with pytest.raises(SystemExit):
        parse_config(["--task", "aops", "--model", "bm25", "--output_dir", "o", "--hybrid_bm25_alpha"])

    # A written config.json reproduces the config; flags on the command line win.
    config = parse_config([*base, "--task", "biology", "--query_type", "gpt4_reason", "--long_context"])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(evaluate_bright.stage_record(config, "hf").to_dict()))
    assert parse_config(["--config", str(path)]) == config
    assert parse_config(["--config", str(path), "--top_k", "10"]).top_k == 10


def test_reused_score_json_must_match_the_settings(mirror: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, run_dir = run_main(mirror, write_score_json(tmp_path / "run.json", RUN), out)
    assert rc == 0
    retrieve = ["--task", TASK, "--model", "rader", "--model_path", str(tmp_path), "--model_name", "rader",
                "--bright_dir", str(mirror), "--output_dir", str(out)]  # fmt: skip
    # The stored run came from a file; a retrieval run of the same name must not silently reuse it.
    assert evaluate_bright.main(retrieve) == 2
    # Make the stored config say "retrieved with these settings": now it is reused (no corpus needed) ...
    retrieval = evaluate_bright.parse_config([*retrieve])
    (run_dir / "config.json").write_text(json.dumps(evaluate_bright.stage_record(retrieval, "hf").to_dict()))
    (run_dir / "results.json").unlink()
    assert evaluate_bright.main(retrieve) == 0
    assert json.loads((run_dir / "results.json").read_text()) == evaluate_run(QRELS, CLEAN_RUN)[0]
    # ... but not when a setting that shapes the run differs.
    assert evaluate_bright.main([*retrieve, "--top_k", "10"]) == 2


# ---------------------------------------------------------------------------------------------- hybrid fusion


def test_zscore_population_std_nan_and_constant_lists() -> None:
    scores = np.array([1.0, 2.0, np.nan, 3.0, 4.0])
    z = zscore(scores)
    finite = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(z[[0, 1, 3, 4]], (finite - finite.mean()) / finite.std(ddof=0))
    assert np.isnan(z[2])
    np.testing.assert_array_equal(zscore(np.array([0.0, 0.0, np.nan])), [0.0, 0.0, np.nan])

    dense, bm25 = np.array([0.9, 0.5, 0.1, np.nan]), np.array([0.0, 10.0, 5.0, np.nan])
    fused = fuse_scores(dense, bm25, 0.8)
    np.testing.assert_allclose(fused[:3], 0.8 * zscore(dense)[:3] + 0.2 * zscore(bm25)[:3])
    np.testing.assert_allclose(fuse_scores(dense, bm25, 1.0)[:3], zscore(dense)[:3])


def test_top_k_stable_keeps_position_order_for_ties() -> None:
    scores = np.array([0.5, 0.9, np.nan, 0.5, 0.9, 0.1])
    assert top_k_stable(scores, 3).tolist() == [1, 4, 0]
    assert top_k_stable(scores, 10).tolist() == [1, 4, 0, 3, 5]
