"""Query/document strings and the BRIGHT instruction table, checked against spec evaluation.md §3.2–3.3."""

from __future__ import annotations

import pytest

from models.retrieval.text_formats import (
    PLAIN,
    PRESETS,
    RADER,
    REPLLAMA,
    REPLLAMA_REF_EVAL,
    TextFormat,
    bright_splits,
    format_document,
    format_query,
    get_format,
    instruction_for,
)

STACKEXCHANGE = [
    "biology",
    "earth_science",
    "economics",
    "psychology",
    "robotics",
    "stackoverflow",
    "sustainable_living",
]
E5_MEMBERS = ["sf", "qwen", "qwen2", "e5", "trained_model"]


def test_rader_query_string_matches_reference_construction() -> None:
    fmt = RADER.with_eos("<|im_end|>")
    expected = (
        "query: Instruct: Given a biology post, retrieve relevant passages that help answer the post\n"
        "Query: Why do cells divide?<|im_end|>"
    )
    assert format_query("Why do cells divide?", fmt, task="biology") == expected
    assert format_document("Mitosis is ...", fmt) == "document: Mitosis is ...<|im_end|>"
    # In-MCTS retrieval sends no task: prefix and EOS only.
    assert format_query("q", fmt) == "query: q<|im_end|>"
    assert format_query("q", fmt, with_eos=False) == "query: q"


def test_unresolved_eos_is_an_error_and_explicit_eos_wins() -> None:
    with pytest.raises(ValueError, match="eos_token is unresolved"):
        format_query("q", RADER)
    explicit = TextFormat(query_prefix="Query: ", append_eos=True, eos_token="</s>")
    assert explicit.with_eos("<|im_end|>").eos_token == "</s>"
    assert PLAIN.with_eos("<|im_end|>") is PLAIN  # no EOS to resolve
    with pytest.raises(ValueError, match="no eos_token"):
        RADER.with_eos(None)


def test_presets_and_their_sources() -> None:
    assert (REPLLAMA.query_prefix, REPLLAMA.doc_prefix) == ("query: ", "passage: ")
    assert (REPLLAMA_REF_EVAL.query_prefix, REPLLAMA_REF_EVAL.doc_prefix) == ("Query: ", "Document: ")
    assert format_query("x", PLAIN, task="biology") == "x"
    assert all(fmt.source for fmt in PRESETS.values())
    assert get_format("rader") is RADER
    with pytest.raises(ValueError, match="choose one of"):
        get_format("Rader")


@pytest.mark.parametrize(
    ("split", "expected"),
    [
        ("biology", "Instruct: Given a biology post, retrieve relevant passages that help answer the post\nQuery: "),
        (
            "earth_science",
            "Instruct: Given a earth_science post, retrieve relevant passages that help answer the post\nQuery: ",
        ),
        ("pony", "Instruct: Given a pony question, retrieve relevant passages that help answer the question\nQuery: "),
        (
            "leetcode",
            "Instruct: Given a coding problem, retrieve relevant examples that help answer the problem\nQuery: ",
        ),
        ("aops", "Instruct: Given a Math problem, retrieve relevant examples that help answer the problem\nQuery: "),
        (
            "theoremqa_questions",
            "Instruct: Given a Math problem, retrieve relevant examples that help answer the problem\nQuery: ",
        ),
        (
            "theoremqa_theorems",
            "Instruct: Given a Math problem, retrieve relevant theorems that help answer the problem\nQuery: ",
        ),
    ],
)
def test_e5_style_family_shares_one_table(split: str, expected: str) -> None:
    for family in E5_MEMBERS:
        assert instruction_for(family, split) == expected
        assert instruction_for(family, split, side="document") == ""


