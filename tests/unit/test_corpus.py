"""Corpus and example loading from the three sources: local mirror, single file, Hugging Face dataset.

``tests/resources/bright_mini`` is a hand-written mirror in BRIGHT's shape: ``biology`` has
``excluded_ids: ["N/A"]``, long documents and full-schema ``gpt4_reason`` rows; ``theoremqa_theorems``
has empty ``excluded_ids``, ``gold_ids_long: ["N/A"]`` and id+query-only ``gpt4_reason`` rows in
another order. The real ``examples`` records are read from ``shared/data`` beside the repository when
it is there.
"""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from models.retrieval.corpus import (
    BRIGHT_HF_REPO,
    BRIGHT_SPLITS,
    QUERY_TYPES,
    Corpus,
    Example,
    load_corpus,
    load_examples,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
MINI = REPO_ROOT / "tests" / "resources" / "bright_mini"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# specs/evaluation.md §1.2: #queries per split, verified there from the `examples` config.
BRIGHT_QUERY_COUNTS = {
    "biology": 103,
    "earth_science": 116,
    "economics": 103,
    "psychology": 101,
    "robotics": 101,
    "stackoverflow": 117,
    "sustainable_living": 108,
    "leetcode": 142,
    "pony": 112,
    "aops": 111,
    "theoremqa_questions": 194,
    "theoremqa_theorems": 76,
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(row) + "\n" for row in rows)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(lines)
    else:
        path.write_text(lines, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- Corpus


def test_corpus_lookup_and_fingerprint() -> None:
    corpus = Corpus("toy", ["a", "b"], ["first text", ""])
    assert len(corpus) == 2 and corpus.index_of("b") == 1 and corpus.text_of("a") == "first text"
    assert "a" in corpus and "z" not in corpus
    with pytest.raises(KeyError, match="'z' is not in corpus 'toy'"):
        corpus.index_of("z")

    fingerprint = corpus.fingerprint()
    assert len(fingerprint) == 64
    assert Corpus("renamed", ["a", "b"], ["first text", ""], source="elsewhere").fingerprint() == fingerprint
    assert Corpus("toy", ["a", "b"], ["first text!", ""]).fingerprint() != fingerprint
    assert Corpus("toy", ["b", "a"], ["", "first text"]).fingerprint() != fingerprint
    # Length prefixes: moving characters between an id and its text changes the hash.
    assert Corpus("x", ["ab"], ["c"]).fingerprint() != Corpus("x", ["a"], ["bc"]).fingerprint()


def test_corpus_rejects_duplicate_ids_naming_the_source() -> None:
    with pytest.raises(ValueError, match=r"corpus 'toy' from docs\.jsonl.*\['a'\]"):
        Corpus("toy", ["a", "b", "a"], ["1", "2", "3"], source="docs.jsonl")


def test_corpus_rejects_mismatched_lengths_and_non_string_ids() -> None:
    with pytest.raises(ValueError, match="2 ids but 1 texts"):
        Corpus("toy", ["a", "b"], ["1"])
    with pytest.raises(ValueError, match="must be str"):
        Corpus("toy", [1], ["1"])  # type: ignore[list-item]


# ---------------------------------------------------------------------------------------------- mirror


def test_mirror_corpus_keeps_dataset_order_ids_and_empty_texts() -> None:
    corpus = load_corpus(MINI, "biology")
    assert corpus.name == "biology"
    assert corpus.doc_ids == [
        "cat_purring/Purr_0.txt",
        "cat_purring/Purr_1.txt",
        "bird_flight/Feather_0.txt",
        "leaf_colour/Chlorophyll_0.txt",
        "leaf_colour/Chlorophyll_1.txt",
        "sleep/Circadian_rhythm_0.txt",
    ]
    assert corpus.text_of("leaf_colour/Chlorophyll_1.txt") == ""
    assert str(MINI / "documents" / "biology.jsonl") in corpus.source


def test_mirror_long_documents() -> None:
    corpus = load_corpus(str(MINI), "biology", long_context=True)
    assert corpus.name == "biology_long"
    assert corpus.doc_ids == ["cat_purring/Purr.txt", "leaf_colour/Chlorophyll.txt"]
    with pytest.raises(FileNotFoundError, match=r"no split 'theoremqa_theorems'.*\['biology'\]"):
        load_corpus(MINI, "theoremqa_theorems", long_context=True)


def test_mirror_missing_split_or_config_lists_what_exists(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"splits there: \['biology', 'theoremqa_theorems'\]"):
        load_corpus(MINI, "pony")
    with pytest.raises(FileNotFoundError, match=r"no config folder 'llama3-70b_reason'.*'gpt4_reason'"):
        load_examples(MINI, "biology", query_type="llama3-70b_reason")
    with pytest.raises(ValueError, match="pass split="):
        load_corpus(MINI)
    with pytest.raises(FileNotFoundError, match="neither 'hf'"):
        load_corpus(tmp_path / "nowhere", "biology")


def test_mirror_reads_gzip_and_prefers_plain_jsonl(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_jsonl(tmp_path / "documents" / "pony.jsonl.gz", [{"id": "Pony/a_0.txt", "content": "actor"}])
    assert load_corpus(tmp_path, "pony").doc_ids == ["Pony/a_0.txt"]
    write_jsonl(tmp_path / "documents" / "pony.jsonl", [{"id": "Pony/b_0.txt", "content": "class"}])
    with caplog.at_level(logging.WARNING, logger="models.retrieval.corpus"):
        assert load_corpus(tmp_path, "pony").doc_ids == ["Pony/b_0.txt"]
    assert "both pony.jsonl and pony.jsonl.gz" in caplog.text


def test_examples_normalise_na_placeholders() -> None:
    biology = load_examples(MINI, "biology")
    assert [e.query_id for e in biology] == ["0", "1"]
    first = biology[0]
    assert first == Example(
        query_id="0",
        query="Why does my cat make a rumbling noise when I stroke her?",
        gold_ids=["cat_purring/Purr_0.txt", "cat_purring/Purr_1.txt"],
        excluded_ids=[],  # ["N/A"] means "exclude nothing"
        gold_answer="It is purring; the larynx muscles twitch as the cat breathes.",
        reasoning="The rumbling is purring, produced by the larynx muscles.",
        gold_ids_long=["cat_purring/Purr.txt"],
    )
    theorems = load_examples(MINI, "theoremqa_theorems")
    assert [e.gold_ids_long for e in theorems] == [[], []]  # ["N/A"]: no long documents for this split
    assert [e.excluded_ids for e in theorems] == [[], []]


def test_reasoning_queries_replace_the_query_by_id() -> None:
    original = load_examples(MINI, "theoremqa_theorems")
    reasoned = load_examples(MINI, "theoremqa_theorems", query_type="gpt4_reason")
    assert [e.query_id for e in reasoned] == [e.query_id for e in original]  # `examples` order
    assert reasoned[0].query.startswith("The ladder, wall and ground form a right triangle")
    assert reasoned[1].query.startswith("By Fermat's little theorem")
    for before, after in zip(original, reasoned, strict=True):
        assert (after.gold_ids, after.excluded_ids, after.gold_answer) == (
            before.gold_ids,
            before.excluded_ids,
            before.gold_answer,
        )
    biology = load_examples(MINI, "biology", query_type="gpt4_reason")
    assert biology[0].query.startswith("A cat's rumbling is purring")


def test_reasoning_config_must_cover_every_query(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "examples" / "pony.jsonl",
        [{"id": "0", "query": "q0", "gold_ids": ["d"]}, {"id": "1", "query": "q1", "gold_ids": ["e"]}],
    )
    write_jsonl(tmp_path / "gpt4_reason" / "pony.jsonl", [{"id": "1", "query": "r1"}])
    with pytest.raises(ValueError, match=r"no gpt4_reason query for 1 of 2 examples \(first: \['0'\]\)"):
        load_examples(tmp_path, "pony", query_type="gpt4_reason")


def test_unknown_query_type_lists_choices() -> None:
    with pytest.raises(ValueError, match="gpt4_reason"):
        load_examples(MINI, "biology", query_type="gpt4")
    assert QUERY_TYPES[0] == "original" and "Gemini-1.0_reason" in QUERY_TYPES


def test_examples_reject_gold_excluded_overlap(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "examples" / "aops.jsonl",
        [{"id": "q", "query": "x", "gold_ids": ["d1"], "excluded_ids": ["d1", "d2"]}],
    )
    with pytest.raises(ValueError, match=r"query 'q' lists \['d1'\] in both"):
        load_examples(tmp_path, "aops")


# ---------------------------------------------------------------------------------------------- single file


def test_jsonl_file_with_custom_fields_and_integer_ids(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "theorems.jsonl.gz", [{"doc_id": 7, "text": "Rolle"}, {"doc_id": "8", "text": "Taylor"}]
    )
    corpus = load_corpus(path, id_field="doc_id", text_field="text")
    assert corpus.name == "theorems" and corpus.doc_ids == ["7", "8"] and corpus.texts == ["Rolle", "Taylor"]
    assert load_corpus(path, "champ_concepts", id_field="doc_id", text_field="text").name == "champ_concepts"


def test_missing_field_error_names_file_record_field_and_fix(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [{"id": "a", "content": "x"}, {"id": "b", "text": "y"}])
    with pytest.raises(
        ValueError, match=r"docs\.jsonl record 2 has no field 'content' \(fields: \['id', 'text'\]\); pass text_field="
    ):
        load_corpus(path)
    duplicate = write_jsonl(tmp_path / "dup.jsonl", [{"id": "a", "content": "x"}, {"id": "a", "content": "y"}])
    with pytest.raises(ValueError, match=r"dup\.jsonl.*occur more than once"):
        load_corpus(duplicate)


def test_json_list_of_examples_and_file_limits(tmp_path: Path) -> None:
    path = tmp_path / "input.json"
    path.write_text(json.dumps([{"id": "q1", "query": "what?", "gold_ids": ["d"], "excluded_ids": ["N/A"]}]))
    (example,) = load_examples(path)
    assert example == Example(query_id="q1", query="what?", gold_ids=["d"])
    with pytest.raises(ValueError, match="needs a source with configs"):
        load_examples(path, query_type="gpt4_reason")


# ---------------------------------------------------------------------------------------------- Hugging Face


def make_hf_hub_layout(root: Path) -> Path:
    """A directory laid out like the Hub repo: README `configs` + `<config>/<split>-*.parquet`."""
    from datasets import Dataset

    tables = {
        ("documents", "biology"): {"id": ["b/x_0.txt", "b/y_0.txt"], "content": ["cats purr", ""]},
        ("documents", "pony"): {"id": ["Pony/z_0.txt"], "content": ["actors"]},
        ("examples", "biology"): {
            "query": ["why purr"],
            "reasoning": ["purring"],
            "id": ["0"],
            "excluded_ids": [["N/A"]],
            "gold_ids_long": [["b/x.txt"]],
            "gold_ids": [["b/x_0.txt"]],
            "gold_answer": ["they purr"],
        },
        ("gpt4_reason", "biology"): {
            "query": ["purring is a laryngeal vibration"],
            "id": ["0"],
            "gold_ids": [["b/x_0.txt"]],
        },
    }
    readme = ["---", "configs:"]
    for config in ("documents", "examples", "gpt4_reason"):
        readme += [f"- config_name: {config}", "  data_files:"]
        for (name, split), columns in tables.items():
            if name == config:
                (root / config).mkdir(parents=True, exist_ok=True)
                Dataset.from_dict(columns).to_parquet(str(root / config / f"{split}-00000-of-00001.parquet"))
                readme += [f"  - split: {split}", f"    path: {config}/{split}-*"]
    (root / "README.md").write_text("\n".join([*readme, "---", ""]), encoding="utf-8")
    return root


def test_hf_source_through_a_local_hub_layout(tmp_path: Path) -> None:
    root = make_hf_hub_layout(tmp_path / "BRIGHT")
    cache = str(tmp_path / "hf_cache")
    corpus = load_corpus(f"hf:{root}", "biology", cache_dir=cache)
    assert corpus.name == "biology" and corpus.doc_ids == ["b/x_0.txt", "b/y_0.txt"] and corpus.texts[1] == ""
    (example,) = load_examples(f"hf:{root}", "biology", cache_dir=cache)
    assert example.excluded_ids == [] and example.gold_ids_long == ["b/x.txt"]
    (reasoned,) = load_examples(f"hf:{root}", "biology", query_type="gpt4_reason", cache_dir=cache)
    assert reasoned.query == "purring is a laryngeal vibration" and reasoned.gold_answer == "they purr"
    with pytest.raises(FileNotFoundError, match=r"Unknown split.*'biology', 'pony'"):
        load_corpus(f"hf:{root}", "aops", cache_dir=cache)
    # Passing the directory itself (not as hf:) points at the right source.
    with pytest.raises(FileNotFoundError, match=f"use source 'hf:{root}'"):
        load_corpus(root, "aops")


def test_hf_source_through_save_to_disk(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    DatasetDict(
        {"leetcode": Dataset.from_dict({"id": ["leetcode/leetcode_1.txt"], "content": ["two sum"]})}
    ).save_to_disk(str(tmp_path / "documents"))
    corpus = load_corpus(f"hf:{tmp_path}", "leetcode")
    assert corpus.doc_ids == ["leetcode/leetcode_1.txt"] and corpus.texts == ["two sum"]
    with pytest.raises(FileNotFoundError, match=r"no split 'aops' \(splits: \['leetcode'\]\)"):
        load_corpus(f"hf:{tmp_path}", "aops")


def test_plain_hf_source_is_xlangai_bright_with_the_environments_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake_load_dataset(path, name, **kwargs):
        calls.append((path, name, kwargs))
        return datasets.Dataset.from_dict({"id": ["1"], "content": ["x"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    load_corpus("hf", "aops", revision="abc123")
    # No cache_dir unless asked: datasets then uses HF_HOME / HF_DATASETS_CACHE and honours offline mode.
    assert calls == [(BRIGHT_HF_REPO, "documents", {"split": "aops", "revision": "abc123", "cache_dir": None})]

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'xlangai/BRIGHT' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(FileNotFoundError, match="HF_HOME"):
        load_corpus("hf", "aops")


# ---------------------------------------------------------------------------------------------- real BRIGHT


@pytest.mark.skipif(
    not (SHARED_DATA / "bright" / "examples").is_dir(),
    reason=f"BRIGHT examples mirror not found at {SHARED_DATA}/bright (shared/ beside the repository)",
)
def test_bright_examples_query_counts_from_the_shared_mirror() -> None:
    assert sum(BRIGHT_QUERY_COUNTS.values()) == 1384
    assert set(BRIGHT_QUERY_COUNTS) == set(BRIGHT_SPLITS)
    for split, expected in BRIGHT_QUERY_COUNTS.items():
        examples = load_examples(SHARED_DATA / "bright", split)
        assert len(examples) == expected, split
        assert all(e.gold_ids and "N/A" not in e.excluded_ids and "N/A" not in e.gold_ids_long for e in examples)
        has_excluded = sum(bool(e.excluded_ids) for e in examples)
        # §1.2: only leetcode, aops and theoremqa_questions exclude documents, for every query.
        assert has_excluded == (expected if split in {"leetcode", "aops", "theoremqa_questions"} else 0), split
