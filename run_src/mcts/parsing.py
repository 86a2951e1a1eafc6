"""Reading the generator's free text back into structures: candidate theorems, self-reflection verdicts, steps,
and the replies of rStar's optional sub-question (A3) and rephrase (A5) actions.

All parsers are total: malformed text gives fewer candidates, an ``UNPARSABLE`` label or ``None``, never an
exception, because a weak model's formatting drift must not kill a search. Spec ``specs/mcts.md`` §6.3,
§6.4.4 with the [FIX]es of S3 and S7 (per-block parsing, case-insensitive labels, robust verdicts), §6.6.
"""

from __future__ import annotations

import re

from models.answers.extraction import extract_boxed, normalize_answer
from run_src.mcts.actions import QueryCandidate, RelevanceLabel

_BLOCK_HEADER = re.compile(r"^[ \t]*(?:\*\*)?Theorem[ \t]+\d+[ \t]*(?:\*\*)?[ \t]*:", re.IGNORECASE | re.MULTILINE)
_FIELD_LABELS = {
    "statement": r"Theorem[ \t]+Statement",
    "preconditions": r"Preconditions",
    "why": r"Why[ \t]+(?:the[ \t]+)?Preconditions[^:\n]*",
    "subject": r"Subject",
}
_FIELD_START = re.compile(
    r"^[ \t]*(?:\*\*)?(?P<label>" + "|".join(f"(?P<{k}>{v})" for k, v in _FIELD_LABELS.items()) + r")(?:\*\*)?[ \t]*:",
    re.IGNORECASE | re.MULTILINE,
)


def _clean(text: str) -> str | None:
    text = text.strip().strip("*").strip()
    return text or None


def _parse_block(block: str, full_output: str) -> QueryCandidate | None:
    """One ``Theorem k:`` block → a candidate; ``None`` unless it has both a name and a statement."""
    header = _BLOCK_HEADER.match(block)
    assert header is not None
    body = block[header.end() :]
    starts = list(_FIELD_START.finditer(body))
    name = _clean(body[: starts[0].start()] if starts else body)
    fields: dict[str, str | None] = {}
    for index, match in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(body)
        key = next(k for k in _FIELD_LABELS if match.group(k) is not None)
        fields.setdefault(key, _clean(body[match.end() : end]))
    statement = fields.get("statement")
    if not name or not statement:
        return None
    return QueryCandidate(
        query=f"Theorem Name: {name}\nTheorem Statement: {statement}",
        preconditions_theorem=fields.get("preconditions"),
        preconditions_question=fields.get("why"),
        subject=fields.get("subject"),
        full_output=full_output,
    )


def parse_candidate_theorems(text: str) -> list[QueryCandidate]:
    """Every well-formed ``Theorem k: … Theorem Statement: …`` block of a QG generation, in order.

    [FIX] S7: each block is parsed on its own into one record (fields cannot shift to another theorem),
    labels are case-insensitive and may be bold, and the "why" label may carry extra words.
    """
    headers = list(_BLOCK_HEADER.finditer(text))
    candidates: list[QueryCandidate] = []
    for index, match in enumerate(headers):
        end = headers[index + 1].start() if index + 1 < len(headers) else len(text)
        candidate = _parse_block(text[match.start() : end], text)
        if candidate is not None:
            candidates.append(candidate)
    return candidates


_VERDICT = re.compile(r"(true|false|yes|no)\b", re.IGNORECASE)
_TRUE_FALSE = re.compile(r"\b(true|false)\b", re.IGNORECASE)
_REASON = re.compile(r"Reason\s*:", re.IGNORECASE)
_NEXT_EXAMPLE = re.compile(r"\n\s*Question\s*:", re.IGNORECASE)


def parse_self_reflection(reply: str) -> tuple[RelevanceLabel, str | None]:
    """``(label, reason)`` from a ``Relevant: True/False`` / ``Reason: …`` reply.

    [FIX] §6.4.4: an optional ``Relevant:`` prefix is skipped, a leading true/false/yes/no word, else the first
    true/false word before ``Reason:`` decides, and the reason is the text after ``Reason:`` up to any echoed next example. No
    verdict word → ``UNPARSABLE`` (treated as not relevant by the tree).
    """
    reply = _NEXT_EXAMPLE.split(reply, maxsplit=1)[0]
    reason_match = _REASON.search(reply)
    head = reply[: reason_match.start()] if reason_match else reply
    reason = _clean(reply[reason_match.end() :]) if reason_match else None
    head = re.sub(r"^\s*(?:\*\*)?Relevant(?:\*\*)?\s*:", "", head, flags=re.IGNORECASE)
    # A leading yes/no/true/false decides; past the first word only true/false count, since "no" occurs in prose.
    verdict = _VERDICT.match(head.strip(" \t\n*")) or _TRUE_FALSE.search(head)
    if verdict is None:
        return RelevanceLabel.UNPARSABLE, reason
    positive = verdict.group(1).lower() in ("true", "yes")
    return (RelevanceLabel.RELEVANT if positive else RelevanceLabel.IRRELEVANT), reason


