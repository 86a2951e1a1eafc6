"""Answer extraction, normalisation and equivalence on hand-written MATH answer forms; the timeout
path; the LLM-judge parsing with a scripted fake client; the ``grade_answers`` CLI round trip."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.answers.checking import (
    GradeResult,
    SymbolicChecker,
    grade,
    is_equivalent,
)
from models.answers.extraction import extract_boxed, gold_answer_from_solution, has_boxed, normalize_answer
from models.answers.judge import judge_equivalence, load_judge_prompt, parse_judge_reply, render_judge_prompt
from models.llm.client import Completion, Message, SamplingParams
from run_src import grade_answers
from tests.fakes import FakeGeneratorServer

# Correctness tests must not depend on machine load (a loaded 2-core box can take seconds per
# symbolic call); the time limit itself has its own tests below.
GENEROUS_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def checker() -> Iterator[SymbolicChecker]:
    with SymbolicChecker() as shared:
        yield shared


# ------------------------------------------------------------------ extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so $x = \\boxed{5}$.", "5"),
        ("nested: \\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),
        ("deep \\boxed{\\left(\\frac{a}{b^{2}}, \\{1\\}\\right)} end", "\\left(\\frac{a}{b^{2}}, \\{1\\}\\right)"),
        ("first \\boxed{1} then \\boxed{2}", "2"),
        ("a set \\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("fbox form \\fbox{7}", "7"),
        ("later fbox \\boxed{1} then \\fbox{3}", "3"),
        ("brace-less \\boxed 5$.", "5"),
        ("brace-less \\boxed \\frac12.", "\\frac12"),
        ("multi-line \\boxed{\n x+1\n}", "x+1"),
        ("spaces before the brace \\boxed {12}", "12"),
        ("escaped backslash then brace \\boxed{1 \\\\ 2}", "1 \\\\ 2"),
    ],
)
def test_extract_boxed_takes_the_last_balanced_box(text: str, expected: str) -> None:
    assert extract_boxed(text) == expected
    assert has_boxed(text)


@pytest.mark.parametrize(
    "text",
    ["no box here, the answer is 5", "", None, "unclosed \\boxed{\\frac{1}{2}", "empty \\boxed{}", "\\boxedfoo{3}"],
)
def test_extract_boxed_returns_none_without_a_usable_box(text: str | None) -> None:
    assert extract_boxed(text) is None
    assert not has_boxed(text)


def test_gold_answer_from_solution_uses_the_last_box_and_refuses_unboxed_solutions() -> None:
    solution = "First $\\boxed{3}$ is wrong.\n\nSo the area is $\\boxed{\\dfrac{9}{2}}$."
    assert gold_answer_from_solution(solution) == "\\dfrac{9}{2}"
    with pytest.raises(ValueError, match="no \\\\boxed"):
        gold_answer_from_solution("The answer is 4.")


# ------------------------------------------------------------------ normalisation


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("10", "10"),  # §12 S5: the reference stripped trailing zeros and made 10 equal 1
        ("100", "100"),
        ("0", "0"),
        ("2.0", "2"),
        ("-3.00", "-3"),
        ("2.50", "2.50"),
        ("\\dfrac12", "\\frac{1}{2}"),
        ("\\tfrac{3}{4}", "\\frac{3}{4}"),
        ("0.5", "\\frac{1}{2}"),
        (".5", "\\frac{1}{2}"),
        ("3/4", "\\frac{3}{4}"),
        ("k = 5", "5"),
        ("\\theta = 30^\\circ", "30"),
        ("x \\in [0, 1]", "[0,1]"),
        ("\\left( 1, 2 \\right)", "(1,2)"),
        ("a \\rightarrow b", "a\\rightarrow b"),
        ("90^{\\circ}", "90"),
        ("\\$1.50", "1.50"),
        ("50\\%", "50"),
        ("5\\text{ cm}", "5"),
        ("5 \\text{ cm}^2", "5"),
        ("441\\text{ pounds}", "441"),
        ("\\text{Devon}", "\\text{Devon}"),
        ("1\\text{ or }2", "1\\text{or}2"),
        ("\\sqrt2", "\\sqrt{2}"),
        ("\\sqrt 3", "\\sqrt{3}"),
        ("\\sqrt[3]{x}", "\\sqrt[3]{x}"),
        ("1,000", "1000"),
        ("1{,}000", "1000"),
        ("1,\\!000", "1000"),
        ("1\\,000\\,000", "1000000"),
        ("\\cos x", "\\cos x"),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
        ("$\\frac{1}{2}$", "\\frac{1}{2}"),
        ("\\boxed{7}", "7"),
        ("5.", "5"),
        ("x \\leq 3", "x\\le3"),
        ("", ""),
        (None, ""),
    ],
)
def test_normalize_answer(raw: str | None, expected: str) -> None:
    assert normalize_answer(raw) == expected


# ------------------------------------------------------------------ equivalence

EQUIVALENT = [
    ("\\frac{1}{2}", "0.5"),
    ("1/2", "\\frac{1}{2}"),
    ("0.5", "1/2"),
    ("\\dfrac{1}{2}", "\\frac12"),
    ("\\frac{2}{4}", "\\frac{1}{2}"),
    ("-\\frac{1}{2}", "\\frac{-1}{2}"),
    ("1.25", "\\frac54"),
    ("6\\frac{1}{4}", "\\frac{25}{4}"),  # a MATH mixed number
    ("2\\sqrt{3}", "\\sqrt{12}"),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
    ("10 + 5\\sqrt{3}", "5\\sqrt3+10"),
    ("\\sqrt[3]{8}", "2"),
    ("[0, 1)", "[0,1)"),
    ("(-\\infty, 0) \\cup (1, \\infty)", "(1,\\infty)\\cup(-\\infty,0)"),
    ("(-\\infty,\\infty)", "\\mathbb{R}"),
    ("(1, 2)", "(1,2)"),
    ("\\left(\\tfrac{15}{4},0\\right)", "(15/4, 0)"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("4, 0, -4", "-4,0,4"),  # "enter all solutions": order-free
    ("\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\-2\\end{pmatrix}"),
    ("30^\\circ", "30"),
    ("30", "30^{\\circ}"),
    ("5\\text{ cm}", "5"),
    ("21\\text{ dogs}", "21"),
    ("\\text{(B)}", "B"),
    ("(B)", "\\text{(B)}"),
    ("\\textbf{(C)}", "(C)"),
    ("\\text{Sunday}", "Sunday"),
    ("\\text{east}", "\\text{East}"),
    ("yes", "True"),
    ("\\text{no}", "False"),
    ("\\frac{\\pi}{2}", "\\pi/2"),
    ("2\\pi", "\\pi \\cdot 2"),
    ("3.14159265", "\\pi"),
    ("-7", "-7.0"),
    ("-0.5", "-\\frac{1}{2}"),
    ("1,000", "1000"),
    ("1{,}000{,}000", "1000000"),
    ("50\\%", "50"),
    ("k=5", "5"),
    ("x^2+4x+1", "(x+2)^2-3"),
    ("2(x+1)", "2x+2"),
    ("\\cos x", "\\cos(x)"),
    ("2^{10}", "1024"),
    ("0.3333333", "\\frac{1}{3}"),  # within the relative 1e-6 tolerance for decimals
]

NOT_EQUIVALENT = [
    ("10", "1"),
    ("100", "1"),
    ("20", "2"),
    ("1/2", "12"),
    ("12", "1,2"),
    ("x+1", "x-1"),
    ("x+1", "y+1"),
    ("x^2", "x^3"),
    ("2x", "x^2"),
    ("(1,2)", "(2,1)"),
    ("(1,2)", "[1,2]"),
    ("[0,1)", "[0,1]"),
    ("(0,1)", "(0,1]"),
    ("\\{1,2\\}", "\\{1,2,3\\}"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}2\\\\1\\end{pmatrix}"),
    ("-1", "1"),
    ("3", "\\frac{1}{3}"),
    ("6\\frac14", "\\frac{6}{4}"),
    ("\\frac{1}{3}", "0.333"),  # a rounded decimal is outside the 1e-6 tolerance
    ("\\pi", "3.14"),
    ("\\frac{\\pi}{6}", "30"),
    ("1000000", "1000001"),  # integers: no tolerance
    ("\\sqrt{2}", "\\sqrt{3}"),
    ("2\\sqrt{3}", "3\\sqrt{2}"),
    ("50", "0.5"),
    ("\\text{(B)}", "\\text{(C)}"),
    ("(b)", "C"),
    ("\\text{Devon}", "\\text{Devno}"),
    ("Devon", "Devno"),  # text answers are never compared as products of symbols
    ("yes", "False"),
    ("8", "4\\sqrt{3}"),
    ("17", "(-5\\sqrt{2}, 5 + 5\\sqrt{2})"),
    ("0", ""),
]


@pytest.mark.parametrize(("prediction", "gold"), EQUIVALENT)
def test_equivalent_forms_match(prediction: str, gold: str, checker: SymbolicChecker) -> None:
    assert is_equivalent(prediction, gold, timeout_s=GENEROUS_TIMEOUT_S, checker=checker), (prediction, gold)


@pytest.mark.parametrize(("prediction", "gold"), NOT_EQUIVALENT)
def test_different_answers_never_match(prediction: str, gold: str, checker: SymbolicChecker) -> None:
    assert not is_equivalent(prediction, gold, timeout_s=GENEROUS_TIMEOUT_S, checker=checker), (prediction, gold)
    assert not is_equivalent(gold, prediction, timeout_s=GENEROUS_TIMEOUT_S, checker=checker), (gold, prediction)


def test_missing_answers_follow_the_reference_rules(caplog: pytest.LogCaptureFixture) -> None:
    assert not is_equivalent(None, "1")
    assert not is_equivalent("1", None)
    with caplog.at_level(logging.WARNING, logger="models.answers.checking"):
        assert is_equivalent(None, None)
    assert "two missing answers" in caplog.text


# ------------------------------------------------------------------ grade


def test_grade_reports_extraction_normalisation_and_method(checker: SymbolicChecker) -> None:
    result = grade("The area is $\\boxed{\\dfrac{1}{2}}$ square units.", "0.5", checker=checker)
    assert result == GradeResult(True, "\\dfrac{1}{2}", "\\frac{1}{2}", "\\frac{1}{2}", "exact")
    result = grade("so we get \\boxed{2\\sqrt{3}}", "\\sqrt{12}", timeout_s=GENEROUS_TIMEOUT_S, checker=checker)
    assert (result.correct, result.method) == (True, "symbolic")
    result = grade("\\boxed{(2,1)}", "(1,2)", checker=checker)
    assert (result.correct, result.method) == (False, "structure")


def test_grade_without_a_box_uses_the_text_unless_a_box_is_required(checker: SymbolicChecker) -> None:
    assert grade("  42 ", "42", checker=checker).correct
    assert grade("The answer is 42", "42", checker=checker).correct is False
    required = grade("42", "42", require_boxed=True, checker=checker)
    assert (required.correct, required.extracted, required.method) == (False, None, "no_answer")
    assert grade("", "42", checker=checker).method == "no_answer"


# ------------------------------------------------------------------ timeouts


def fake_slow_compare(prediction: str, gold: str) -> bool:
    """A stand-in for a pathological symbolic comparison: hangs when the prediction contains ``99999``."""
    if "99999" in prediction:
        time.sleep(60)
    return prediction == gold


def test_a_hanging_comparison_is_killed_within_the_time_limit() -> None:
    with SymbolicChecker(compare_fn=fake_slow_compare) as slow_checker:
        assert slow_checker.compare("\\sqrt{2}", "\\sqrt{2}", timeout_s=30)  # starts the worker, untimed
        start = time.monotonic()
        result = grade("\\boxed{\\sqrt{99999}}", "\\sqrt{3}", timeout_s=1.0, checker=slow_checker)
        elapsed = time.monotonic() - start
        assert (result.correct, result.method) == (False, "timeout")
        assert elapsed < 1.0 + 3.0, f"took {elapsed:.1f} s for a 1 s limit"
        assert slow_checker.compare("\\sqrt{5}", "\\sqrt{5}", timeout_s=30)  # a fresh worker took over


def test_an_enormous_real_expression_times_out(checker: SymbolicChecker) -> None:
    checker.compare("1", "1", timeout_s=60)  # make sure the worker is up, so only the comparison is timed
    start = time.monotonic()
    result = grade("\\boxed{(\\sqrt{2}+1)^{100000}}", "(\\sqrt{2}-1)^{-100000}+1", timeout_s=1.0, checker=checker)
    elapsed = time.monotonic() - start
    assert not result.correct
    assert elapsed < 1.0 + 3.0, f"took {elapsed:.1f} s for a 1 s limit"
    assert is_equivalent("\\sqrt{8}", "2\\sqrt{2}", checker=checker, timeout_s=GENEROUS_TIMEOUT_S)


# ------------------------------------------------------------------ LLM judge


class FakeScriptedJudgeClient:
    """Replies to each chat request with the next scripted text and records what it was sent."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.sent: list[tuple[list[Message], SamplingParams]] = []

    async def achat(self, messages: list[Message], params: SamplingParams | None = None) -> Completion:
        assert params is not None
        self.sent.append((messages, params))
        return Completion([self.replies.pop(0)], ["stop"], prompt_tokens=10, completion_tokens=1, model="fake")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Yes", True),
        ("yes.", True),
        ("**Yes**", True),
        ("Yes, both equal one half.", True),
        ("no.", False),
        ("No", False),
        ("No, 10 is not 1.", False),
        ("<think>maybe no</think>Yes", True),
        ("They are equivalent: yes", True),
        ("garbage", None),
        ("", None),
        ("yes or no?", None),
        ("not True", None),  # the reference's substring test would have said True (§12 S4)
        ("True", True),
        ("False.", False),
        ("True or False", None),
    ],
)
def test_parse_judge_reply(reply: str, expected: bool | None) -> None:
    assert parse_judge_reply(reply) is expected