def test_long_context_instructions() -> None:
    assert instruction_for("qwen2", "psychology", long_context=True) == (
        "Instruct: Given a psychology post, retrieve relevant documents that help answer the post\nQuery: "
    )
    assert instruction_for("bge", "pony", long_context=True) == (
        "Represent this Pony question for searching relevant documents: "
    )
    assert instruction_for("inst-l", "biology", long_context=True, side="document") == (
        "Represent the biology document for retrieval: "
    )
    for split in ("leetcode", "aops", "theoremqa_questions", "theoremqa_theorems"):
        with pytest.raises(ValueError, match="no long-document instructions"):
            instruction_for("sf", split, long_context=True)


def test_bge_instructor_and_grit_strings() -> None:
    assert instruction_for("bge", "robotics") == "Represent this robotics post for searching relevant passages: "
    assert (
        instruction_for("bge", "theoremqa_theorems") == "Represent this Math problem for searching relevant theorems: "
    )
    assert instruction_for("bge", "leetcode") == "Represent this Coding problem for searching relevant examples: "
    assert instruction_for("inst-xl", "stackoverflow") == (
        "Represent the stackoverflow post for retrieving relevant paragraphs: "
    )
    assert instruction_for("inst-l", "stackoverflow", side="document") == (
        "Represent the stackoverflow paragraph for retrieval: "
    )
    assert instruction_for("inst-l", "pony", side="document") == "Represent the Pony paragraph for retrieval: "
    assert instruction_for("inst-xl", "aops", side="document") == "Represent the Math example for retrieval: "
    assert (
        instruction_for("inst-l", "theoremqa_theorems", side="document") == "Represent the Math theorem for retrieval: "
    )
    assert instruction_for("grit", "economics") == (
        "<|user|>\nGiven a economics post, retrieve relevant passages that help answer the post\n<|embed|>\n"
    )
    assert instruction_for("grit", "leetcode") == (
        "<|user|>\nGiven a coding problem, retrieve relevant examples that help answer the problem\n<|embed|>\n"
    )
    assert instruction_for("grit", "pony", side="document") == "<|embed|>\n"


def test_every_family_and_split_is_fully_formatted() -> None:
    assert len(bright_splits()) == 12
    for family in [*E5_MEMBERS, "bge", "inst-l", "inst-xl", "grit"]:
        for split in bright_splits():
            text = instruction_for(family, split)
            assert text and "{" not in text, (family, split)
        for split in [*STACKEXCHANGE, "pony"]:
            assert "documents" in instruction_for(family, split, long_context=True)


def test_families_without_instructions_and_bad_names() -> None:
    for family in ("bm25", "sbert", "openai", "trained_model_noinst"):
        assert instruction_for(family, "biology") == ""
    with pytest.raises(ValueError, match="unknown instruction family"):
        instruction_for("qwen3", "biology")
    with pytest.raises(ValueError, match="known splits"):
        instruction_for("qwen", "Biology")
    with pytest.raises(ValueError, match="side must be"):
        instruction_for("qwen", "biology", side="doc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is not in"):
        TextFormat(instruction_family="qwen3")


def test_literal_instruction_templates() -> None:
    fmt = TextFormat(query_instruction="Represent this {task} post: ", doc_instruction="Doc: ")
    assert format_query("q", fmt, task="biology") == "Represent this biology post: q"
    assert format_document("d", fmt) == "Doc: d"
    with pytest.raises(ValueError, match="needs a task"):
        format_query("q", fmt)
    # The family table gives per-split document instructions when asked with a task.
    inst = TextFormat(instruction_family="inst-l")
    assert format_document("d", inst, task="pony") == "Represent the Pony paragraph for retrieval: d"
    assert format_document("d", inst) == "d"


def test_dict_round_trip() -> None:
    fmt = RADER.with_eos("<|im_end|>")
    assert TextFormat.from_dict(fmt.to_dict()) == fmt
    assert "name" not in fmt.to_dict()
    with pytest.raises(ValueError, match="unknown TextFormat fields"):
        TextFormat.from_dict({"query_prefix": "q", "prefix": "x"})
