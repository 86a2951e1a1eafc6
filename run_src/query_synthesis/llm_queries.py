"""Prompts and reply parsing for the LLM-written queries: q_llmq (spec §4.3) and q_lexical (§4.4).

Prompts are ``prompts/q_llmq.txt`` (placeholders ``question``, ``partial_solution``, ``theorem``) and
``prompts/q_lexical.txt`` (``theorem``), loaded with :func:`models.llm.prompt_templates.load_prompt`; the file
hash is the prompt version recorded on every generated record.

A reply is parsed by :func:`parse_query_reply`, which tolerates format drift: the last ``Query:`` line
(any case, markdown bold, bullets, numbering, "Final query:", a heading ``### Query`` with the text on the next
lines), the text running on until a blank line or another ``Label:`` line; with no marker, a reply made of
exactly one unlabelled line is taken as the query. The result is then checked ([REC] §4.3): empty, too short
or too long, an echo of a few-shot example, of the question or of the theorem, and (q_llmq only) a query that
names the theorem. Each failure has its own status, so the drop report can say why.

Usage::

    prompts = QueryPrompts.load()
    messages = prompts.llmq.render(**llmq_fields(question, context, theorem_text, max_theorem_chars=3000))
    parsed = parse_query_reply(reply, QueryChecks(forbidden=prompts.example_queries("llmq")))
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from models.llm.prompt_templates import PROMPTS_DIR, PromptTemplate, load_prompt
from models.retrieval.theorem_text import statement_for_prompt
from run_src.query_synthesis.records import normalize_query

LLMQ_PLACEHOLDERS = frozenset({"question", "partial_solution", "theorem"})
LEXICAL_PLACEHOLDERS = frozenset({"theorem"})
NO_STEPS = "(no steps yet)"

_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_MARKER = re.compile(
    r"^[\s>*_#`\-•]*(?:\d+[.)]\s*)?(?:the\s+)?(?:final\s+|retrieval\s+|search\s+|generated\s+)?query"
    r"\s*(?:\d+)?\s*(?:\*\*|__)?\s*(?P<sep>[:：]|$)(?:\s*(?:\*\*|__))?(?P<rest>.*)$",
    re.IGNORECASE,
)
_LABEL = re.compile(r"^[\s>*_#`\-•]*[A-Za-z][A-Za-z ()']{0,40}(?:\*\*|__)?\s*[:：]")
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class ParsedQuery:
    """``status`` is ``ok`` or a :data:`run_src.query_synthesis.records.STATUSES` reason; ``query`` may be
    non-empty for a rejected reply (kept for the drop report)."""

    status: str
    query: str


@dataclass(frozen=True)
class QueryChecks:
    """What a parsed query must satisfy."""

    min_words: int = 3
    max_words: int = 96
    forbidden: frozenset[str] = frozenset()  # normalised texts a query must not equal (few-shot queries)
    copy_sources: tuple[str, ...] = ()  # texts a query must not copy long stretches of (question, theorem)
    copy_window_words: int = 10
    theorem_name: str | None = None  # reject a query that contains this name (q_llmq)


def _clean(text: str) -> str:
    text = re.sub(r"(\*\*|__|`)", "", text)
    text = " ".join(text.split())
    text = re.sub(r"^[-•>\s]+", "", text)
    return text.strip().strip("\"'“”‘’").strip()


def _continuation(lines: list[str], start: int) -> list[str]:
    """Lines after a marker that still belong to the query: up to a blank line or the next label."""
    taken: list[str] = []
    for line in lines[start:]:
        if not line.strip():
            if taken:
                break
            continue
        if _LABEL.match(line):
            break
        taken.append(line)
    return taken


def extract_query(reply: str) -> str | None:
    """The query text of ``reply`` (cleaned), ``""`` for an empty marker, ``None`` when none can be found."""
    text = _THINK.sub(" ", reply.replace("\r\n", "\n"))
    lines = text.split("\n")
    marker_rows = [(i, m) for i, line in enumerate(lines) if (m := _MARKER.match(line))]
    if marker_rows:
        row, match = marker_rows[-1]
        rest = _clean(match.group("rest"))
        parts = [rest] if rest else []
        parts += [_clean(line) for line in _continuation(lines, row + 1)]
        return _clean(" ".join(parts))
    candidates = [line for line in lines if line.strip() and not _LABEL.match(line)]
    if len(candidates) == 1:
        return _clean(candidates[0])
    return None


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def _copies(query_words: list[str], source: str, window: int) -> bool:
    source_words = _words(source)
    if len(source_words) < window or len(query_words) < window:
        return False
    grams = {tuple(source_words[i : i + window]) for i in range(len(source_words) - window + 1)}
    return any(tuple(query_words[i : i + window]) in grams for i in range(len(query_words) - window + 1))


def _contains_phrase(words: list[str], phrase: list[str]) -> bool:
    n = len(phrase)
    return n > 0 and any(words[i : i + n] == phrase for i in range(len(words) - n + 1))


def parse_query_reply(reply: str, checks: QueryChecks) -> ParsedQuery:
    """Extract and check the query of one LLM reply."""
    query = extract_query(reply)
    if not _THINK.sub(" ", reply).strip():
        return ParsedQuery("empty_query", "")
    if query is None:
        return ParsedQuery("unparsable_llm_output", "")
    if not query:
        return ParsedQuery("empty_query", "")
    n_words = len(query.split())
    if n_words < checks.min_words:
        return ParsedQuery("query_too_short", query)
    if n_words > checks.max_words:
        return ParsedQuery("query_too_long", query)
    words = _words(query)
    normalized = normalize_query(query)
    if normalized in checks.forbidden:
        return ParsedQuery("prompt_echo", query)
    for source in checks.copy_sources:
        source_norm = normalize_query(source)
        if (len(source_norm) >= 20 and source_norm in normalized) or _copies(words, source, checks.copy_window_words):
            return ParsedQuery("prompt_echo", query)
    if checks.theorem_name and _contains_phrase(words, _words(checks.theorem_name)):
        return ParsedQuery("theorem_name_leak", query)
    return ParsedQuery("ok", query)


_SECTION = re.compile(r"\\section\{([^{}]{3,120})\}")
_NAMED_LINE = re.compile(r"^\s*(?:theorem|lemma|definition)\s+name\s*:\s*(.+)$", re.IGNORECASE | re.MULTILINE)
# A "Let n be ...: ..." opening is a condition, not a name.
_CONDITION_WORDS = frozenset({"let", "if", "for", "suppose", "given", "when", "assume", "consider", "then", "where"})
_COLON_PREFIX = re.compile(r"^\s*([A-Za-z][\w'’\- ]{2,60}?)\s*[:：]\s+\S")


def theorem_name(text: str) -> str | None:
    """The theorem's name if the document states one: a ProofWiki ``\\section{...}``, a ``Theorem Name:`` line,
    or a short leading ``name: statement`` prefix (CHAMP concepts). Names under two words are ignored:
    a single common word would reject ordinary queries."""
    for pattern in (_SECTION, _NAMED_LINE):
        match = pattern.search(text)
        if match:
            name = match.group(1).strip()
            return name if len(_words(name)) >= 2 else None
    match = _COLON_PREFIX.match(text)
    if match and 2 <= len(_words(match.group(1))) <= 6 and _words(match.group(1))[0] not in _CONDITION_WORDS:
        return match.group(1).strip()
    return None


def llmq_fields(question: str, context: list[str], theorem_text: str, max_theorem_chars: int | None) -> dict[str, str]:
    """The q_llmq placeholders: context joined as sentences, the theorem cleaned and bounded."""
    return {
        "question": " ".join(question.split()),
        "partial_solution": " ".join(" ".join(step.split()) for step in context) or NO_STEPS,
        "theorem": statement_for_prompt(theorem_text, max_theorem_chars),
    }


@dataclass(frozen=True)
class QueryPrompts:
    """The two query-writing prompts and the example queries a reply must not echo."""

    llmq: PromptTemplate
    lexical: PromptTemplate
    _examples: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, llmq_path: str | Path | None = None, lexical_path: str | Path | None = None) -> QueryPrompts:
        llmq = load_prompt(llmq_path or PROMPTS_DIR / "q_llmq.txt", LLMQ_PLACEHOLDERS)
        lexical = load_prompt(lexical_path or PROMPTS_DIR / "q_lexical.txt", LEXICAL_PLACEHOLDERS)
        examples = {
            kind: frozenset(
                normalize_query(query) for _, answer in template.examples if (query := extract_query(answer))
            )
            for kind, template in (("llmq", llmq), ("lexical", lexical))
        }
        return cls(llmq, lexical, examples)

    def example_queries(self, kind: str) -> frozenset[str]:
        return self._examples[kind]

    def identities(self) -> dict[str, dict[str, str]]:
        return {"llmq": self.llmq.identity(), "lexical": self.lexical.identity()}
