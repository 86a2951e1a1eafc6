"""The parser corpus (``tests/resources/parser_corpus.json``): realistic generator outputs in the formats
instruction-tuned models write, each with the parse it must give. Adding a case is adding a JSON object."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from run_src.mcts.actions import RelevanceLabel
from run_src.mcts.parsing import first_step, parse_candidate_theorems, parse_self_reflection

CORPUS = json.loads((Path(__file__).parents[1] / "resources" / "parser_corpus.json").read_text(encoding="utf-8"))


def test_the_corpus_is_large_and_covers_every_parser() -> None:
    kinds = Counter(case["kind"] for case in CORPUS)
    assert len(CORPUS) >= 60 and kinds["candidates"] >= 30 and kinds["verdict"] >= 25 and kinds["ost"] >= 3
    assert len({case["id"] for case in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=[case["id"] for case in CORPUS])
def test_case_parses_as_expected(case: dict[str, Any]) -> None:
    if case["kind"] == "candidates":
        parsed = parse_candidate_theorems(case["text"])
        expected = [f"Theorem Name: {name}\nTheorem Statement: {statement}" for name, statement in case["expected"]]
        assert [candidate.query for candidate in parsed] == expected
        assert all(candidate.full_output for candidate in parsed)
    elif case["kind"] == "verdict":
        label, reason = parse_self_reflection(case["text"])
        assert (label, reason) == (RelevanceLabel(case["expected"]["label"]), case["expected"]["reason"])
    else:
        assert first_step(case["text"]) == case["expected"]
