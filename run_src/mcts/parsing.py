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

_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
# What instruction-tuned models put before a label: markdown headings, quotes, bullets, list numbers, bold.
_LEAD = r"(?:[ \t]*(?:[#>]+|[-*+•]|\d{1,2}[.)])[ \t]+)*[ \t]*"
_BOLD = r"(?:\*\*|__|\*|_)?"
# "Theorem 1:", "### Theorem 2 -", "**Theorem 3:**", "1. Theorem:", "Theorem Name:", "Theorem 1 (Vieta's formulas):"
_HEADER = re.compile(
    r"^" + _LEAD + _BOLD + r"[ \t]*Theorem(?:[ \t]*#?\d+)?(?:[ \t]+Name)?" + _BOLD
    + r"(?:[ \t]*\((?P<paren>[^()\n]{2,120})\))?[ \t]*(?:[:：]|[ \t]+[-–—][ \t]|\.(?=[ \t]))" + _BOLD,
    re.IGNORECASE | re.MULTILINE,
)
# A bold header may also follow other text on its line ("Sure. **Theorem 1:** ...").
_INLINE_HEADER = re.compile(r"(?<=\S)[ \t]+\*\*Theorem(?:[ \t]*\d+)?(?:[ \t]+Name)?[ \t]*:?\*\*[ \t]*:?", re.IGNORECASE)
_FIELD_LABELS = {
    "statement": r"(?:Theorem[ \t]+|Formal[ \t]+)?Statement",
    "why": r"Why[ \t]+(?:the[ \t]+|these[ \t]+|its[ \t]+)?(?:Preconditions?|Conditions)[^:\n*]{0,60}",
    "preconditions": r"(?:Preconditions?|Precondition\(s\)|Conditions|Hypotheses|Assumptions)",
    "subject": r"(?:Subject(?:[ \t]+Area)?|Field|Topic|Area)",
}
_FIELD = "|".join(f"(?P<{k}>{v})" for k, v in _FIELD_LABELS.items())
_FIELD_START = re.compile(r"^" + _LEAD + _BOLD + r"(?:" + _FIELD + r")" + _BOLD + r"[ \t]*[:：]" + _BOLD, re.IGNORECASE | re.MULTILINE)
# Bold labels may sit anywhere on a line: "... **Theorem Statement:** ...".
_INLINE_FIELD = re.compile(r"\*\*(?:" + _FIELD + r")[ \t]*[:：]?\*\*[ \t]*[:：]?", re.IGNORECASE)
# A headerless list item "1. **Name**: statement" / "- Name - statement" (used only when no header exists).
_LIST_ITEM = re.compile(
    r"^[ \t]*(?:\d{1,2}[.)]|[-*+•])[ \t]+(?:\*\*(?P<bold>[^*\n]{3,100})\*\*|(?P<plain>[^:\n]{3,80}?))[ \t]*(?:[:：]|[ \t][-–—])[ \t]*(?P<rest>\S.*)$",
    re.MULTILINE,
)
_NAME_SPLIT = re.compile(r"[ \t]*(?:[:：]|[ \t][-–—][ \t]|\.[ \t]+(?=[A-Z$\\]))[ \t]*")
_NOT_A_NAME = re.compile(r"^(?:here|sure|the following|below|okay|ok)\b", re.IGNORECASE)


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    text = " ".join(text.replace("**", " ").split()).strip(" *_#-–—:").strip()
    return text or None


def _fields(body: str) -> tuple[str, dict[str, str | None]]:
    """``(text before the first field label, {field: value})`` of one block; the first value of a field wins."""
    starts = sorted(
        [*_FIELD_START.finditer(body), *_INLINE_FIELD.finditer(body)], key=lambda m: (m.start(), -m.end())
    )
    kept: list[re.Match[str]] = []
    for match in starts:  # a bold label at a line start matches both patterns: keep one
        if not kept or match.start() >= kept[-1].end():
            kept.append(match)
    fields: dict[str, str | None] = {}
    for index, match in enumerate(kept):
        end = kept[index + 1].start() if index + 1 < len(kept) else len(body)
        key = next(k for k in _FIELD_LABELS if match.group(k) is not None)
        fields.setdefault(key, _clean(body[match.end() : end]))
    return body[: kept[0].start()] if kept else body, fields


def _candidate(name: str | None, statement: str | None, fields: dict[str, str | None], full: str) -> QueryCandidate | None:
    if not name or not statement or _NOT_A_NAME.match(name):
        return None
    return QueryCandidate(
        query=f"Theorem Name: {name}\nTheorem Statement: {statement}",
        preconditions_theorem=fields.get("preconditions"),
        preconditions_question=fields.get("why"),
        subject=fields.get("subject"),
        full_output=full,
    )


def _parse_block(header: re.Match[str], body: str, full_output: str) -> QueryCandidate | None:
    """One header and the text up to the next one → a candidate; ``None`` unless a name and a statement can
    be told apart."""
    head, fields = _fields(body)
    statement = fields.get("statement")
    lines = [line for line in head.strip().splitlines() if _clean(line)]
    name = header.group("paren")
    if name is None and lines:
        name, lines = lines[0], lines[1:]
    if statement is None and lines:  # the statement on the lines after the name, unlabelled
        statement = " ".join(lines)
    elif statement is None and name is not None and header.group("paren") is None:
        parts = _NAME_SPLIT.split(name.strip(), maxsplit=1)  # one line: "Name: statement" / "Name - statement"
        if len(parts) == 2:
            name, statement = parts
    return _candidate(_clean(name), _clean(statement), fields, full_output)


