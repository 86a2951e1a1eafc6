"""BRIGHT's baseline keys build BRIGHT's strings and settings; ``--eos_token`` reaches the encoder config.

The expected strings are literals written from BRIGHT's ``retrievers.py`` (xlang-ai/BRIGHT @ d99e839) and its
``configs/<family>/<split>.json`` templates (spec evaluation.md §3.3): ``add_instruct_concatenate`` is
``instruction.format(task=task) + text``; sentence-transformers (bge, Instructor) encodes ``prompt + text``
stripped; documents get an instruction only for Instructor. No model is loaded here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from models.evaluation.tasks import DENSE_RETRIEVERS, RETRIEVERS, encoder_flags_for
from models.retrieval.encoder_flags import (
    EncoderFlags,
    add_encoder_arguments,
    check_encoder_flags,
    default_pooling,
    doc_cache_name,
)
from models.retrieval.encoders import EncoderConfig
from models.retrieval.pooling import instruction_token_count, pool_hidden_states
from models.retrieval.text_formats import format_document, format_query
from models.settings import Settings

QUERY = "Why do leaves change colour in autumn?"
DOC = "Chlorophyll breaks down as days get shorter."
SPLITS = ("biology", "theoremqa_theorems")

E5_STYLE = {
    "biology": "Instruct: Given a biology post, retrieve relevant passages that help answer the post\nQuery: ",
    "theoremqa_theorems": "Instruct: Given a Math problem, retrieve relevant theorems that help answer the problem\n"
    "Query: ",
}
BGE = {
    "biology": "Represent this biology post for searching relevant passages: ",
    "theoremqa_theorems": "Represent this Math problem for searching relevant theorems: ",
}
INSTRUCTOR_QUERY = {
    "biology": "Represent the biology post for retrieving relevant paragraphs: ",
    "theoremqa_theorems": "Represent the Math problem for retrieving relevant theorems: ",
}
INSTRUCTOR_DOC = {
    "biology": "Represent the biology paragraph for retrieval: ",
    "theoremqa_theorems": "Represent the Math theorem for retrieval: ",
}

# key: (Hub id BRIGHT loads, pooling, max length of both sides, trust_remote_code, query table, document table)
BASELINES = {
    "gte-qwen2": ("Alibaba-NLP/gte-Qwen2-7B-instruct", "last", 8192, True, E5_STYLE, None),
    "qwen": ("Alibaba-NLP/gte-Qwen1.5-7B-instruct", "last", 8192, True, E5_STYLE, None),
    "sf": ("Salesforce/SFR-Embedding-Mistral", "last", 4096, False, E5_STYLE, None),
    "e5": ("intfloat/e5-mistral-7b-instruct", "last", 4096, False, E5_STYLE, None),
    "bge": ("BAAI/bge-large-en-v1.5", "cls", 512, False, BGE, None),
    "inst-l": ("hkunlp/instructor-large", "mean_without_instruction", 2048, False, INSTRUCTOR_QUERY, INSTRUCTOR_DOC),
    "inst-xl": ("hkunlp/instructor-xl", "mean_without_instruction", 2048, False, INSTRUCTOR_QUERY, INSTRUCTOR_DOC),
}


def _resolved(key: str, split: str, **flags: object) -> EncoderConfig:
    """What evaluate_bright builds for ``--model key --task split`` (its instruction task is the split)."""
    filled = encoder_flags_for(key, EncoderFlags(instruction_task=split, **flags), Settings())  # type: ignore[arg-type]
    assert check_encoder_flags(filled) is None
    return filled.encoder_config()


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("key", sorted(BASELINES))
def test_baseline_strings_are_brights(key: str, split: str) -> None:
    hub_id, pooling, max_len, remote_code, queries, documents = BASELINES[key]
    config = _resolved(key, split)
    fmt = config.text_format
    assert format_query(QUERY, fmt, task=split) == queries[split] + QUERY
    expected_doc = (documents[split] if documents else "") + DOC
    assert format_document(DOC, fmt) == expected_doc
    # No EOS text is added for any BRIGHT baseline: the tokenizer adds its own special tokens.
    assert not fmt.append_eos and format_query(QUERY, fmt, task=split, with_eos=False) == queries[split] + QUERY
    assert config.model_name_or_path == hub_id
    assert (config.pooling, config.query_max_len, config.doc_max_len) == (pooling, max_len, max_len)
    assert config.normalize and config.dtype == "float32" and config.trust_remote_code is remote_code


def test_sentence_transformers_baselines_strip_and_decoders_do_not() -> None:
    # REF: sentence-transformers (BRIGHT's bge and Instructor path) strips each input; retrieval_sf_qwen_e5 does not.
    bge = _resolved("bge", "biology").text_format
    # The whole input is stripped (BRIGHT concatenates first), so only its ends lose whitespace.
    assert format_query(f"  {QUERY}\n", bge, task="biology") == BGE["biology"] + "  " + QUERY
    assert format_document(f"{DOC}\n\n", bge) == DOC
    inst = _resolved("inst-l", "biology").text_format
    assert format_document(f"\n{DOC} ", inst) == INSTRUCTOR_DOC["biology"] + "\n" + DOC
    qwen2 = _resolved("gte-qwen2", "biology").text_format
    assert format_document(f"{DOC}\n", qwen2) == f"{DOC}\n"


def test_instructor_document_instruction_names_its_cache() -> None:
    names = {split: doc_cache_name(_resolved("inst-l", split)) for split in SPLITS}
    assert names["biology"] != names["theoremqa_theorems"]  # the per-split document instruction decides the vectors
    assert doc_cache_name(_resolved("gte-qwen2", "biology")) == doc_cache_name(_resolved("gte-qwen2", "aops"))
    long_docs = encoder_flags_for("inst-xl", EncoderFlags(instruction_task="pony"), Settings()).encoder_config(True)
    assert long_docs.text_format.doc_instruction == "Represent the Pony document for retrieval: "


def test_instructor_format_without_a_split_is_refused() -> None:
    # A stage that encodes several splits with one format (encode_corpus) cannot fix one document instruction.
    flags = EncoderFlags(model_path="hkunlp/instructor-large", text_format="bright_instructor")
    message = check_encoder_flags(flags.with_defaults())
    assert message is not None and "per-split" in message and "--instruction_task" in message
    none = EncoderFlags(model_path="m", text_format="bright_instructor", instruction_task="none").with_defaults()
    assert none.encoder_config().text_format.doc_instruction == ""


def test_formats_default_to_the_pooling_brights_run_used() -> None:
    assert [default_pooling(name) for name in ("bright_qwen2", "bright_sf", "bright_bge", "bright_instructor")] == [
        "last",
        "last",
        "cls",
        "mean_without_instruction",
    ]
    assert (default_pooling("rader"), default_pooling("plain")) == ("eos", "mean")


def test_flags_override_the_key() -> None:
    config = _resolved("gte-qwen2", "biology", dtype="bfloat16", trust_remote_code=False, doc_max_len=4096)
    assert (config.dtype, config.trust_remote_code, config.doc_max_len, config.query_max_len) == (
        "bfloat16",
        False,
        4096,
        8192,
    )
    assert doc_cache_name(config) != doc_cache_name(_resolved("gte-qwen2", "biology", dtype="bfloat16"))


def test_grit_is_listed_but_refused_with_the_reason() -> None:
    assert "grit" in RETRIEVERS and "grit" not in DENSE_RETRIEVERS
    with pytest.raises(ValueError, match=r"--model grit is refused: .*bidirectional"):
        encoder_flags_for("grit", EncoderFlags(), Settings())


def test_grit_on_the_command_line_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from run_src.evaluate_bright import parse_config

    with pytest.raises(SystemExit) as exit_info:
        parse_config(["--task", "biology", "--model", "grit", "--output_dir", str(tmp_path)], Settings())
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--model grit is refused" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing written


# --- the instruction-free pooling ----------------------------------------------------------------


def test_mean_without_instruction_leaves_the_instruction_tokens_out() -> None:
    # Two rows of 5 positions, hidden size 1: token values 1..5; row 1 has one pad (right) or is left-padded.
    hidden = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 99.0]]).unsqueeze(-1)
    right = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    pooled = pool_hidden_states(hidden, right, "mean_without_instruction", instruction_tokens=2)
    assert pooled.squeeze(-1).tolist() == [4.0, 3.5]  # mean of (3, 4, 5) and of (3, 4): tokens 1-2 are the instruction
    assert pool_hidden_states(hidden, right, "mean").squeeze(-1).tolist() == [3.0, 2.5]
    left_hidden = torch.tensor([[99.0, 1.0, 2.0, 3.0, 4.0]]).unsqueeze(-1)
    left = torch.tensor([[0, 1, 1, 1, 1]])
    assert pool_hidden_states(left_hidden, left, "mean_without_instruction", 2).squeeze(-1).tolist() == [3.5]
    assert pool_hidden_states(hidden, right, "mean_without_instruction", 0).squeeze(-1).tolist() == [3.0, 2.5]
    with pytest.raises(ValueError, match="instruction_tokens"):
        pool_hidden_states(hidden, right, "mean_without_instruction")
    with pytest.raises(ValueError, match="unknown pooling"):
        pool_hidden_states(hidden, right, "max")


class _FakeTokenizer:
    """Whitespace tokens; '<s>' before and '</s>' after, like a tokenizer with leading and trailing specials."""

    all_special_ids = [0, 1]

    def __init__(self, bos: bool, eos: bool) -> None:
        self.bos, self.eos = bos, eos

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids = [10 + i for i, _ in enumerate(text.split())]
        return {"input_ids": [0] * self.bos + ids + [1] * self.eos}


def test_instruction_token_count_follows_sentence_transformers() -> None:
    instruction = "Represent the biology post for retrieving relevant paragraphs:"
    assert instruction_token_count(_FakeTokenizer(bos=False, eos=True), instruction) == 8  # T5: '</s>' dropped
    assert instruction_token_count(_FakeTokenizer(bos=True, eos=True), instruction) == 9  # BERT: '[CLS]' kept
    assert instruction_token_count(_FakeTokenizer(bos=True, eos=False), instruction) == 9  # Llama: '<s>' kept
    assert instruction_token_count(_FakeTokenizer(bos=True, eos=True), "") == 0


def test_instruction_free_pooling_needs_the_transformers_backend() -> None:
    with pytest.raises(ValueError, match="only the transformers backend"):
        EncoderConfig("m", pooling="mean_without_instruction", backend="vllm-server", server_url="http://127.0.0.1:1")


# --- --eos_token ---------------------------------------------------------------------------------


def _flags(argv: list[str], prefix: str = "") -> EncoderFlags:
    parser = argparse.ArgumentParser()
    add_encoder_arguments(parser, prefix=prefix)
    return EncoderFlags.from_args(parser.parse_args(argv), prefix=prefix).with_defaults()


def test_eos_token_forces_the_eos_string() -> None:
    flags = _flags(["--model_path", "m", "--text_format", "rader", "--eos_token", "<|im_end|>"])
    fmt = flags.encoder_config().text_format
    assert fmt.eos_token == "<|im_end|>" and fmt.with_eos("<|endoftext|>").eos_token == "<|im_end|>"
    assert format_query("q", fmt, task="biology").endswith("Query: q<|im_end|>")
    assert format_document("d", fmt) == "document: d<|im_end|>"
    prefixed = _flags(["--dense_model_path", "m", "--dense_eos_token", "</s>"], prefix="dense_")
    assert prefixed.encoder_config().text_format.eos_token == "</s>"
    # The forced string names the document cache (doc_cache_name reads fmt.eos_token).
    assert doc_cache_name(flags.encoder_config()) != doc_cache_name(_flags(["--model_path", "m"]).encoder_config())


def test_eos_token_is_refused_where_nothing_appends_an_eos() -> None:
    message = check_encoder_flags(_flags(["--model_path", "m", "--text_format", "plain", "--eos_token", "</s>"]))
    assert message is not None and message.startswith("--eos_token '</s>'") and "appends no EOS" in message
    prefixed = _flags(
        ["--dense_model_path", "m", "--dense_text_format", "bright_qwen2", "--dense_eos_token", "x"], "dense_"
    )
    assert (check_encoder_flags(prefixed, "dense_") or "").startswith("--dense_eos_token 'x'")
    with pytest.raises(ValueError, match="appends no EOS"):
        _flags(["--model_path", "m", "--text_format", "plain", "--eos_token", "</s>"]).encoder_config()
    empty = check_encoder_flags(_flags(["--model_path", "m", "--eos_token", ""]))
    assert empty is not None and "--eos_token is empty" in empty


def test_eos_token_reaches_evaluate_brights_encoder_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from run_src.evaluate_bright import parse_config

    argv = [
        "--task",
        "theoremqa_theorems",
        "--model",
        "rader",
        "--model_path",
        str(tmp_path),
        "--output_dir",
        str(tmp_path),
    ]
    config = parse_config([*argv, "--eos_token", "<|im_end|>"], Settings())
    assert config.encoder.eos_token == "<|im_end|>"
    assert config.encoder.encoder_config().text_format.eos_token == "<|im_end|>"
    assert "eos_token" in config.settings()  # recorded, and compared when a run is reused
    with pytest.raises(SystemExit):
        parse_config(["--task", "biology", "--model", "gte-qwen2", "--output_dir", str(tmp_path), "--eos_token", "x"])
    assert "--eos_token 'x': text format 'bright_qwen2' appends no EOS" in capsys.readouterr().err


def test_eos_token_reaches_encode_corpus_encoder_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from run_src.encode_corpus import parse_config

    config = parse_config(["--model_path", str(tmp_path), "--split", "aops", "--eos_token", "<|im_end|>"])
    assert config.encoder.encoder_config().text_format.eos_token == "<|im_end|>"
    assert config.cache_name != parse_config(["--model_path", str(tmp_path), "--split", "aops"]).cache_name
    with pytest.raises(SystemExit):
        parse_config(["--model_path", str(tmp_path), "--split", "aops", "--text_format", "plain", "--eos_token", "x"])
    assert "appends no EOS" in capsys.readouterr().err
