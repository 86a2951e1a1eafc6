"""Parsers of generator output: candidate theorems (per block), self-reflection verdicts, one-step thoughts."""

from __future__ import annotations

import pytest

from run_src.mcts.actions import RelevanceLabel
from run_src.mcts.parsing import first_step, parse_candidate_theorems, parse_self_reflection

TWO_BLOCKS = """Theorem 1: Vieta's formulas
Theorem Statement: r1 + r2 = -b/a and r1 r2 = c/a.
Preconditions: a quadratic with a != 0.
Why Preconditions are Satisfied: the polynomial is quadratic.
Subject: Algebra (Polynomials)
Theorem 2: AM-GM inequality
Theorem Statement: (x + y)/2 >= sqrt(xy) for x, y >= 0.
Subject: Algebra (Inequalities)"""


def test_two_blocks_parse_into_aligned_records() -> None:
    first, second = parse_candidate_theorems(TWO_BLOCKS)
    assert first.query == "Theorem Name: Vieta's formulas\nTheorem Statement: r1 + r2 = -b/a and r1 r2 = c/a."
    assert first.preconditions_theorem == "a quadratic with a != 0."
    assert first.preconditions_question == "the polynomial is quadratic."
    assert first.subject == "Algebra (Polynomials)"
    # The second block lacks preconditions: its fields stay None instead of shifting (reference S7).
    assert second.query.startswith("Theorem Name: AM-GM inequality\n")
    assert (second.preconditions_theorem, second.preconditions_question) == (None, None)
    assert second.subject == "Algebra (Inequalities)"
    assert first.full_output == second.full_output == TWO_BLOCKS


def test_labels_are_case_insensitive_and_may_be_bold() -> None:
    text = "Here you go.\n**Theorem 1:** Pigeonhole principle\n**theorem statement:** n+1 items in n boxes share a box.\n"
    (candidate,) = parse_candidate_theorems(text)
    assert candidate.query == "Theorem Name: Pigeonhole principle\nTheorem Statement: n+1 items in n boxes share a box."


def test_long_why_label_is_recognised() -> None:
    text = "Theorem 1: X\nTheorem Statement: S.\nWhy Preconditions are Satisfied in the Question: because.\nSubject: T"
    (candidate,) = parse_candidate_theorems(text)
    assert candidate.preconditions_question == "because."


@pytest.mark.parametrize(
    "text",
    ["", "no theorem here", "Theorem 1: Name only, no statement", "Theorem Statement: statement without a header"],
)
def test_blocks_without_name_and_statement_give_nothing(text: str) -> None:
    assert parse_candidate_theorems(text) == []


def test_a_bad_block_does_not_spoil_the_good_one() -> None:
    text = "Theorem 1: Broken\nSubject: none\nTheorem 2: Good\nTheorem Statement: fine."
    (candidate,) = parse_candidate_theorems(text)
    assert candidate.query == "Theorem Name: Good\nTheorem Statement: fine."


@pytest.mark.parametrize(
    ("reply", "label", "reason"),
    [
        ("Relevant: True\nReason: it applies.", RelevanceLabel.RELEVANT, "it applies."),
        ("Relevant: False\nReason: unrelated.", RelevanceLabel.IRRELEVANT, "unrelated."),
        (" False\nReason: unrelated.", RelevanceLabel.IRRELEVANT, "unrelated."),  # no echoed label
        ("**Relevant:** true", RelevanceLabel.RELEVANT, None),  # no reason
        ("Yes. Reason: direct use.", RelevanceLabel.RELEVANT, "direct use."),
        ("Relevant: False\nReason: no.\nQuestion: next example...", RelevanceLabel.IRRELEVANT, "no."),
        ("I think the theorem is interesting.", RelevanceLabel.UNPARSABLE, None),
        ("It has no bearing, I would say false.", RelevanceLabel.IRRELEVANT, None),
        ("There is no doubt about it", RelevanceLabel.UNPARSABLE, None),  # "no" in prose is not a verdict
        ("Reason: True is mentioned only in the reason", RelevanceLabel.UNPARSABLE, "True is mentioned only in the reason"),
        ("", RelevanceLabel.UNPARSABLE, None),
    ],
)
def test_self_reflection_verdicts(reply: str, label: RelevanceLabel, reason: str | None) -> None:
    assert parse_self_reflection(reply) == (label, reason)


@pytest.mark.parametrize(
    ("text", "step"),
    [
        ("Add 2 to both sides.", "Add 2 to both sides."),
        ("\n\n  Next step: Add 2.\nmore", "Add 2."),
        ("   \n", ""),
    ],
)
def test_first_step(text: str, step: str) -> None:
    assert first_step(text) == step