async def test_judge_equivalence_with_a_scripted_fake_client(caplog: pytest.LogCaptureFixture) -> None:
    client = FakeScriptedJudgeClient(["Yes", "no.", "garbage"])
    question, completion = "What is 1/2 as a decimal?", "Dividing gives \\boxed{\\frac{1}{2}}."
    first = await judge_equivalence(client, question=question, completion=completion, prediction="\\frac{1}{2}", gold="0.5")  # type: ignore[arg-type]
    assert (first.equivalent, first.readable, first.reply) == (True, True, "Yes")
    second = await judge_equivalence(client, question="q", completion="c", prediction="10", gold="1")  # type: ignore[arg-type]
    assert (second.equivalent, second.readable) == (False, True)
    with caplog.at_level(logging.WARNING, logger="models.answers.judge"):
        third = await judge_equivalence(client, question="q", completion="c", prediction="x", gold="y")  # type: ignore[arg-type]
    assert (third.equivalent, third.readable) == (False, False)
    assert "neither yes nor no" in caplog.text
    messages, params = client.sent[0]
    assert params.temperature == 0.0 and params.n == 1 and params.max_tokens <= 20
    # One user message (the reference's shape) that shows the question, the whole completion and the gold answer.
    assert messages == render_judge_prompt(question=question, completion=completion, prediction="\\frac{1}{2}", gold="0.5")
    assert len(messages) == 1 and messages[0]["role"] == "user"
    content = messages[0]["content"]
    assert question in content and completion in content and "Reference answer: 0.5" in content
    assert content.count("Equivalent:") == 5  # four few-shot examples, then this answer


