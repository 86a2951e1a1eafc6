"""``python -m run_src.rerank`` end to end on the embedded CHAMP split, with real models.

First stage: BRIGHT's BM25 through ``evaluate_bright``. Reranked: the first 8 problems whose BM25 top 10
holds a gold concept (so reranking can move it), top 10 each, through

* the LLM reranker against the real vLLM CPU server serving SmolLM2-135M-Instruct (``generator_server``),
  mixed 0.5/0.5 with the raw BM25 scores as in the paper, in our style (chat) and, on 3 problems, in the
  published style (raw completions);
* the pointwise reranker (first 3 of those problems): a SmolLM2 backbone with a LoRA adapter and a new
  head, saved and loaded by the stage.

SmolLM2-135M is no relevance judge, so the checks are on behaviour (every file, valid metrics, replies
parsed and counted, the cache reused) and the numbers are printed (run with ``-s``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.evaluation.metrics import metric_keys
from run_src import evaluate_bright, rerank
from tests.conftest import RunningServer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
N_QUERIES, TOP_K = 8, 10
RUN_FILES = ["config.json", "first_stage_results.json", "per_query.json", "rerank_cache.jsonl",
             "rerank_cache_meta.json", "rerank_only_results.json", "rerank_scores.json", "results.json", "score.json"]  # fmt: skip


@pytest.fixture(scope="module")
def first_stage(champ_mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BM25's CHAMP run cut to N_QUERIES problems with a gold concept in the top 10 (a run file)."""
    root = tmp_path_factory.mktemp("rerank_champ")
    argv = ["--task", "champ", "--model", "bm25", "--bright_dir", str(champ_mirror), "--output_dir",
            str(root / "out"), "--cache_root", str(root / "cache")]  # fmt: skip
    assert evaluate_bright.main(argv) == 0
    run_dir = root / "out" / "bm25" / "original" / "champ"
    scores, per_query = (json.loads((run_dir / name).read_text()) for name in ("score.json", "per_query.json"))
    chosen = [qid for qid in scores if per_query[qid]["Recall@10"] > 0][:N_QUERIES]
    subset = root / "bm25_subset.json"
    subset.write_text(json.dumps({qid: scores[qid] for qid in chosen}))
    return subset


def rerank_argv(champ_mirror: Path, first_stage: Path, *extra: str) -> list[str]:
    return ["--task", "champ", "--bright_dir", str(champ_mirror), "--first_stage", str(first_stage),
            "--first_stage_model", "bm25", "--output_dir", str(first_stage.parent / "out"), "--top_k", str(TOP_K),
            *extra]  # fmt: skip


def check_run(run_dir: Path, n_queries: int = N_QUERIES) -> tuple[dict, dict, dict]:
    assert sorted(p.name for p in run_dir.iterdir()) == RUN_FILES
    results, before, config = (
        json.loads((run_dir / name).read_text()) for name in ("results.json", "first_stage_results.json", "config.json")
    )
    per_query, final = (json.loads((run_dir / name).read_text()) for name in ("per_query.json", "score.json"))
    assert list(results) == metric_keys() and all(0.0 <= v <= 1.0 for v in results.values())
    assert len(per_query) == len(final) == n_queries and all(len(r) == TOP_K for r in final.values())
    assert results["NDCG@10"] == round(sum(q["NDCG@10"] for q in per_query.values()) / n_queries, 5)
    assert before["Recall@10"] == results["Recall@10"]  # reranking the top 10 reorders, never adds or drops
    assert config["derived"]["n_pairs"] == n_queries * TOP_K
    return results, before, config


def test_llm_rerank_with_smollm2_on_vllm(
    generator_server: RunningServer, champ_mirror: Path, first_stage: Path
) -> None:
    argv = rerank_argv(champ_mirror, first_stage, "--reranker", "llm", "--model", generator_server.model,
                       "--base_url", generator_server.base_url, "--reranker_name", "smollm2", "--max_concurrency", "16",
                       "--queries_per_batch", "8", "--timeout_s", "300")  # fmt: skip
    assert rerank.main(argv) == 0
    run_dir = first_stage.parent / "out" / "bm25+smollm2" / "original" / "champ"
    results, before, config = check_run(run_dir)
    derived = config["derived"]
    assert sum(derived["status_counts"].values()) == N_QUERIES * TOP_K and derived["n_errors"] == 0
    assert derived["status_counts"]["ok"] > 0  # the few-shot format gets parsed replies even from 135M
    assert derived["llm_usage"]["requests"] == N_QUERIES * TOP_K + 1  # + the start-up probe
    assert derived["reranker"]["prompt"]["name"] == "rerank_relevance"
    rerank_scores = json.loads((run_dir / "rerank_scores.json").read_text())
    values = {v for ranking in rerank_scores.values() for v in ranking.values()}
    assert values <= {0.0, 0.2, 0.4, 0.6, 0.8, 1.0}
    first = json.loads(first_stage.read_text())
    final = json.loads((run_dir / "score.json").read_text())
    for qid, ranking in final.items():  # 0.5 * rerank + 0.5 * raw BM25, by hand for every pair
        for doc_id, score in ranking.items():
            assert score == pytest.approx(0.5 * rerank_scores[qid][doc_id] + 0.5 * first[qid][doc_id])
    print(
        f"\nCHAMP {N_QUERIES} queries, BM25 top {TOP_K}, SmolLM2 LLM rerank: NDCG@10 {before['NDCG@10']:.5f} -> "
        f"{results['NDCG@10']:.5f} (rerank only {derived['rerank_only_ndcg10']:.5f}); replies {derived['status_counts']}"
    )

    assert rerank.main(argv) == 0  # resumed from the cache: no request at all, same run
    again = json.loads((run_dir / "config.json").read_text())["derived"]
    assert again["llm_usage"] is None and again["reranker"] == derived["reranker"]
    assert json.loads((run_dir / "score.json").read_text()) == final


