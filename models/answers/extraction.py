"""Pull the final answer out of a solution, normalise it to a canonical MATH-style string and read
its shape (number, choice letter, tuple/interval/set/matrix, free variables).

This module is string work only (no sympy, nothing that can hang): :func:`extract_boxed` finds the
last ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed 5`` of a text, :func:`gold_answer_from_solution`
applies it to a MATH / NuminaMath solution, :func:`normalize_answer` is the Hendrycks-MATH
``_strip_string`` of spec mcts.md §10.3 with the §12 fixes, and :func:`parse_number` /
:func:`parse_structure` / :func:`free_letters` describe a normalised answer. Deciding whether two
answers are equal lives in :mod:`models.answers.checking`.

Usage::

    gold = gold_answer_from_solution(record["solution"])     # "\\dfrac{1}{2}"
    normalize_answer(gold)                                   # "\\frac{1}{2}"

Deviations from the reference normaliser, each marked ``DEVIATION`` below:

* trailing-zero stripping only removes a ``.0…0`` fractional part (§12 S5: the reference made
  ``10`` equal ``1``);
* ``\\\\`` becomes ``\\`` only before a command name, so matrix row separators survive;
* units: only a *trailing* ``\\text{...}`` unit after a number-like prefix is dropped (the reference
  cut at the first ``\\text{ `` anywhere and fell back to raw equality when there were two);
* ``\\left``/``\\right`` are removed only as whole commands (``\\rightarrow`` survives);
* a space that separates a command from a following letter is kept (``\\cos x``, ``\\pi r``), so the
  normalised string still parses as LaTeX;
* extra canonicalisation: math delimiters, spacing commands, thousands separators (``1,000``,
  ``1{,}000``, ``1\\,000``), ``\\le``/``\\leq`` spellings and an ``x \\in`` prefix.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from fractions import Fraction

logger = logging.getLogger(__name__)

_BOX_COMMANDS = ("\\boxed", "\\fbox")
# Commands whose argument is plain text; a trailing one after a number is a unit (§10.3 step 8).
TEXT_COMMANDS = ("\\text", "\\textbf", "\\textnormal", "\\textrm", "\\mbox", "\\mathrm")


def find_matching_brace(text: str, open_index: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_index``, or ``None`` if it never closes.

    Escaped characters (``\\{``, ``\\}``, ``\\\\``) are skipped, so ``\\boxed{\\{1,2\\}}`` closes at the
    right place even though LaTeX set braces are unbalanced on their own.
    """
    depth = 0
    i = open_index
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _last_box_start(text: str) -> tuple[int, str] | None:
    """Position and name of the last ``\\boxed``/``\\fbox`` command (not ``\\boxedfoo``)."""
    best: tuple[int, str] | None = None
    for command in _BOX_COMMANDS:
        start = len(text)
        while True:
            start = text.rfind(command, 0, start)
            if start < 0:
                break
            after = text[start + len(command) : start + len(command) + 1]
            if not after.isalpha():
                if best is None or start > best[0]:
                    best = (start, command)
                break
    return best


def extract_boxed(text: str | None) -> str | None:
    """Content of the last ``\\boxed{...}`` or ``\\fbox{...}`` of ``text`` (braces balanced), else ``None``.

    Also accepts the brace-less ``\\boxed 5`` form (one whitespace-delimited token) that the
    reference rejected (§12 S6). An unclosed brace or an empty box gives ``None``.
    """
    if not text:
        return None
    found = _last_box_start(text)
    if found is None:
        return None
    start, command = found
    i = start + len(command)
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        end = find_matching_brace(text, i)
        if end is None:
            return None
        content = text[i + 1 : end].strip()
        return content or None
    match = re.match(r"[ \t]*([^\s${}]+)", text[start + len(command) :])
    if match is None:
        return None
    content = match.group(1).rstrip(".,;")
    return content or None


def has_boxed(text: str | None) -> bool:
    """The format gate of §10.5: does ``text`` contain a parsable final box?

    DEVIATION (§12 S6): the reference used the single-line regex ``boxed\\{.*?\\}``; this accepts
    exactly what :func:`extract_boxed` can read, including multi-line boxes and ``\\fbox``.
    """
    return extract_boxed(text) is not None


def gold_answer_from_solution(solution_text: str) -> str:
    """The gold answer of a MATH / NuminaMath solution: the content of its last box.

    Raises ``ValueError`` when the solution has no box, so an unboxed BRIGHT solution fails loudly
    instead of becoming a ``None`` gold (§12 P5); BRIGHT items carry a ``gold_answer`` field instead.
    """
    answer = extract_boxed(solution_text)
    if answer is None:
        preview = solution_text[-120:].replace("\n", " ")
        raise ValueError(f"solution has no \\boxed{{...}} answer to use as gold (ends with: ...{preview!r})")
    return answer


