"""Tevatron group sampling (training.md §8.3), text assembly (§8.4), record loading and the collator (§9.2).

Sampling is checked against the spec's rules written out independently here: the positive rotates with
the epoch starting at ``hash(item + seed)``, negatives come from a shuffle seeded by that hash read
through a window that moves by ``G-1`` per epoch, and short lists are drawn with replacement (from the
module RNG as Tevatron does, or from a keyed RNG). The collator runs on SmolLM2's real tokenizer.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from models.stage import expand_config
from models.training.arguments import DataArguments, ModelArguments, RetrieverTrainingArguments, TextArguments
from models.training.collator import ContrastiveCollator, pad_batch
from models.training.dataset import (
    TrainDataset,
    format_passage,
    load_corpus_lookup,
    load_train_records,
    sample_group,
)
from models.training.run_setup import parse_arguments, prepare_output_dir

NEGATIVES = [f"n{i}" for i in range(7)]


# ------------------------------------------------------------------------------------------------ sampling


def test_group_is_positive_then_seeded_shuffle_window() -> None:
    item, seed, group = 5, 42, 4
    shuffled = list(NEGATIVES)
    random.Random(item + seed).shuffle(shuffled)
    for epoch in range(4):
        got = sample_group(["p0", "p1"], NEGATIVES, item, seed, epoch, group)
        assert got[0] == ["p0", "p1"][(item + seed + epoch) % 2]  # rotates with the epoch
        offset = (epoch * 3) % 7
        assert got[1:] == (shuffled * 2)[offset : offset + 3]
        assert len(set(got[1:])) == 3  # no repeats when the list is long enough
    # Over epochs 0..6 the window visits every negative equally often (7 negatives, 3 per epoch).
    seen = [n for epoch in range(7) for n in sample_group(["p"], NEGATIVES, item, seed, epoch, group)[1:]]
    assert sorted(seen) == sorted(NEGATIVES * 3)
    # Same item, seed, epoch: same group; another item: another shuffle.
    assert sample_group(["p"], NEGATIVES, item, seed, 0, group) == sample_group(["p"], NEGATIVES, item, seed, 0, group)
    assert sample_group(["p"], NEGATIVES, item + 1, seed, 0, group) != sample_group(["p"], NEGATIVES, item, seed, 0, group)


def test_short_negative_lists_are_sampled_with_replacement() -> None:
    short = ["a", "b"]
    random.seed(123)
    expected = random.choices(short, k=5)
    random.seed(123)
    got = sample_group(["p"], short, 0, 42, 0, 6)  # G-1 = 5 > 2 negatives: global RNG, as Tevatron
    assert got == ["p", *expected]
    seeded = [sample_group(["p"], short, 3, 42, 0, 6, short_rng="seeded") for _ in range(2)]
    assert seeded[0] == seeded[1] and len(seeded[0]) == 6 and set(seeded[0][1:]) <= set(short)
    other_epoch = {tuple(sample_group(["p"], short, 3, 42, e, 6, short_rng="seeded")) for e in range(6)}
    assert len(other_epoch) > 1  # keyed by the epoch too
    assert sample_group(["p"], [], 0, 42, 0, 1) == ["p"]  # G = 1: the positive alone
    with pytest.raises(ValueError, match="no negative"):
        sample_group(["p"], [], 0, 42, 0, 3)
    with pytest.raises(ValueError, match="no positive"):
        sample_group([], NEGATIVES, 0, 42, 0, 3)


def test_reranker_no_shuffle_switches() -> None:
    got = sample_group(["p0", "p1"], NEGATIVES, 5, 42, 3, 4, positive_no_shuffle=True, negative_no_shuffle=True)
    assert got == ["p0", "n0", "n1", "n2"]


def test_text_assembly_follows_tevatron_v2() -> None:
    assert format_passage({"title": "", "text": "body"}, "Passage: ") == "Passage:  body"  # two spaces, as trained
    assert format_passage({"title": "T", "text": "body"}, "") == "T body"
    assert format_passage({"text": "body"}, "document: ") == "document: body"
    assert format_passage({"title": None, "text": "body"}, "") == "body"
    with pytest.raises(ValueError, match="no 'text'"):
        format_passage({"docid": "7", "title": ""}, "")


# ------------------------------------------------------------------------------------------------ records


def _legacy(qid: str, n_neg: int) -> dict:
    return {
        "query_id": qid,
        "query": f"question {qid}",
        "positive_passages": [{"docid": f"{qid}+", "title": "", "text": f"positive of {qid}"}],
        "negative_passages": [{"docid": f"{qid}-{i}", "title": "", "text": f"negative {i}"} for i in range(n_neg)],
    }


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_legacy_jsonl_directory_and_saved_dataset_load_the_same(tmp_path: Path) -> None:
    rows = [_legacy(f"q{i}", 4) for i in range(6)]
    _write_jsonl(tmp_path / "dir" / "part-0.jsonl", rows[:3])
    _write_jsonl(tmp_path / "dir" / "part-1.jsonl", rows[3:])
    from_dir = load_train_records(DataArguments(dataset_path=str(tmp_path / "dir"), train_group_size=3))
    from_file = load_train_records(
        DataArguments(dataset_path=str(_write_jsonl(tmp_path / "all.jsonl", rows)), train_group_size=3)
    )
    from_file.save_to_disk(str(tmp_path / "saved"))
    from_saved = load_train_records(DataArguments(dataset_name=str(tmp_path / "saved"), train_group_size=3))
    for records in (from_dir, from_file, from_saved):
        assert sorted(records["query_id"]) == [f"q{i}" for i in range(6)]

    data_args = DataArguments(dataset_path=str(tmp_path / "all.jsonl"), train_group_size=3)
    dataset = TrainDataset(from_file, data_args, TextArguments(query_prefix="query: ", passage_prefix="doc: "), seed=1)
    dataset.set_epoch(2)
    query, passages = dataset[4]
    assert query == "query: question q4"
    assert passages[0] == "doc:  positive of q4" and len(passages) == 3
    expected_negs = sample_group(["+"], list(range(4)), 4, 1, 2, 3)[1:]
    assert passages[1:] == [f"doc:  negative {i}" for i in expected_negs]
    sharded = load_train_records(
        DataArguments(dataset_path=str(tmp_path / "all.jsonl"), dataset_number_of_shards=2, dataset_shard_index=1)
    )
    assert len(sharded) == 3


def test_records_without_negatives_fail_or_are_dropped(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "t.jsonl", [_legacy("a", 2), _legacy("b", 0), _legacy("c", 1)])
    with pytest.raises(ValueError, match=r"1 of 3 records .*rows \[1\].*--zero_negatives drop"):
        load_train_records(DataArguments(dataset_path=str(path), train_group_size=3))
    kept = load_train_records(DataArguments(dataset_path=str(path), train_group_size=3, zero_negatives="drop"))
    assert kept["query_id"] == ["a", "c"]
    assert len(load_train_records(DataArguments(dataset_path=str(path), train_group_size=1))) == 3


def test_schema_errors_name_the_problem(tmp_path: Path) -> None:
    as_string = {**_legacy("a", 1), "negative_passages": json.dumps(_legacy("a", 1)["negative_passages"])}
    with pytest.raises(ValueError, match="not a list"):
        load_train_records(DataArguments(dataset_path=str(_write_jsonl(tmp_path / "s.jsonl", [as_string]))))
    with pytest.raises(ValueError, match="not a Tevatron training set"):
        load_train_records(DataArguments(dataset_path=str(_write_jsonl(tmp_path / "x.jsonl", [{"q": "x"}]))))
    with pytest.raises(FileNotFoundError):
        load_train_records(DataArguments(dataset_path=str(tmp_path / "missing.jsonl")))
    with pytest.raises(ValueError, match="--pooling"):
        ModelArguments("m", pooling="max")
    assert ModelArguments("m", pooling="average").pooling == "mean"


def test_v2_records_look_up_the_corpus(tmp_path: Path) -> None:
    corpus = _write_jsonl(tmp_path / "corpus.jsonl", [{"docid": f"d{i}", "title": "T", "text": f"t{i}"} for i in range(5)])
    queries = _write_jsonl(
        tmp_path / "q.jsonl",
        [{"query_id": "q", "query_text": "what", "positive_document_ids": ["d0"], "negative_document_ids": ["d1", "d2", "d3"]}],
    )
    data_args = DataArguments(dataset_path=str(queries), corpus_path=str(corpus), train_group_size=3)
    records = load_train_records(data_args)
    dataset = TrainDataset(records, data_args, TextArguments(), seed=0, corpus=load_corpus_lookup(data_args))
    query, passages = dataset[0]
    assert query == "what" and passages[0] == "T t0" and len(passages) == 3
    assert set(passages[1:]) <= {"T t1", "T t2", "T t3"}


# ------------------------------------------------------------------------------------------------ collator


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_dir))


def test_collator_truncates_then_appends_eos_and_pads_right(tokenizer) -> None:
    collate = ContrastiveCollator(tokenizer, query_max_len=8, passage_max_len=20, append_eos=True)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    long_query = "query: " + "prime " * 40
    groups = [(long_query, ["document: a short one", "document: " + "x y " * 30]), ("query: hi", ["d1", "d2"])]
    batch = collate(groups)
    q, p = batch["query"], batch["passage"]
    assert q["input_ids"].shape == (2, 16) and p["input_ids"].shape == (4, 32)  # widths rounded up to 16
    truncated = q["input_ids"][0][q["attention_mask"][0].bool()].tolist()
    assert len(truncated) == 8 and truncated[-1] == eos  # 7 text tokens, then EOS: never cut
    assert truncated[:-1] == tokenizer(long_query, truncation=True, max_length=7)["input_ids"]
    short = q["input_ids"][1][q["attention_mask"][1].bool()].tolist()
    assert short == tokenizer("query: hi" + tokenizer.eos_token)["input_ids"]  # EOS id == EOS text, untruncated
    assert q["attention_mask"][1].tolist() == [1] * len(short) + [0] * (16 - len(short))
    assert (q["input_ids"][1][len(short) :] == pad).all()
    # Passages are group-major: query 0's two passages, then query 1's.
    firsts = [p["input_ids"][i][: p["attention_mask"][i].sum()].tolist() for i in range(4)]
    assert firsts[0] == tokenizer("document: a short one")["input_ids"] + [eos]
    assert len(firsts[1]) == 20 and firsts[1][-1] == eos
    assert firsts[2] == tokenizer("d1")["input_ids"] + [eos]
    without_eos = ContrastiveCollator(tokenizer, query_max_len=8, append_eos=False, pad_to_multiple_of=None)
    ids = without_eos.encode([long_query], 8)["input_ids"][0].tolist()
    assert len(ids) == 8 and ids[-1] != eos
    with pytest.raises(ValueError, match="same number of passages"):
        collate([("q", ["a", "b"]), ("q2", ["c"])])


def test_pad_batch_widths() -> None:
    out = pad_batch([[5, 6, 7], [8]], pad_id=0, multiple_of=4)
    assert out["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]


# ------------------------------------------------------------------------------------------------ driver rules


def test_config_file_flags_come_first_so_cli_wins(tmp_path: Path) -> None:
    from transformers import HfArgumentParser

    from models.training.arguments import RETRIEVER_ARGUMENT_CLASSES

    parser = HfArgumentParser(RETRIEVER_ARGUMENT_CLASSES)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"lora": True, "lora_r": 16, "query_prefix": "query: ", "report_to": ["none"],
                                  "_comment": "documents the file", "output_dir": None}))  # fmt: skip
    argv = expand_config(parser, ["--config", str(config), "--lora_r", "8"])
    assert argv == ["--lora", "true", "--query_prefix", "query: ", "--report_to", "none", "--lora_r", "8"]
    parsed = parse_arguments(parser, [str(config), "--model_name_or_path", "m", "--output_dir", "o"])  # Tevatron's lone JSON
    assert parsed[1].lora and parsed[1].lora_r == 16 and parsed[0].model_name_or_path == "m"
    (tmp_path / "bad.json").write_text(json.dumps({"lora_rr": 4}))
    with pytest.raises(SystemExit):  # an unknown key fails like an unknown flag
        expand_config(parser, ["--config", str(tmp_path / "bad.json")])
    with pytest.raises(SystemExit):
        expand_config(parser, ["--config", str(tmp_path / "nope.json")])


def test_output_dir_rules(tmp_path: Path) -> None:
    def args(**kw) -> RetrieverTrainingArguments:
        return RetrieverTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", **kw)

    assert prepare_output_dir(args()) is None  # missing dir: fine
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "train_config.json").write_text("{}")
    with pytest.raises(ValueError, match="--overwrite_output_dir"):
        prepare_output_dir(args())
    assert prepare_output_dir(args(overwrite_output_dir=True)) is None  # nothing to resume
    (tmp_path / "out" / "checkpoint-2").mkdir()
    (tmp_path / "out" / "checkpoint-10").mkdir()
    assert prepare_output_dir(args(overwrite_output_dir=True)).endswith("checkpoint-10")
    assert prepare_output_dir(args(overwrite_output_dir=True, auto_resume=False)) is None
    assert prepare_output_dir(args(resume_from_checkpoint="last")).endswith("checkpoint-10")
    with pytest.raises(ValueError, match="not a directory"):
        prepare_output_dir(args(resume_from_checkpoint=str(tmp_path / "nowhere")))


def test_training_arguments_tevatron_defaults_and_guards() -> None:
    default = RetrieverTrainingArguments(output_dir="o", use_cpu=True, report_to="none")
    assert default.warmup_ratio == 0.1 and default.get_warmup_steps(674) == 68  # ceil(0.1 * 674)
    assert RetrieverTrainingArguments(output_dir="o", use_cpu=True, warmup_steps=28).get_warmup_steps(674) == 28
    with pytest.raises(ValueError, match="--grad_cache is not supported"):
        RetrieverTrainingArguments(output_dir="o", use_cpu=True, grad_cache=True)
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    config = str(Path(__file__).resolve().parents[2] / "tevatron_configs" / "ds_zero2_config.json")
    try:
        kept = RetrieverTrainingArguments(output_dir="o", use_cpu=True, deepspeed=config)
        assert kept.uses_deepspeed_scheduler()
        hf = RetrieverTrainingArguments(output_dir="o", use_cpu=True, lr_schedule="hf", deepspeed=config)
        assert isinstance(hf.deepspeed, dict) and "scheduler" not in hf.deepspeed and not hf.uses_deepspeed_scheduler()
    finally:
        unset_hf_deepspeed_config()  # the args register a process-wide DeepSpeed config
