"""The single owner of how query and document strings are built before an encoder sees them.

STYLE habit 12: the reference trained with ``"Query: "``, called its in-MCTS retriever with
``"query: …<|im_end|>"`` and fed RepLLaMA ``"Query: …</s>"``. Here training-set export, the
retriever servers, the encoders and the BRIGHT evaluation all call :func:`format_query` /
:func:`format_document` with one :class:`TextFormat`, so the string is the same everywhere.

A string is ``prefix + instruction + text + eos`` (spec evaluation.md §3.2): the BRIGHT
instruction is concatenated *after* the prefix and before the text, with no separator beyond
what the template ends with. BRIGHT instructions are data (``models/retrieval/bright_instructions.json``,
one table per model family) read by :func:`instruction_for`. Families that also instruct documents
per split (Instructor) get that instruction fixed into the format for one split by
:func:`with_document_instruction`, since documents are encoded without a task.

EOS handling: with ``append_eos`` the EOS *string* is appended as text (what the reference
evaluation and vLLM servers do). The transformers encoder instead asks for the string without
EOS (``with_eos=False``), truncates, and appends the EOS *id* (Tevatron, training.md §9.2); the
two give the same token ids whenever nothing is truncated.

Usage::

    from models.retrieval.text_formats import RADER, format_query
    fmt = RADER.with_eos("<|im_end|>")
    format_query("What is 2+2?", fmt, task="theoremqa_theorems")
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

BRIGHT_INSTRUCTIONS_PATH = Path(__file__).resolve().parent / "bright_instructions.json"

Side = Literal["query", "document"]


@dataclass(frozen=True)
class TextFormat:
    """Everything that turns raw query/document text into the encoder's input string.

    ``query_instruction``/``doc_instruction`` are literal templates (``{task}`` is filled with the
    raw split key). When they are empty and ``instruction_family`` is set, the instruction for a
    given ``task`` comes from the BRIGHT table. ``eos_token=None`` with ``append_eos`` means "the
    model tokenizer's EOS"; encoders resolve it with :meth:`with_eos`.
    """

    query_prefix: str = ""
    doc_prefix: str = ""
    append_eos: bool = False
    eos_token: str | None = None
    query_instruction: str = ""
    doc_instruction: str = ""
    instruction_family: str | None = None
    long_context: bool = False
    # REF: sentence-transformers before v5 strips every input (Transformer.tokenize); BRIGHT ran bge and
    # Instructor through it, so their strings are stripped before the (absent) EOS.
    strip: bool = False
    # Labels for humans; they do not change the strings, so they stay out of equality.
    name: str = field(default="custom", compare=False)
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        # A typo in the family fails here, not after hours of document encoding.
        if self.instruction_family is not None and self.instruction_family not in known_families():
            raise ValueError(
                f"TextFormat.instruction_family={self.instruction_family!r} is not in "
                f"{BRIGHT_INSTRUCTIONS_PATH.name}; known: {sorted(known_families())}"
            )

    def with_eos(self, eos_token: str | None) -> TextFormat:
        """Return a copy whose EOS string is ``eos_token`` unless one was set explicitly."""
        if not self.append_eos or self.eos_token is not None:
            return self
        if not eos_token:
            raise ValueError(
                f"text format {self.name!r} appends EOS but the tokenizer defines no eos_token; "
                "set TextFormat.eos_token explicitly"
            )
        return dataclasses.replace(self, eos_token=eos_token)

    def to_dict(self) -> dict[str, Any]:
        """The fields that determine the strings (``name``/``source`` excluded)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.compare}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextFormat:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TextFormat fields {unknown}; known: {sorted(known)}")
        return cls(**data)


# --- BRIGHT instruction table --------------------------------------------------------------------


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    with open(BRIGHT_INSTRUCTIONS_PATH, encoding="utf-8") as handle:
        return json.load(handle)


@lru_cache(maxsize=1)
def family_members() -> dict[str, str]:
    """Map each retriever key (``qwen2``, ``inst-l``, …) to the table that holds its instructions."""
    return {member: table for table, spec in _table()["families"].items() for member in spec["members"]}


def _no_instruction() -> frozenset[str]:
    return frozenset(_table()["no_instruction_families"])


def known_families() -> set[str]:
    return set(family_members()) | set(_no_instruction())


def bright_splits() -> list[str]:
    """The 12 BRIGHT split keys, in the benchmark's order."""
    return list(_table()["splits"])


def has_document_instructions(family: str | None) -> bool:
    """Whether BRIGHT gives the documents of ``family`` an instruction (Instructor, GritLM)."""
    if family is None or family in _no_instruction():
        return False
    spec = _table()["families"][family_members()[family]]
    configs = [spec["default"], *spec["overrides"].values()]
    return any(config.get(key, {}).get("document") for config in configs for key in ("instructions", "instructions_long"))