def strip_math_delimiters(text: str) -> str:
    """Remove one pair of surrounding ``$...$``, ``$$...$$``, ``\\(...\\)`` or ``\\[...\\]``, and an outer box."""
    s = text.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            s = s[len(left) : len(s) - len(right)].strip()
            break
    for command in _BOX_COMMANDS:
        if s.startswith(command + "{") and find_matching_brace(s, len(command)) == len(s) - 1:
            s = s[len(command) + 1 : -1].strip()
            break
    return s


def _read_group(s: str, i: int) -> tuple[str, int] | None:
    """One macro argument at ``s[i:]``: a braced group (kept without braces), a ``\\command`` or one char."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        return None
    if s[i] == "{":
        end = find_matching_brace(s, i)
        if end is None:
            return None
        return s[i + 1 : end], end + 1
    if s[i] == "\\":
        match = re.match(r"\\[a-zA-Z]+", s[i:])
        if match is None:
            return None
        return match.group(0), i + len(match.group(0))
    if s[i] in "}^_":
        return None
    return s[i], i + 1


def fix_fracs(s: str) -> str:
    """``\\frac12`` → ``\\frac{1}{2}``, ``\\frac1{x}`` → ``\\frac{1}{x}`` (§10.3 step 14); malformed input is kept."""
    out: list[str] = []
    i = 0
    while True:
        j = s.find("\\frac", i)
        if j < 0 or s[j + 5 : j + 6].isalpha():
            if j < 0:
                out.append(s[i:])
                return "".join(out)
            out.append(s[i : j + 5])
            i = j + 5
            continue
        out.append(s[i:j])
        first = _read_group(s, j + 5)
        second = _read_group(s, first[1]) if first else None
        if first is None or second is None:
            out.append(s[j:])
            return "".join(out)
        out.append(f"\\frac{{{first[0]}}}{{{second[0]}}}")
        i = second[1]


def _fix_sqrt(s: str) -> str:
    """``\\sqrt2`` / ``\\sqrt 2`` → ``\\sqrt{2}`` (§10.3 step 12); ``\\sqrt[3]{x}`` and ``\\sqrt{x}`` are kept."""
    return re.sub(r"\\sqrt(?![a-zA-Z])\s*([^\s{\[\\])", r"\\sqrt{\1}", s)


def _fix_a_slash_b(s: str) -> str:
    """``3/4`` with integer parts and nothing else → ``\\frac{3}{4}`` (§10.3 step 16)."""
    match = re.fullmatch(r"(-?\d+)/(\d+)", s)
    return f"\\frac{{{match.group(1)}}}{{{match.group(2)}}}" if match else s


_UNIT_TEXT = r"\\(?:text|textnormal|textrm|mbox|mathrm)\{\s*[A-Za-z][A-Za-z .]*\}(?:\^\{?\d\}?)?"


def _remove_right_units(s: str) -> str:
    """Drop trailing unit text such as ``5\\text{ cm}^2`` → ``5`` (§10.3 step 8).

    DEVIATION: only a trailing unit is removed, and only after a prefix containing a digit or a
    closing bracket, so ``\\text{Devon}`` and ``1\\text{ or }2`` are kept.
    """
    while True:
        match = re.search(rf"(?:\s|\\,|\\;|\\ )*(?:{_UNIT_TEXT})\s*$", s)
        if match is None:
            return s
        prefix = s[: match.start()].rstrip()
        if not prefix or not re.search(r"[\d)\]}]|\\pi|\\infty", prefix):
            return s
        s = prefix


_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_RELATION_SPELLINGS = (("\\leq", "\\le"), ("\\geq", "\\ge"), ("\\neq", "\\ne"), ("\\leqslant", "\\le"),
                       ("\\geqslant", "\\ge"))


def _drop_lhs(s: str) -> str:
    """``k = 5`` → ``5`` when the left side is a short name (§10.3 step 11), ``x \\in [0,1]`` → ``[0,1]``."""
    if s.count("=") == 1:
        lhs, rhs = s.split("=")
        lhs = lhs.strip()
        if len(lhs) <= 2 or re.fullmatch(r"\\[a-zA-Z]+|[a-zA-Z](?:_\{?\w+\}?)?", lhs):
            return rhs
    match = re.match(r"\s*[a-zA-Z]\s*\\in(?![a-zA-Z])\s*", s)
    return s[match.end() :] if match else s


def _remove_spaces(s: str) -> str:
    """Delete spaces (§10.3 step 13) but keep one after a command name followed by a letter."""
    s = re.sub(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])", lambda m: m.group(1) + "\x00", s)
    return s.replace(" ", "").replace("\x00", " ")


def normalize_answer(answer: str | None) -> str:
    """Canonical MATH-style form of one answer (Hendrycks ``_strip_string`` with the §12 fixes).

    The steps follow spec §10.3 in order; see the module docstring for the deviations. ``None``
    gives ``""``. Equal outputs mean equal answers; different outputs may still be equivalent
    (``\\frac{1}{2}`` and ``0.50``), which :mod:`models.answers.checking` decides.
    """
    if answer is None:
        return ""
    s = strip_math_delimiters(str(answer))
    if s.endswith(".") and not s.endswith(".."):  # sentence full stop: "5." → "5"
        s = s[:-1].rstrip()
    s = s.replace("\\displaystyle", "").replace("{,}", ",").replace("~", " ")
    s = re.sub(r"(?<!\\)\\(?:,|;|:|quad|qquad)(?![a-zA-Z])|(?<!\\)\\ ", " ", s)
    s = s.replace("\n", "")  # 1
    s = s.replace("\\!", "")  # 2
    # 3. DEVIATION: "\\frac" → "\frac", but "1 \\ 2" (a matrix row break) is kept.
    s = re.sub(r"\\\\(?=[a-zA-Z])", r"\\", s)
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")  # 4
    s = re.sub(r"\\(?:left|right)(?![a-zA-Z])", "", s)  # 5
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ(?![a-zA-Z])|\\degree|°", "", s)  # 6
    s = s.replace("\\$", "").replace("$", "")  # 7
    s = _remove_right_units(s)  # 8
    s = s.replace("\\%", "").replace("%", "")  # 9
    s = s.replace(" .", " 0.").replace("{.", "{0.")  # 10
    s = s.strip()
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    s = re.sub(r"^-\.(?=\d)", "-0.", s)
    s = _drop_lhs(s).strip()  # 11
    s = _fix_sqrt(s)  # 12
    s = _remove_spaces(s)  # 13
    s = fix_fracs(s)  # 14
    if s == "0.5":  # 15
        s = "\\frac{1}{2}"
    s = _fix_a_slash_b(s)  # 16
    # 17. DEVIATION (§12 S5): only a ".0…0" fractional part goes; the reference made "10" → "1".
    s = re.sub(r"^(-?\d+)\.0+$", r"\1", s)
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    for spelling, canonical in _RELATION_SPELLINGS:
        s = re.sub(re.escape(spelling) + r"(?![a-zA-Z])", lambda _m, c=canonical: c, s)
    return s


# --------------------------------------------------------------------------------------------
# The shape of a normalised answer: text, choice, number, structure, free variables
# --------------------------------------------------------------------------------------------

_TEXT_WRAPPER = re.compile(r"\\(?:" + "|".join(c.lstrip("\\") for c in TEXT_COMMANDS) + r")\{")


def unwrap_text(s: str) -> str:
    """``\\text{(B)}`` → ``(B)``; only when the wrapper spans the whole string."""
    while True:
        match = _TEXT_WRAPPER.match(s)
        if match is None or find_matching_brace(s, match.end() - 1) != len(s) - 1:
            return s
        s = s[match.end() : -1].strip()


def choice_letter(s: str, allow_bare: bool) -> str | None:
    """The upper-case letter of a multiple-choice answer ``(B)`` or ``B)`` (or ``B`` if ``allow_bare``)."""
    match = re.fullmatch(r"\(([A-Za-z])\)|([A-Za-z])\)" + (r"|([A-Za-z])" if allow_bare else ""), s)
    return next(g for g in match.groups() if g).upper() if match else None


def parse_number(s: str) -> tuple[Fraction, bool] | None:
    """``(value, written_as_decimal)`` for a plain number in normalised form, else ``None``.

    Exponents are limited to three digits so ``1e999999999`` cannot build a giant integer here, in
    the caller's process; such strings go to the killable symbolic worker instead.
    """
    try:
        return _parse_number(s)
    except (ValueError, ZeroDivisionError):  # e.g. more digits than int() accepts
        return None


def _parse_number(s: str) -> tuple[Fraction, bool] | None:
    match = re.fullmatch(r"(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}", s)  # MATH mixed number: 2\frac{1}{2} = 5/2
    if match:
        value = int(match.group(2)) + Fraction(int(match.group(3)), int(match.group(4)))
        return (-value if match.group(1) else value), False
    match = re.fullmatch(r"(-?)\\frac\{(-?[\d.]+)\}\{(-?[\d.]+)\}|(-?)([\d.]+)/([\d.]+)", s)
    if match:
        sign, top, bottom = (match.group(1), match.group(2), match.group(3)) if match.group(2) else match.groups()[3:]
        value = Fraction(top) / Fraction(bottom)
        return (-value if sign else value), "." in top + bottom
    if re.fullmatch(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d{1,3})?", s):
        return Fraction(s), bool(re.search(r"[.eE]", s))
    return None


_OPEN, _CLOSE = "([{", ")]}"


def split_top_level(s: str, separator: str) -> list[str]:
    """Split at ``separator`` where no bracket of any kind is open."""
    parts: list[str] = []
    depth, start, i = 0, 0, 0
    while i < len(s):
        if depth == 0 and s.startswith(separator, i):
            parts.append(s[start:i])
            i += len(separator)
            start = i
            continue
        if s[i] in _OPEN:
            depth += 1
        elif s[i] in _CLOSE:
            depth -= 1
        i += 1
    parts.append(s[start:])
    return parts


def _outer_pair_spans(s: str, first: int) -> bool:
    """Does the bracket at ``s[first]`` close exactly at the end of ``s``?"""
    depth = 0
    for i in range(first, len(s)):
        if s[i] in _OPEN:
            depth += 1
        elif s[i] in _CLOSE:
            depth -= 1
            if depth == 0:
                return i == len(s) - 1
    return False


@dataclass(frozen=True)
class AnswerStructure:
    """A compound answer split at its top-level separators; items are raw (not yet normalised) strings."""

    kind: str  # "ordered" (tuple/interval), "unordered" (set, comma list), "matrix" or "union"
    shape: str  # bracket pair for "ordered", matrix dimensions for "matrix"
    items: tuple[str, ...]


def parse_structure(s: str) -> AnswerStructure | None:
    """Matrix, ``\\cup`` union, ``\\{set\\}``, tuple/interval of 2+ items or bare comma list; else ``None``.

    A single parenthesised item (``(x+1)``) and one-element sets are not structures.
    """
    matrix = re.fullmatch(r"\\begin\{([pbvBV]?matrix)\}(.*)\\end\{\1\}", s, flags=re.DOTALL)
    if matrix:
        rows = [r for r in split_top_level(matrix.group(2), "\\\\") if r.strip()]
        cells = [split_top_level(r, "&") for r in rows]
        shape = f"{len(cells)}x{'/'.join(str(len(r)) for r in cells)}"
        return AnswerStructure("matrix", shape, tuple(cell.strip() for row in cells for cell in row))
    pieces = split_top_level(s, "\\cup")
    if len(pieces) > 1:
        return AnswerStructure("union", "", tuple(pieces))
    if s.startswith("\\{") and s.endswith("\\}") and _outer_pair_spans(s, 1):
        items = split_top_level(s[2:-2], ",")
        return AnswerStructure("unordered", "", tuple(items)) if len(items) >= 2 else None
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _outer_pair_spans(s, 0):
        items = split_top_level(s[1:-1], ",")
        if len(items) >= 2:
            return AnswerStructure("ordered", s[0] + s[-1], tuple(items))
        return None
    items = split_top_level(s, ",")
    return AnswerStructure("unordered", "", tuple(items)) if len(items) >= 2 else None


_BINDING_OR_RELATION = re.compile(r"\\(?:int|iint|oint|sum|prod|lim|le|ge|ne|lt|gt)(?![a-zA-Z])|[=<>]")
_LETTER_FREE_GROUPS = re.compile(
    r"\\(?:text|textbf|textnormal|textrm|mbox|mathrm|operatorname|mathbb|mathcal|mathfrak|begin|end)\{[^{}]*\}"
)


def free_letters(s: str) -> set[str] | None:
    """Variable letters of an expression (outside command names and text), or ``None`` when unsure.

    Two answers with different free variables cannot be equal (``x+1`` vs ``y+1``, ``5`` vs
    ``x^2+4``), which spares a symbolic call. Integrals, sums, limits and relations bind or
    eliminate variables, so those give ``None``; ``e`` and ``i`` are constants, not variables.
    """
    if _BINDING_OR_RELATION.search(s):
        return None
    s = _LETTER_FREE_GROUPS.sub(" ", s)
    s = re.sub(r"\\[a-zA-Z]+", " ", s)
    return set(re.findall(r"[a-zA-Z]", s)) - {"e", "i"}


_SET_NOTATION = re.compile(r"\\(?:mathbb|emptyset|varnothing|setminus|in|infty)(?![a-zA-Z])")


def is_closed_form_number(s: str) -> bool:
    """A number such as ``8``, ``4\\sqrt{3}`` or ``\\frac{\\pi}{2}``: no variables, no set notation."""
    return parse_number(s) is not None or (free_letters(s) == set() and not _SET_NOTATION.search(s))
