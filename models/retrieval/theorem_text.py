"""The statement of a theorem document, as prompts and records should show it.

ProofWiki entries (BRIGHT's ``theoremqa_theorems`` corpus) carry a ``\\section{title}``, a ``Tags:`` line, one
or more ``\\begin{theorem} … \\end{theorem}`` blocks and then proofs, sources and categories. A summary or a
self-reflection prompt that sees the proof spends its tokens on it and may judge the proof instead of the
statement (spec ``specs/mcts.md`` §3.1, §6.4.3, §13.1(7): the statement only). Plain corpora (CHAMP concepts,
a hand-written fixture) have none of these markers and pass through unchanged.

The result keeps ProofWiki's own form, ``\\section{…} \\begin{theorem} … \\end{theorem}``, with newlines made
spaces (as the reference's cleaned text), so the summarization examples can show the same markup.

Usage::

    theorem_statement(document)            # "\\section{Sum of Angles} \\begin{theorem} The sum ... \\end{theorem}"
    statement_for_prompt(document, max_chars=3000)   # one line, cut at a word boundary
"""

from __future__ import annotations

import re

# Environments that state something; everything else (proof, sources, corollary proofs) is dropped.
_STATEMENT_ENVS = ("theorem", "lemma", "corollary", "proposition", "definition", "axiom")
_STATEMENT_BLOCK = re.compile(
    r"\\begin\{(?P<env>" + "|".join(_STATEMENT_ENVS) + r")\}(?P<body>.*?)(?:\\end\{(?P=env)\}|(?=\\begin\{proof\})|\Z)",
    re.DOTALL,
)
_SECTION = re.compile(r"\\section\{(?P<title>(?:[^{}]|\{[^{}]*\})*)\}")
# Where a proof or the back matter starts in entries without statement environments.
_BACK_MATTER = re.compile(
    r"\\begin\{proof\}|^\s*={2,}\s*(?:Proof|Sources|Also see|Historical Note)\b[^=\n]*={2,}\s*$|^\s*\{\{qed\}\}",
    re.IGNORECASE | re.MULTILINE,
)
_DROPPED_LINES = re.compile(r"^\s*(?:Tags\s*:.*|\[\[Category:[^\]]*\]\]\s*|Category\s*:.*)$", re.IGNORECASE | re.MULTILINE)
_MARKERS = re.compile(r"\\begin\{(?:proof|" + "|".join(_STATEMENT_ENVS) + r")\}|\\section\{|^\s*Tags\s*:", re.MULTILINE)


def _flatten(text: str) -> str:
    return " ".join(text.split())


def is_structured(text: str) -> bool:
    """Whether ``text`` has ProofWiki markers (a section, a statement or proof environment, a ``Tags:`` line)."""
    return _MARKERS.search(text) is not None


def theorem_statement(text: str) -> str:
    """The statement part of a theorem document, whitespace collapsed; plain text is returned stripped.

    * With ``\\begin{theorem}``-style blocks: the ``\\section{}`` title, then every statement block in order
      (a document with two theorems keeps both); proofs, ``Tags:``, sources and categories are dropped.
    * Without them but with a proof or back matter: the text before it, ``Tags:`` and category lines removed.
    * Without any marker: ``text.strip()`` (newlines kept), so plain corpora are unchanged.

    Never empty for a non-blank document: if cutting leaves nothing, the flattened whole text is returned.
    """
    if not is_structured(text):
        return text.strip()
    blocks = [match for match in _STATEMENT_BLOCK.finditer(text) if match.group("body").strip()]
    if blocks:
        section = _SECTION.search(text)
        parts = [section.group(0)] if section and section.start() < blocks[0].start() else []
        parts += [f"\\begin{{{b.group('env')}}} {_flatten(b.group('body'))} \\end{{{b.group('env')}}}" for b in blocks]
        return " ".join(parts)
    cut = _BACK_MATTER.search(text)
    head = text[: cut.start()] if cut else text
    head = _flatten(_DROPPED_LINES.sub("", head))
    return head or _flatten(text)


def theorem_title(text: str) -> str | None:
    """The ``\\section{}`` title of a ProofWiki entry, ``None`` without one."""
    match = _SECTION.search(text)
    return match.group("title").strip() or None if match else None


def statement_for_prompt(text: str, max_chars: int | None = None) -> str:
    """:func:`theorem_statement` on one line, bounded: what a prompt shows of a theorem."""
    return bounded(_flatten(theorem_statement(text)) or _flatten(text), max_chars)


def bounded(text: str, max_chars: int | None) -> str:
    """``text`` cut at a word boundary after ``max_chars`` characters, marked with `` ...``."""
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + " ..."