def first_step(text: str) -> str:
    """The first non-empty line of an OST sample, stripped (the server stops at a newline, but chat models
    sometimes open with one, or with a ``Next step:`` echo)."""
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:Next step\s*:)\s*", "", line, flags=re.IGNORECASE).strip()
        if line:
            return line
    return ""


# --- rStar A3 / A5 replies ------------------------------------------------------------------------------------

MAX_SUBQUESTION_CHARS = 400
# "Sub-question:", "**Sub-question 2:**", "Next sub-question:", "Question 3.1:" — the label is dropped.
_SUBQUESTION_LABEL = re.compile(
    r"^(?:[*_#]+\s*)?(?:next\s+)?(?:sub[- ]?)?question(?:\s*\d+(?:\.\d+)*)?\s*(?:[*_]+\s*)?:\s*(?:[*_]+\s*)?",
    re.IGNORECASE,
)
# Lines that show the model answering or echoing the prompt instead of asking.
_NOT_A_SUBQUESTION = re.compile(
    r"^(?:[*_#]+\s*)?(?:(?:sub[- ]?)?answer(?:\s*\d+)?|problem|answered sub-questions)\s*(?:[*_]+\s*)?:",
    re.IGNORECASE,
)
_SUBANSWER_LABEL = re.compile(r"^\s*(?:[*_#]+\s*)?(?:sub[- ]?)?answer(?:\s*\d+)?\s*(?:[*_]+\s*)?:\s*", re.IGNORECASE)
_ECHOED_TURN = re.compile(r"\n\s*(?:\*\*)?(?:Problem|Sub-question|Answered sub-questions)(?:\*\*)?\s*:", re.IGNORECASE)
_ANSWER_IS = re.compile(r"answer is\s*:?\s*(.+)$", re.IGNORECASE | re.MULTILINE)
_REPHRASED_QUESTION_LINE = re.compile(r"^(?:\*\*)?Question(?:\*\*)?\s*:\s*\S", re.IGNORECASE)
_ECHOED_PROBLEM = re.compile(r"\n\s*(?:\*\*)?Problem(?:\*\*)?\s*:", re.IGNORECASE)


def parse_subquestion(reply: str) -> str | None:
    """The sub-question of an A3 proposal: its first non-empty line without a ``Sub-question:`` label.

    ``None`` when the reply answers instead of asking, echoes the prompt, is empty, has no letters, or is
    longer than :data:`MAX_SUBQUESTION_CHARS` (a run-on generation, not one sub-question). A label alone on
    its line is skipped, so ``Sub-question:\\nWhat is x?`` still gives ``What is x?``.
    """
    for line in reply.splitlines():
        line = line.strip()
        if not line:
            continue
        if _NOT_A_SUBQUESTION.match(line):
            return None
        text = _SUBQUESTION_LABEL.sub("", line, count=1).strip().strip("*_").strip()
        if not text:
            continue
        if len(text) > MAX_SUBQUESTION_CHARS or not re.search(r"[A-Za-z]", text):
            return None
        return text
    return None


def parse_subanswer(reply: str) -> str:
    """An A3 answer without an ``Answer:`` label, a repeated sub-question line or an echoed next turn;
    ``""`` when nothing is left."""
    lines = reply.strip().splitlines()
    if len(lines) > 1 and _SUBQUESTION_LABEL.match(lines[0].strip()):
        lines = lines[1:]  # the model repeated the sub-question before answering it
    text = _SUBANSWER_LABEL.sub("", "\n".join(lines).strip(), count=1)
    return _ECHOED_TURN.split(text, maxsplit=1)[0].strip()


def subanswer_key(text: str) -> str | None:
    """The normalised final value of a sub-answer, for majority voting: last ``\\boxed{}``, else the text
    after the last "answer is" on its line; ``None`` when neither exists."""
    boxed = extract_boxed(text)
    if boxed is None:
        matches = _ANSWER_IS.findall(text)
        boxed = matches[-1].strip().rstrip(".").strip() if matches else None
    if boxed is None:
        return None
    return normalize_answer(boxed) or None


def parse_rephrased(reply: str) -> str | None:
    """An A5 rephrasing: its non-empty lines up to and including the first ``Question:`` line.

    ``None`` unless at least one condition line comes before that line: a rephrasing that lost the
    question or the givens would replace the problem in every later prompt. Anything after the question
    (a started solution, an echoed example) is dropped.
    """
    reply = _ECHOED_PROBLEM.split("\n" + reply.strip(), maxsplit=1)[0]
    kept: list[str] = []
    for line in reply.splitlines():
        line = line.strip()
        if not line:
            continue
        kept.append(line)
        if _REPHRASED_QUESTION_LINE.match(line):
            return "\n".join(kept) if len(kept) > 1 else None
    return None
