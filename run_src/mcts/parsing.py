"""Reading the generator's free text back into structures: candidate theorems, self-reflection verdicts, steps.

All parsers are total: malformed text gives fewer candidates or an ``UNPARSABLE`` label, never an
exception, because a weak model's formatting drift must not kill a search. Spec ``specs/mcts.md`` §6.3,
§6.4.4 with the [FIX]es of S3 and S7 (per-block parsing, case-insensitive labels, robust verdicts).
"""

from __future__ import annotations

import re

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