def instruction_for(family: str, split: str, long_context: bool = False, side: Side = "query") -> str:
    """The BRIGHT instruction of ``family`` for ``split``, with ``{task}`` filled by the raw split key.

    Returns ``""`` for families without instructions and for the document side of families that
    only instruct queries (BRIGHT never gives documents an instruction unless configured).
    """
    if side not in ("query", "document"):
        raise ValueError(f"side must be 'query' or 'document', got {side!r}")
    if family in _no_instruction():
        return ""
    table_name = family_members().get(family)
    if table_name is None:
        raise ValueError(f"unknown instruction family {family!r}; known: {sorted(known_families())}")
    if split not in _table()["splits"]:
        raise ValueError(
            f"no BRIGHT instruction for split {split!r}; known splits: {bright_splits()}. "
            "For another corpus pass the closest BRIGHT split key as task or set "
            "TextFormat.query_instruction explicitly"
        )
    spec = _table()["families"][table_name]
    config = spec["overrides"].get(split, spec["default"])
    key = "instructions_long" if long_context else "instructions"
    if key not in config:
        raise ValueError(
            f"BRIGHT has no long-document instructions for split {split!r} (family {family!r}); "
            "long_context exists only for the StackExchange splits and pony"
        )
    return config[key].get(side, "").format(task=split)


# --- formatting ----------------------------------------------------------------------------------


def _instruction(template: str, fmt: TextFormat, task: str | None, side: Side) -> str:
    if template:
        if "{task}" in template:
            if task is None:
                raise ValueError(f"the {side} instruction {template!r} needs a task (a BRIGHT split key)")
            return template.format(task=task)
        return template
    if fmt.instruction_family is not None and task is not None:
        return instruction_for(fmt.instruction_family, task, fmt.long_context, side)
    return ""


def _eos(fmt: TextFormat, with_eos: bool) -> str:
    if not (fmt.append_eos and with_eos):
        return ""
    if fmt.eos_token is None:
        raise ValueError(
            f"text format {fmt.name!r} appends EOS but its eos_token is unresolved; "
            "call fmt.with_eos(tokenizer.eos_token) first (encoders do this)"
        )
    return fmt.eos_token


def query_instruction(fmt: TextFormat, task: str | None = None) -> str:
    """The instruction :func:`format_query` puts between the prefix and the query text."""
    return _instruction(fmt.query_instruction, fmt, task, "query")


def document_instruction(fmt: TextFormat, task: str | None = None) -> str:
    """The instruction :func:`format_document` puts between the prefix and the document text."""
    return _instruction(fmt.doc_instruction, fmt, task, "document")


def format_query(text: str, fmt: TextFormat, task: str | None = None, *, with_eos: bool = True) -> str:
    """``query_prefix + instruction(task) + text + eos``; ``task=None`` means no BRIGHT instruction."""
    return _join(fmt.query_prefix + query_instruction(fmt, task) + text, fmt) + _eos(fmt, with_eos)


def format_document(text: str, fmt: TextFormat, task: str | None = None, *, with_eos: bool = True) -> str:
    """``doc_prefix + doc_instruction + text + eos``; documents rarely carry an instruction."""
    return _join(fmt.doc_prefix + document_instruction(fmt, task) + text, fmt) + _eos(fmt, with_eos)


def _join(body: str, fmt: TextFormat) -> str:
    return body.strip() if fmt.strip else body


def with_document_instruction(fmt: TextFormat, task: str | None) -> TextFormat:
    """``fmt`` with its family's per-split document instruction fixed as the literal ``doc_instruction``.

    Documents are encoded without a task (one cache per corpus), so a family that instructs documents
    per split (Instructor's ``Represent the biology paragraph for retrieval: ``) needs the split chosen
    here; the literal then also names the cache. ``ValueError`` when such a family has no ``task``.
    """
    if fmt.doc_instruction or not has_document_instructions(fmt.instruction_family):
        return fmt
    if task is None:
        raise ValueError(
            f"text format {fmt.name!r} gives documents BRIGHT's per-split {fmt.instruction_family} instruction, "
            "so it needs the split (--instruction_task, which evaluate_bright sets from --task); a stage that "
            "encodes several splits with one format cannot use it"
        )
    family = fmt.instruction_family
    assert family is not None  # has_document_instructions(None) is False
    instruction = instruction_for(family, task, fmt.long_context, side="document")
    return dataclasses.replace(fmt, doc_instruction=instruction)


# --- presets -------------------------------------------------------------------------------------