def test_judge_template_placeholders_are_checked(tmp_path: Path) -> None:
    assert load_judge_prompt().placeholders == {"question", "gold", "completion", "prediction"}
    bad = tmp_path / "judge.txt"
    bad.write_text("### user\nIs {answer} right?\n")
    with pytest.raises(ValueError, match="placeholders"):
        load_judge_prompt(bad)


# ------------------------------------------------------------------ CLI


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = [
        {"id": "a", "prediction": "We find $\\boxed{\\dfrac{1}{2}}$.", "gold": "0.5", "extra": 1},
        {"id": "b", "prediction": "\\boxed{10}", "gold": "1"},
        {"id": "c", "prediction": "[0,1)", "gold": "[0, 1)"},
        {"id": "d", "prediction": "no idea", "gold": "7"},
    ]
    source, target = tmp_path / "preds.jsonl", tmp_path / "out" / "graded.jsonl"
    _write_jsonl(source, records)
    assert grade_answers.main(["--input", str(source), "--output", str(target), "--quiet"]) == 0
    graded = [json.loads(line) for line in target.read_text().splitlines()]
    assert graded == [{**r, "correct": c} for r, c in zip(records, [True, False, True, False], strict=True)]
    assert json.loads(capsys.readouterr().out.strip()) == {"n": 4, "correct": 2, "accuracy": 0.5}
    # no temp file left; the stage record sits beside the output
    assert sorted(p.name for p in target.parent.iterdir()) == ["graded.config.json", "graded.jsonl"]
    # A rerun into the same output with another setting is refused, naming it; an informational one is not.
    assert grade_answers.main(["--input", str(source), "--output", str(target), "--quiet", "--timeout_s", "9"]) == 2
    assert grade_answers.main(["--input", str(source), "--output", str(target), "--quiet", "--num_workers", "2"]) == 0


