"""Prompt files for chat models: a system instruction, few-shot turns and a user template, in one text file.

A template renders in one of two shapes, and the server applies the model's own chat template to either:

* ``chat_turns``: a system message, each few-shot example as a real user/assistant turn, then the user turn;
* ``single_user``: one user message holding the instruction, the few-shot block (each example's user text
  with its answer on the next line) and the filled template, which is how the reference sent its prompts
  (spec ``specs/mcts.md`` §13.1(8)).

Each file's version is a hash of its bytes, so every output can record exactly which prompt produced it.

File format (sections start with a ``### <section>`` line; text between headers belongs to the section;
lines starting with ``#`` before the first header are comments)::

    # what the prompt is for
    ### system
    You are ...
    ### example user
    Question: 2 + 2?
    ### example assistant
    \\boxed{4}
    ### user
    Question: {question}

Only the ``### user`` section is a ``str.format`` template (its placeholders are checked against what the
caller promises to fill); system and example text is used verbatim, so LaTeX braces need no escaping.

Usage::

    template = load_prompt(PROMPTS_DIR / "mcts_ost.txt", placeholders={"question", "partial_solution"})
    messages = template.render(question=q, partial_solution=s)
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from prompts import PROMPTS_DIR

__all__ = ["PROMPTS_DIR", "PROMPT_SHAPES", "PromptTemplate", "load_prompt"]
PROMPT_SHAPES = ("single_user", "chat_turns")
_SECTIONS = ("system", "example user", "example assistant", "user")

Message = dict[str, str]


@dataclass(frozen=True)
class PromptTemplate:
    """A parsed prompt file; :meth:`render` turns it into chat messages."""

    name: str
    system: str
    examples: tuple[tuple[str, str], ...]
    user_template: str
    version: str
    shape: str = "chat_turns"

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(name for _, name, _, _ in string.Formatter().parse(self.user_template) if name)

    def with_shape(self, shape: str) -> PromptTemplate:
        """The same prompt rendered as ``shape`` (one of :data:`PROMPT_SHAPES`)."""
        if shape not in PROMPT_SHAPES:
            raise ValueError(f"prompt shape must be one of {PROMPT_SHAPES}, got {shape!r}")
        return replace(self, shape=shape)

    def render(self, **fields: str) -> list[Message]:
        """The chat messages of this prompt with ``fields`` filled in, in the template's shape."""
        missing = self.placeholders - fields.keys()
        if missing:
            raise KeyError(f"prompt {self.name!r} needs {sorted(missing)}; got {sorted(fields)}")
        filled = self.user_template.format(**fields)
        if self.shape == "single_user":
            blocks = [self.system] if self.system else []
            blocks += [f"{example_user}\n{example_answer}" for example_user, example_answer in self.examples]
            return [{"role": "user", "content": "\n\n".join([*blocks, filled])}]
        messages: list[Message] = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        for user, assistant in self.examples:
            messages.append({"role": "user", "content": user})
            messages.append({"role": "assistant", "content": assistant})
        messages.append({"role": "user", "content": filled})
        return messages

    def identity(self) -> dict[str, str]:
        """``{"name", "version", "shape"}`` for output records."""
        return {"name": self.name, "version": self.version, "shape": self.shape}


def parse_prompt(text: str, name: str) -> PromptTemplate:
    """Parse a prompt file's text; raises ``ValueError`` naming ``name`` on a malformed file."""
    sections: list[tuple[str, list[str]]] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.startswith("### "):
            header = line[4:].strip().lower()
            if header not in _SECTIONS:
                raise ValueError(f"{name}:{line_no}: unknown section {header!r}; expected one of {_SECTIONS}")
            sections.append((header, []))
        elif sections:
            sections[-1][1].append(line)
        elif line.strip() and not line.startswith("#"):
            raise ValueError(f"{name}:{line_no}: text before the first '### <section>' header")
    bodies = [(header, "\n".join(lines).strip()) for header, lines in sections]
    system = [body for header, body in bodies if header == "system"]
    users = [body for header, body in bodies if header == "user"]
    if len(system) > 1 or len(users) != 1:
        raise ValueError(f"{name}: needs at most one '### system' and exactly one '### user' section")
    if bodies[-1][0] != "user":
        raise ValueError(f"{name}: '### user' must be the last section")
    example_parts = [(header, body) for header, body in bodies if header.startswith("example")]
    if len(example_parts) % 2:
        raise ValueError(f"{name}: every '### example user' needs one '### example assistant' after it")
    examples: list[tuple[str, str]] = []
    for (h_user, user), (h_assistant, assistant) in zip(example_parts[::2], example_parts[1::2], strict=True):
        if (h_user, h_assistant) != ("example user", "example assistant") or not user or not assistant:
            raise ValueError(f"{name}: examples must alternate non-empty 'example user' / 'example assistant'")
        examples.append((user, assistant))
    version = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return PromptTemplate(name, system[0] if system else "", tuple(examples), users[0], version)


@lru_cache(maxsize=64)
def _load(path: Path) -> PromptTemplate:
    return parse_prompt(path.read_text(encoding="utf-8"), path.stem)


def load_prompt(path: Path | str, placeholders: set[str] | frozenset[str] | None = None) -> PromptTemplate:
    """Load (cached) and, if ``placeholders`` is given, check the user template uses exactly those names."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    template = _load(path.resolve())
    if placeholders is not None and template.placeholders != frozenset(placeholders):
        raise ValueError(
            f"{path}: the '### user' section must use exactly the placeholders {sorted(placeholders)}, "
            f"found {sorted(template.placeholders)}"
        )
    return template