RADER = TextFormat(
    query_prefix="query: ",
    doc_prefix="document: ",
    append_eos=True,
    instruction_family="trained_model",
    name="rader",
    source="RaDeR evaluation retrievers.retrieval_trainedmodel and its vLLM servers "
    "(spec evaluation.md §3.2, training.md §10.4); what the published numbers used",
)
# REF: the RaDeR README's Tevatron command trains with these prefixes; every RaDeR inference path
# uses RADER's lower-case ones. Which one the released checkpoints saw is unknown (training.md §9.9).
RADER_README_TRAIN = TextFormat(
    query_prefix="Query: ",
    doc_prefix="Passage: ",
    append_eos=True,
    name="rader_readme_train",
    source="RaDeR README Tevatron training example (--query_prefix 'Query: ' --passage_prefix 'Passage: ')",
)
REPLLAMA = TextFormat(
    query_prefix="query: ",
    doc_prefix="passage: ",
    append_eos=True,
    name="repllama",
    source="Tevatron RepLLaMA recipe: prefixes 'query: '/'passage: ', EOS appended (training.md §7.3)",
)
REPLLAMA_REF_EVAL = TextFormat(
    query_prefix="Query: ",
    doc_prefix="Document: ",
    append_eos=True,
    name="repllama_ref_eval",
    source="RaDeR reference evaluation of RepLLaMA: 'Query: <q></s>' / 'Document: <d></s>' "
    "(evaluation.md §3 catalogue); </s> is Llama-2's eos_token",
)
PLAIN = TextFormat(name="plain", source="sentence encoders (e.g. all-MiniLM-L6-v2): text as-is")
# BRIGHT's baselines as BRIGHT's retrievers.py builds their strings (spec evaluation.md §3, §3.3). The
# decoder embedders (retrieval_sf_qwen_e5) concatenate the instruction and the query and let the
# tokenizer add its own special tokens; no EOS text is appended.
_SF_QWEN_E5 = (
    "BRIGHT retrievers.retrieval_sf_qwen_e5 for {model}: no prefixes, BRIGHT's per-split "
    "'Instruct: ...\\nQuery: ' instruction before the query, documents as they are, the tokenizer's own "
    "special tokens (no EOS added), last-token pooling, {length:,} tokens for queries and documents"
)
BRIGHT_QWEN2 = TextFormat(
    instruction_family="qwen2",
    name="bright_qwen2",
    source=_SF_QWEN_E5.format(model="gte-Qwen2-7B-instruct", length=8192),
)
BRIGHT_QWEN = TextFormat(
    instruction_family="qwen",
    name="bright_qwen",
    source=_SF_QWEN_E5.format(model="gte-Qwen1.5-7B-instruct", length=8192),
)
BRIGHT_SF = TextFormat(
    instruction_family="sf",
    name="bright_sf",
    source=_SF_QWEN_E5.format(model="SFR-Embedding-Mistral", length=4096),
)
BRIGHT_E5 = TextFormat(
    instruction_family="e5",
    name="bright_e5",
    source=_SF_QWEN_E5.format(model="e5-mistral-7b-instruct", length=4096),
)
BRIGHT_BGE = TextFormat(
    instruction_family="bge",
    strip=True,
    name="bright_bge",
    source="BRIGHT retrievers.retrieval_sbert_bge for bge-large-en-v1.5: the 'Represent this ... for searching "
    "relevant passages: ' instruction before the query, documents as they are, both through "
    "SentenceTransformer.encode (stripped, CLS pooling, normalised, 512 tokens)",
)
# The query instruction comes from the table per task; the document one is fixed per split by
# with_document_instruction. inst-l and inst-xl share one table.
BRIGHT_INSTRUCTOR = TextFormat(
    instruction_family="inst-l",
    strip=True,
    name="bright_instructor",
    source="BRIGHT retrievers.retrieval_instructor for Instructor-L/XL: SentenceTransformer.encode with "
    "prompt='Represent the ... post for retrieving relevant paragraphs: ' (queries) and 'Represent the ... "
    "paragraph for retrieval: ' (documents), the prompt's tokens left out of the mean pooling "
    "(set_pooling_include_prompt(False)), normalised, 2,048 tokens",
)

PRESETS: dict[str, TextFormat] = {
    fmt.name: fmt
    for fmt in (
        RADER,
        RADER_README_TRAIN,
        REPLLAMA,
        REPLLAMA_REF_EVAL,
        PLAIN,
        BRIGHT_QWEN2,
        BRIGHT_QWEN,
        BRIGHT_SF,
        BRIGHT_E5,
        BRIGHT_BGE,
        BRIGHT_INSTRUCTOR,
    )
}


def get_format(name: str) -> TextFormat:
    """Look up a preset by name (for ``--text_format`` flags: ``choices=sorted(PRESETS)``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown text format {name!r}; choose one of {sorted(PRESETS)}") from None