def test_published_style_llm_rerank_with_smollm2_on_vllm(
    generator_server: RunningServer, champ_mirror: Path, first_stage: Path
) -> None:
    """The published style end to end: raw prompts on vLLM's /v1/completions, sampled at 0.6/0.9, parsed."""
    argv = rerank_argv(champ_mirror, first_stage, "--reranker", "llm", "--model", generator_server.model,
                       "--base_url", generator_server.base_url, "--rerank_style", "published", "--max_queries", "3",
                       "--max_concurrency", "16", "--queries_per_batch", "3", "--timeout_s", "300")  # fmt: skip
    assert rerank.main(argv) == 0
    run_dir = first_stage.parent / "out" / f"bm25+llm-{Path(generator_server.model).name}-published" / "original"
    results, before, config = check_run(run_dir / "champ", n_queries=3)
    settings, derived = config["settings"], config["derived"]
    assert (settings["rerank_style"], settings["temperature"], settings["top_p"]) == ("published", 0.6, 0.9)
    assert derived["reranker"]["style"] == "published" and derived["reranker"]["family"] == "theoremqa"
    assert set(derived["status_counts"]) == {"ok", "no_score", "unreadable", "out_of_range", "error"}
    assert sum(derived["status_counts"].values()) == 3 * TOP_K and derived["n_errors"] == 0
    assert derived["llm_usage"]["requests"] == 3 * TOP_K + 1  # + the start-up probe (a completion)
    print(f"\nCHAMP 3 queries, published-style SmolLM2 rerank: NDCG@10 {before['NDCG@10']:.5f} -> "
          f"{results['NDCG@10']:.5f}; replies {derived['status_counts']}")  # fmt: skip


def test_pointwise_rerank_cli(smollm2_dir: Path, champ_mirror: Path, first_stage: Path, tmp_path: Path) -> None:
    from models.reranking.pointwise import LoraSettings, PointwiseReranker, RerankerFormat

    model = PointwiseReranker.from_backbone(
        str(smollm2_dir), fmt=RerankerFormat(max_len=64), lora=LoraSettings(r=4), seed=0
    )
    model.save_pretrained(tmp_path / "smollm2_reranker")
    argv = rerank_argv(champ_mirror, first_stage, "--reranker", "pointwise", "--model",
                       str(tmp_path / "smollm2_reranker"), "--batch_size", "5", "--max_queries", "3")  # fmt: skip
    assert rerank.main(argv) == 0
    run_dir = first_stage.parent / "out" / "bm25+pointwise-smollm2_reranker" / "original" / "champ"
    results, before, config = check_run(run_dir, n_queries=3)  # 135M on one CPU thread: ~1 s per pair
    assert config["settings"]["rerank_weight"] == 1.0 and config["derived"]["reranker"]["backbone_format"] == "lora"
    assert config["settings"]["max_length"] == 8192  # SmolLM2's positions, not the saved training limit (64)
    final = json.loads((run_dir / "score.json").read_text())
    assert final == json.loads((run_dir / "rerank_scores.json").read_text())  # ranked by the logit alone

    # The stage's scores are the model's: recompute one query by hand.
    from models.retrieval.corpus import load_corpus, load_examples

    qid = next(iter(final))
    query = next(e.query for e in load_examples(str(champ_mirror), "champ") if e.query_id == qid)
    corpus = load_corpus(str(champ_mirror), "champ")
    doc_ids = list(final[qid])
    model.with_max_len(8192)  # as the stage scored: whole pairs
    expected = model.score_pairs([query] * len(doc_ids), [corpus.text_of(d) for d in doc_ids], batch_size=10)
    assert [final[qid][d] for d in doc_ids] == pytest.approx(expected, abs=1e-4)
    print(f"\nCHAMP pointwise (untrained SmolLM2 head): NDCG@10 {before['NDCG@10']:.5f} -> {results['NDCG@10']:.5f}")
