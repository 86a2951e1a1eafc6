"""``python -m run_src.rerank --reranker llm`` end to end against a scripted fake generator.

Data: the two-query ``theoremqa_theorems`` mirror in ``tests/resources/bright_mini`` (gold: ladder ->
101 Pythagorean, remainder -> 102 Fermat), a first stage written by hand with raw scores, top 3
reranked. The fake replies per document: Pythagorean 5, Fermat 4, intermediate value 1, Bayes no
score. Every number below is worked out by hand from ``final = 0.5 * score/5 + 0.5 * first stage``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.evaluation.metrics import metric_keys
from run_src import evaluate_bright, rerank
from tests.conftest import REPO_ROOT
from tests.fakes import FakeGeneratorServer
from tests.rerank_fakes import ScriptedRerankFake

MINI = REPO_ROOT / "tests" / "resources" / "bright_mini"
LADDER, REMAINDER = "TheoremQA_mini/ladder.json", "TheoremQA_mini/remainder.json"
FIRST_STAGE = {
    LADDER: {"103": 0.9, "101": 0.8, "104": 0.3, "102": 0.2},  # gold 101 at rank 2
    REMAINDER: {"102": 0.72, "101": 0.6, "103": 0.5, "104": 0.4},  # gold 102 at rank 1
}
REPLIES = {"Pythagorean": "Relevance score: 5", "Fermat": "**Relevance score:** 4",
           "Intermediate": "Relevance score: 1", "Bayes": "I cannot tell."}  # fmt: skip
INV_LOG2_3 = 1 / 1.584962500721156  # nDCG@10 with the single gold document at rank 2


def script(document: str) -> str:
    return next(reply for key, reply in REPLIES.items() if document.startswith(key))


@pytest.fixture()
def first_stage_dir(tmp_path: Path) -> Path:
    """An evaluate_bright run directory (gpt4_reason queries) built from the hand-written run."""
    run_file = tmp_path / "dense_run.json"
    run_file.write_text(json.dumps(FIRST_STAGE))
    argv = ["--task", "theoremqa_theorems", "--model", "bm25", "--model_name", "dense", "--scores", str(run_file),
            "--bright_dir", str(MINI), "--output_dir", str(tmp_path / "out"), "--query_type", "gpt4_reason"]  # fmt: skip
    assert evaluate_bright.main(argv) == 0
    return tmp_path / "out" / "dense" / "gpt4_reason" / "theoremqa_theorems"


def rerank_argv(first_stage_dir: Path, server: FakeGeneratorServer, *extra: str) -> list[str]:
    return ["--task", "theoremqa_theorems", "--reranker", "llm", "--model", "fake-judge",
            "--first_stage_dir", str(first_stage_dir), "--base_url", server.base_url, "--bright_dir", str(MINI),
            "--output_dir", str(first_stage_dir.parents[2]), "--top_k", "3", "--max_retries", "0", *extra]  # fmt: skip


def read(run_dir: Path, name: str) -> dict:
    return json.loads((run_dir / name).read_text())


def test_llm_rerank_arithmetic_files_and_resume(first_stage_dir: Path) -> None:
    failing = {**REPLIES, "Bayes": None}  # first pass: the Bayes request fails with HTTP 500
    with ScriptedRerankFake(lambda doc: next(r for k, r in failing.items() if doc.startswith(k))) as server:
        assert rerank.main(rerank_argv(first_stage_dir, server)) == 0
    run_dir = first_stage_dir.parents[2] / "dense+llm-fake-judge" / "gpt4_reason" / "theoremqa_theorems"
    config = read(run_dir, "config.json")
    assert config["derived"]["n_errors"] == 1 and config["derived"]["n_pairs"] == 6
    assert config["settings"]["query_type"] == "gpt4_reason" and config["settings"]["rerank_weight"] == 0.5

    # Second pass: only the query with a failed request is asked again.
    with ScriptedRerankFake(script) as server:
        assert rerank.main(rerank_argv(first_stage_dir, server)) == 0
        asked = server.rerank_requests()
    assert len(asked) == 3
    assert all("Pythagorean theorem the height" in body["messages"][-1]["content"] for body in asked)  # GPT-4 query

    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["config.json", "score.json", "results.json", "per_query.json", "rerank_scores.json", "rerank_cache.jsonl",
         "rerank_cache_meta.json", "rerank_only_results.json", "first_stage_results.json"]
    )  # fmt: skip
    rerank_scores, final = read(run_dir, "rerank_scores.json"), read(run_dir, "score.json")
    # ladder top 3: 103 (.9), 101 (.8), 104 (.3) -> rerank .2, 1.0, 0.0 (no score)
    assert rerank_scores[LADDER] == {"101": 1.0, "103": 0.2, "104": 0.0}
    assert list(final[LADDER]) == ["101", "103", "104"]
    assert final[LADDER] == pytest.approx({"101": 0.9, "103": 0.55, "104": 0.15})
    # remainder top 3: 102 (.72), 101 (.6), 103 (.5) -> rerank .8, 1.0, .2
    assert list(final[REMAINDER]) == ["101", "102", "103"]
    assert final[REMAINDER] == pytest.approx({"101": 0.8, "102": 0.76, "103": 0.35})

    per_query, results = read(run_dir, "per_query.json"), read(run_dir, "results.json")
    assert per_query[LADDER]["NDCG@10"] == pytest.approx(1.0)
    assert per_query[REMAINDER]["NDCG@10"] == pytest.approx(INV_LOG2_3)
    assert list(results) == metric_keys() and results["MRR"] == 0.75
    assert read(run_dir, "first_stage_results.json")["MRR"] == 0.75  # ranks 2 and 1 before, 1 and 2 after
    assert read(run_dir, "rerank_only_results.json")["Recall@1"] == 0.5

    derived = read(run_dir, "config.json")["derived"]
    assert derived["status_counts"] == {"ok": 5, "no_score": 1, "out_of_range": 0, "error": 0}
    assert derived["n_unparsable"] == 1 and derived["n_errors"] == 0
    assert derived["llm_usage"]["requests"] == 4  # the probe and the three re-asked pairs
    assert derived["reranker"]["prompt"]["name"] == "rerank_relevance"

    # Third pass: everything is cached; nothing is sent.
    with ScriptedRerankFake(script) as server:
        assert rerank.main(rerank_argv(first_stage_dir, server)) == 0
        assert server.attempts == 0
    assert read(run_dir, "score.json") == final

    # A different unparsable-reply policy changes the run: refused into this run directory, naming the flag;
    # an informational setting (concurrency) is not.
    with ScriptedRerankFake(script) as server:
        assert rerank.main(rerank_argv(first_stage_dir, server, "--unparsable_score", "0.6")) == 2
        assert rerank.main(rerank_argv(first_stage_dir, server, "--max_concurrency", "3")) == 0
        assert server.attempts == 0
    assert read(run_dir, "rerank_scores.json")[LADDER]["104"] == 0.0

    # Settings that change the replies refuse the cache instead of mixing two prompts' scores.
    with ScriptedRerankFake(script) as server:
        assert rerank.main(rerank_argv(first_stage_dir, server, "--max_tokens", "8")) == 2
        assert rerank.main(rerank_argv(first_stage_dir, server, "--max_tokens", "8", "--overwrite")) == 0
        assert len(server.rerank_requests()) == 6


def test_garbage_generator_leaves_the_first_stage_order(first_stage_dir: Path) -> None:

    with FakeGeneratorServer("ok") as server:  # echoes the prompt: never a score
        argv = rerank_argv(first_stage_dir, server, "--model_name", "garbage")
        assert rerank.main(argv) == 0
    run_dir = first_stage_dir.parents[2] / "garbage" / "gpt4_reason" / "theoremqa_theorems"
    derived = read(run_dir, "config.json")["derived"]
    assert derived["n_unparsable"] == derived["n_pairs"] == 6
    # Every rerank score is 0, so the mix is half the first stage: same order, same metrics.
    assert {q: list(r) for q, r in read(run_dir, "score.json").items()} == {
        q: list(r)[:3] for q, r in FIRST_STAGE.items()
    }
    assert read(run_dir, "results.json") == read(run_dir, "first_stage_results.json")


def test_unreachable_generator_fails_before_scoring(first_stage_dir: Path) -> None:

    with FakeGeneratorServer("error500") as server:
        assert rerank.main(rerank_argv(first_stage_dir, server)) == 2
    assert not (first_stage_dir.parents[2] / "dense+llm-fake-judge" / "gpt4_reason" / "theoremqa_theorems"
                / "rerank_cache.jsonl").exists()  # fmt: skip


def test_names_query_types_and_run_files(first_stage_dir: Path, tmp_path: Path) -> None:
    base = ["--task", "theoremqa_theorems", "--bright_dir", str(MINI), "--output_dir", str(tmp_path / "o")]
    llm = rerank.parse_config([*base, "--reranker", "llm", "--model", "Qwen/Qwen2.5-32B-Instruct",
                               "--first_stage_dir", str(first_stage_dir)])  # fmt: skip
    assert (llm.model_name, llm.query_type, llm.rerank_weight) == ("dense+llm-Qwen2.5-32B-Instruct", "gpt4_reason", 0.5)
    assert llm.run_dir == tmp_path / "o" / "dense+llm-Qwen2.5-32B-Instruct" / "gpt4_reason" / "theoremqa_theorems"
    # Pointwise rerankers read the question (paper Table 6) and rank by their own score.
    point = rerank.parse_config([*base, "--reranker", "pointwise", "--model", "/m/rader_reranker/",
                                 "--first_stage_dir", str(first_stage_dir)])  # fmt: skip
    assert (point.model_name, point.query_type, point.rerank_weight) == (
        "dense+pointwise-rader_reranker_qoriginal",
        "original",
        1.0,
    )
    trec = tmp_path / "bm25_run.trec"
    trec.write_text(f"{LADDER} Q0 101 1 3.5 bm25\n")
    from_file = rerank.parse_config([*base, "--reranker", "llm", "--model", "m", "--first_stage", str(trec)])
    assert (from_file.first_stage_model, from_file.first_stage_query_type) == ("bm25_run", "original")
    with pytest.raises(SystemExit):
        rerank.parse_config([*base, "--reranker", "llm", "--model", "m", "--first_stage_dir", str(tmp_path)])
    with pytest.raises(SystemExit):  # the first stage is a theoremqa_theorems run
        rerank.parse_config(["--task", "aops", "--bright_dir", str(MINI), "--output_dir", str(tmp_path), "--reranker",
                             "llm", "--model", "m", "--first_stage_dir", str(first_stage_dir)])  # fmt: skip


# ---------------------------------------------------------------------------------------------- --rerank_style

PUBLISHED_REPLIES = {"Pythagorean": " Relevance score: 5.", "Fermat": "Relevance score: **4**",
                     "Intermediate": "Relevance score: 1.", "Bayes": "I cannot tell."}  # fmt: skip


def published_script(document: str) -> str:
    return next(reply for key, reply in PUBLISHED_REPLIES.items() if document.startswith(key))


def test_published_style_records_its_settings_and_a_style_change_is_refused(first_stage_dir: Path) -> None:
    from models.stage import SettingsChanged

    with ScriptedRerankFake(published_script) as server:
        argv = rerank_argv(first_stage_dir, server, "--rerank_style", "published", "--model_name", "qwenrerank")
        assert rerank.main(argv) == 0
        asked = server.rerank_requests()
    assert len(asked) == 6 and all(body["prompt"].startswith('"I am searching') for body in asked)  # completions
    assert all("Pythagorean theorem the height" in b["prompt"] for b in asked if "ladder" in b["prompt"])
    run_dir = first_stage_dir.parents[2] / "qwenrerank" / "gpt4_reason" / "theoremqa_theorems"
    config = read(run_dir, "config.json")
    settings = config["settings"]
    assert settings["rerank_style"] == "published"
    assert [settings[k] for k in ("temperature", "top_p", "max_tokens", "seed", "unparsable_score")] == [
        0.6, 0.9, 32, 0, -1.0
    ]  # fmt: skip
    assert settings["prompt_path"].endswith("prompts/rerank_published_theoremqa.txt")
    derived = config["derived"]
    assert derived["reranker"]["style"] == "published" and derived["reranker"]["family"] == "theoremqa"
    assert derived["status_counts"] == {"ok": 4, "no_score": 1, "unreadable": 1, "out_of_range": 0, "error": 0}
    assert derived["n_unparsable"] == 2
    # No marker (Bayes) scores 0, an unreadable score (Fermat, **4**) -1; mixed 0.5/0.5 with the raw first stage.
    rerank_scores, final = read(run_dir, "rerank_scores.json"), read(run_dir, "score.json")
    assert rerank_scores[LADDER] == {"101": 1.0, "103": 0.2, "104": 0.0}
    assert rerank_scores[REMAINDER] == {"101": 1.0, "103": 0.2, "102": -1.0}
    assert list(final[REMAINDER]) == ["101", "103", "102"]
    assert final[REMAINDER] == pytest.approx({"101": 0.8, "103": 0.35, "102": -0.14})

    with ScriptedRerankFake(published_script) as server:
        # The style's own values given explicitly are the same settings: resumed from the cache.
        assert rerank.main([*argv, "--temperature", "0.6", "--top_p", "0.9"]) == 0
        # Another style, or an explicit value that differs from the style's, is another run: refused.
        assert rerank.main([*argv[:-4], "--model_name", "qwenrerank"]) == 2
        assert rerank.main([*argv, "--temperature", "0"]) == 2
        assert server.rerank_requests() == []
    ours = rerank.parse_config([a for a in argv if a not in ("--rerank_style", "published")])
    assert ours.rerank_style == "ours" and ours.temperature == 0.0
    with pytest.raises(SettingsChanged, match='--rerank_style: stored "published", now "ours"'):
        rerank.run_rerank(ours)


def test_style_and_length_flags_are_checked(first_stage_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--task", "theoremqa_theorems", "--bright_dir", str(MINI), "--output_dir", str(first_stage_dir),
            "--first_stage_dir", str(first_stage_dir)]  # fmt: skip
    explicit = rerank.parse_config([*base, "--reranker", "llm", "--model", "m", "--rerank_style", "published",
                                    "--temperature", "0", "--prompt_path", str(rerank.OURS.prompt_path(None))])  # fmt: skip
    assert (explicit.rerank_style, explicit.temperature, explicit.top_p) == ("published", 0.0, 0.9)
    assert explicit.model_name == "dense+llm-m-published"  # never the directory of the ours-style run
    point = rerank.parse_config([*base, "--reranker", "pointwise", "--model", "/m/r"])
    assert point.rerank_style is None and point.temperature is None and point.max_length is None
    for extra, flag in [
        (["--reranker", "pointwise", "--model", "/m/r", "--rerank_style", "published"], "--rerank_style"),
        (["--reranker", "llm", "--model", "m", "--max_length", "512"], "--max_length"),
        (["--reranker", "pointwise", "--model", "/m/r", "--max_length", "1"], "--max_length"),
        (["--reranker", "llm", "--model", "m", "--top_p", "0"], "--top_p"),
        (["--reranker", "llm", "--model", "m", "--temperature", "-1"], "--temperature"),
        (["--reranker", "llm", "--model", "m", "--rerank_style", "qwen"], "--rerank_style"),
    ]:
        with pytest.raises(SystemExit):
            rerank.parse_config([*base, *extra])
        assert flag in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- --max_length


@pytest.mark.usefixtures("one_torch_thread")
def test_pointwise_length_defaults_to_the_backbone_limit_and_is_recorded(
    first_stage_dir: Path, smollm2_dir: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

    from models.reranking.pointwise import PointwiseReranker, RerankerFormat

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir))
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=3000)  # fmt: skip
    torch.manual_seed(0)
    Qwen2Model(config).save_pretrained(str(tmp_path / "backbone"))
    tokenizer.save_pretrained(str(tmp_path / "backbone"))
    model = PointwiseReranker.from_backbone(str(tmp_path / "backbone"), fmt=RerankerFormat(max_len=64), seed=0)
    model.save_pretrained(tmp_path / "reranker")

    argv = ["--task", "theoremqa_theorems", "--reranker", "pointwise", "--model", str(tmp_path / "reranker"),
            "--first_stage_dir", str(first_stage_dir), "--bright_dir", str(MINI), "--device", "cpu",
            "--output_dir", str(first_stage_dir.parents[2]), "--top_k", "3", "--model_name", "point"]  # fmt: skip
    assert rerank.main(argv) == 0
    run_dir = first_stage_dir.parents[2] / "point" / "gpt4_reason" / "theoremqa_theorems"
    settings = read(run_dir, "config.json")["settings"]
    assert settings["max_length"] == 3000 and settings["rerank_style"] is None  # not the saved 64
    assert rerank.main([*argv, "--max_length", "3000"]) == 0  # the same setting, given explicitly
    assert rerank.main([*argv, "--max_length", "64"]) == 2  # another length is another run