def test_cli_names_the_file_line_and_missing_field(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "preds.jsonl"
    source.write_text('{"id": "a", "prediction": "1", "gold": "1"}\n\n{"id": "b", "prediction": "2"}\n')
    assert grade_answers.main(["--input", str(source), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert re.search(r"preds\.jsonl line 3 has no 'gold' field", caplog.text)
    source.write_text('{"id": "a", "prediction": "1", "gold": "1"}\n{"id": \n')
    assert grade_answers.main(["--input", str(source), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert re.search(r"preds\.jsonl line 2 is not valid JSON", caplog.text)
    assert grade_answers.main(["--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "missing.jsonl" in caplog.text
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_llm_judge_asks_only_about_rejected_items(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, target = tmp_path / "preds.jsonl", tmp_path / "graded.jsonl"
    _write_jsonl(source, [{"id": "a", "prediction": "\\boxed{2}", "gold": "2"},
                          {"id": "b", "prediction": "So it is \\boxed{3}", "gold": "4", "question": "What is 2 + 2?"}])
    # The fake server echoes the prompt ("reply 0 to: ... Yes or No."), which is no verdict: counted as wrong.
    with FakeGeneratorServer("ok") as server:
        code = grade_answers.main(["--input", str(source), "--output", str(target), "--llm_judge",
                                   "--generator_url", server.base_url, "--model", "fake-judge", "--quiet"])
    assert code == 0
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [row["correct"] for row in rows] == [True, False]
    assert "judge" not in rows[0] and rows[1]["judge"]["readable"] is False  # the verdict is recorded
    assert len(server.requests) == 1
    body = server.requests[0].body
    assert body["model"] == "fake-judge" and body["temperature"] == 0.0
    content = body["messages"][0]["content"]
    assert content.endswith("Question: What is 2 + 2?\nReference answer: 4\nModel solution: So it is \\boxed{3}\n"
                            "Final answer of the model: 3\nEquivalent:")
    assert json.loads(capsys.readouterr().out.strip())["correct"] == 1