def _list_items(text: str, full_output: str) -> list[QueryCandidate]:
    found = []
    for match in _LIST_ITEM.finditer(text):
        rest = match.group("rest")
        head, fields = _fields(rest)
        statement = fields.get("statement") or head
        candidate = _candidate(_clean(match.group("bold") or match.group("plain")), _clean(statement), fields, full_output)
        if candidate is not None:
            found.append(candidate)
    return found


def parse_candidate_theorems(text: str) -> list[QueryCandidate]:
    """Every hypothesised theorem of a QG generation, in order, without exact repeats.

    [FIX] S7: each ``Theorem k`` block is parsed on its own into one record (fields cannot shift to another
    theorem). Beyond the prompt's own format it reads what instruction-tuned models write instead: markdown
    headings, bullets and list numbers before labels, bold labels (also mid-line), ``Theorem:``/``Theorem
    Name:`` headers, ``Statement:`` for ``Theorem Statement:``, an unlabelled statement on the lines after
    the name, one-line ``Theorem 1: Name - statement`` answers, and, when no header exists at all, a list of
    ``Name: statement`` items. A block whose name and statement cannot be told apart is skipped.
    """
    text = _THINK.sub("", text.replace("\r\n", "\n"))
    text = _INLINE_HEADER.sub(lambda m: "\n" + m.group(0).strip(), text)
    headers = list(_HEADER.finditer(text))
    candidates: list[QueryCandidate] = []
    if headers:
        for index, match in enumerate(headers):
            end = headers[index + 1].start() if index + 1 < len(headers) else len(text)
            candidate = _parse_block(match, text[match.end() : end], text)
            if candidate is not None:
                candidates.append(candidate)
    else:
        candidates = _list_items(text, text)
    unique: dict[str, QueryCandidate] = {}
    for candidate in candidates:
        unique.setdefault(" ".join(candidate.query.casefold().split()), candidate)
    return list(unique.values())


_REASON = re.compile(r"(?:\*\*|__)?\b(?:Reason(?:ing)?|Explanation|Justification)(?:\*\*|__)?\s*[:：]", re.IGNORECASE)
_NEXT_EXAMPLE = re.compile(r"\n\s*(?:\*\*)?Question(?:\*\*)?\s*:", re.IGNORECASE)
_VERDICT_LABEL = re.compile(
    r"^[\s>*_#\-•]*(?:Relevant|Relevance|Is\s+(?:it|the\s+theorem)\s+relevant\??|Verdict|Answer|Label|Decision)"
    r"(?:\*\*|__)?\s*[:：]",
    re.IGNORECASE,
)
_OPTIONS_ECHO = re.compile(r"\b(?:true\s*(?:or|/)\s*false|false\s*(?:or|/)\s*true|yes\s*(?:or|/)\s*no|no\s*(?:or|/)\s*yes)\b", re.IGNORECASE)
_QUESTION_SENTENCE = re.compile(r"[^.!?\n]*\?")
_WORDS = re.compile(r"[a-z]+(?:'[a-z]+)?")
_POSITIVE = frozenset({"true", "relevant", "useful", "helpful", "applicable", "pertinent", "correct"})
_NEGATIVE = frozenset({"false", "irrelevant", "unrelated", "inapplicable", "unhelpful", "useless", "incorrect"})
_NEGATORS = frozenset(
    {"not", "no", "never", "isn't", "isnt", "aren't", "wasn't", "doesn't", "don't", "cannot", "can't", "hardly", "neither", "nor", "nothing"}
)


def _verdict_of(head: str) -> bool | None:
    """``True``/``False`` from the verdict part of a reply; ``None`` when it holds no decisive word."""
    head = _OPTIONS_ECHO.sub(" ", head)
    head = _QUESTION_SENTENCE.sub(" ", head)  # "Is it relevant? No." - a rhetorical question is not the verdict
    words = _WORDS.findall(head.lower().replace("’", "'"))
    if words and words[0] in ("yes", "no"):
        return words[0] == "yes"
    for index, word in enumerate(words):
        if word in _POSITIVE or word in _NEGATIVE:
            negated = any(w in _NEGATORS for w in words[max(0, index - 3) : index])
            return (word in _POSITIVE) != negated
    return None


def parse_self_reflection(reply: str) -> tuple[RelevanceLabel, str | None]:
    """``(label, reason)`` from a self-reflection reply.

    [FIX] §6.4.4: the verdict is read from the text before ``Reason:`` (an optional ``Relevant:`` label
    skipped): a leading yes/no, else the first of true/relevant/useful/… (positive) or false/irrelevant/
    unrelated/… (negative), flipped by a negation within three words before it ("Not relevant", "It is not
    true that this helps"). Echoed options ("True or False") and questions ("Is it relevant?") do not count.
    The reason is the text after ``Reason:`` up to any echoed next example. No verdict → ``UNPARSABLE``.
    """
    reply = _THINK.sub("", reply)
    reply = _NEXT_EXAMPLE.split(reply, maxsplit=1)[0]
    reason_match = _REASON.search(reply)
    head = reply[: reason_match.start()] if reason_match else reply
    reason = _clean(reply[reason_match.end() :]) if reason_match else None
    head = _VERDICT_LABEL.sub("", head.strip(), count=1)
    verdict = _verdict_of(head)
    if verdict is None:
        return RelevanceLabel.UNPARSABLE, reason
    return (RelevanceLabel.RELEVANT if verdict else RelevanceLabel.IRRELEVANT), reason


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
