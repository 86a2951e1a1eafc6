"""Options of the contrastive retriever trainer, one dataclass per concern, parsed by ``HfArgumentParser``.

Flag names and defaults follow Tevatron v2 (``tevatron.retriever.arguments``, spec training.md §15), so the
RaDeR README command runs unchanged; options Tevatron does not have are marked "(ours)". Only declarations
live here: loading, tokenising and training read these objects.

* :class:`ModelArguments`     backbone, pooling, normalisation, temperature, attention kernel
* :class:`LoraArguments`      LoRA build or resume (``--lora``, r/alpha/dropout/targets)
* :class:`DataArguments`      where the training records come from and how a group is sampled
* :class:`TextArguments`      prefixes, max lengths, EOS and padding (shared with the reranker)
* :class:`RetrieverTrainingArguments`  HF ``TrainingArguments`` plus Tevatron's and our training flags

The pointwise reranker (``tevatron.reranker``, training.md §12) reuses the LoRA, data and training classes
with its own defaults and checks: :class:`RerankerModelArguments`, :class:`RerankerLoraArguments` (r 8),
:class:`RerankerDataArguments` (groups of at least 2) and :class:`RerankerTextArguments` (the pair format
and ``--rerank_max_len``).

Usage::

    from transformers import HfArgumentParser
    parser = HfArgumentParser(RETRIEVER_ARGUMENT_CLASSES)      # or RERANKER_ARGUMENT_CLASSES
    model_args, lora_args, data_args, text_args, training_args = parser.parse_args_into_dataclasses()
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainingArguments

logger = logging.getLogger(__name__)

# Tevatron accepts these spellings; the first of each group is what we store (models/retrieval/encoders.py POOLINGS).
POOLING_ALIASES = {
    **{"eos": "eos", "last": "last", "cls": "cls", "first": "cls"},
    **{"mean": "mean", "avg": "mean", "average": "mean"},
}
LR_SCHEDULES = ("auto", "ds_warmup_decay_log", "hf")
SHORT_NEGATIVES_RNG = ("global", "seeded")
ZERO_NEGATIVES_POLICIES = ("error", "drop")
DEFAULT_LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,down_proj,up_proj,gate_proj"  # RaDeR README, Tevatron default


@dataclass
class ModelArguments:
    """The shared-weight bi-encoder (training.md §9.1, §9.3, §9.4)."""

    model_name_or_path: str = field(metadata={"help": "base model: HF id or local directory (bare AutoModel is used)"})
    tokenizer_name: str | None = field(default=None, metadata={"help": "tokenizer if not the model's"})
    cache_dir: str | None = field(default=None, metadata={"help": "HF cache directory for model downloads"})
    pooling: str = field(
        default="cls",
        metadata={"help": f"pooling: {sorted(POOLING_ALIASES)} (Tevatron default cls; RaDeR uses eos)"},
    )
    normalize: bool = field(default=False, metadata={"help": "L2-normalise representations (dot = cosine)"})
    temperature: float = field(default=1.0, metadata={"help": "logits = similarity / temperature (RaDeR 0.01)"})
    attn_implementation: str = field(
        default="flash_attention_2",
        metadata={"help": "attention kernel; falls back to sdpa when flash-attn is not installed (e.g. on CPU)"},
    )

    def __post_init__(self) -> None:
        if self.pooling not in POOLING_ALIASES:
            raise ValueError(f"--pooling {self.pooling!r}: choose one of {sorted(POOLING_ALIASES)}")
        self.pooling = POOLING_ALIASES[self.pooling]
        if self.temperature <= 0:
            raise ValueError(f"--temperature must be > 0, got {self.temperature}")


@dataclass
class LoraArguments:
    """LoRA on the backbone (training.md §9.6): PEFT ``FEATURE_EXTRACTION``, bias none."""

    lora: bool = field(default=False, metadata={"help": "train LoRA adapters instead of the full model"})
    lora_name_or_path: str | None = field(
        default=None, metadata={"help": "existing adapter to continue training (loaded trainable)"}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=64, metadata={"help": "LoRA alpha (scaling alpha/r)"})
    lora_dropout: float = field(default=0.1, metadata={"help": "dropout on the LoRA input"})
    lora_target_modules: str = field(
        default=DEFAULT_LORA_TARGETS, metadata={"help": "comma-separated module names to adapt"}
    )

    @property
    def enabled(self) -> bool:
        return self.lora or self.lora_name_or_path is not None

    @property
    def target_modules(self) -> list[str]:
        return [name.strip() for name in self.lora_target_modules.split(",") if name.strip()]


@dataclass
class DataArguments:
    """Training records and group sampling (training.md §8.1-§8.3)."""

    dataset_name: str = field(
        default="json", metadata={"help": "HF dataset id, a local dataset dir/file, or 'json' with --dataset_path"}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "HF dataset config name"})
    dataset_path: str | None = field(
        default=None, metadata={"help": "local JSONL/JSON(.gz)/parquet file, a directory of them, or a saved dataset"}
    )
    dataset_split: str = field(default="train", metadata={"help": "split of a Hub dataset or saved DatasetDict"})
    dataset_cache_dir: str | None = field(default=None, metadata={"help": "HF datasets cache directory"})
    num_proc: int = field(default=1, metadata={"help": "processes for load_dataset"})
    corpus_name: str | None = field(default=None, metadata={"help": "v2 records: corpus dataset id or local path"})
    corpus_config: str | None = field(default=None, metadata={"help": "v2 records: corpus config"})
    corpus_path: str | None = field(default=None, metadata={"help": "v2 records: local corpus file or directory"})
    corpus_split: str = field(default="train", metadata={"help": "v2 records: corpus split"})
    dataset_number_of_shards: int = field(default=1, metadata={"help": "use only one shard of the records"})
    dataset_shard_index: int = field(default=0, metadata={"help": "which shard (with dataset_number_of_shards)"})
    train_group_size: int = field(default=8, metadata={"help": "passages per query: 1 positive + (G-1) negatives"})
    positive_passage_no_shuffle: bool = field(
        default=False, metadata={"help": "reranker only: always the first positive (the retriever ignores it)"}
    )
    negative_passage_no_shuffle: bool = field(
        default=False, metadata={"help": "reranker only: the first G-1 negatives (the retriever ignores it)"}
    )
    short_negatives_rng: str = field(
        default="global",
        metadata={
            "help": "(ours) fewer than G-1 negatives: 'global' = random.choices on the module RNG (Tevatron), "
            "'seeded' = an RNG keyed by item, seed and epoch (same groups after a resume)"
        },
    )
    zero_negatives: str = field(
        default="error",
        metadata={"help": "(ours) records without negatives (Tevatron crashes on them): 'error' or 'drop'"},
    )

    def __post_init__(self) -> None:
        if self.train_group_size < 1:
            raise ValueError(f"--train_group_size must be >= 1, got {self.train_group_size}")
        if self.short_negatives_rng not in SHORT_NEGATIVES_RNG:
            raise ValueError(f"--short_negatives_rng {self.short_negatives_rng!r}: choose {SHORT_NEGATIVES_RNG}")
        if self.zero_negatives not in ZERO_NEGATIVES_POLICIES:
            raise ValueError(f"--zero_negatives {self.zero_negatives!r}: choose {ZERO_NEGATIVES_POLICIES}")
        if not 0 <= self.dataset_shard_index < max(1, self.dataset_number_of_shards):
            raise ValueError(
                f"--dataset_shard_index {self.dataset_shard_index} is outside 0..{self.dataset_number_of_shards - 1}"
            )


@dataclass
class TextArguments:
    """How strings are built and tokenised (training.md §8.4, §9.2); the same values go into the
    inference settings saved with the model."""

    query_prefix: str = field(default="", metadata={"help": "prepended to every query (RaDeR eval: 'query: ')"})
    passage_prefix: str = field(default="", metadata={"help": "prepended to every passage (RaDeR eval: 'document: ')"})
    query_max_len: int = field(default=32, metadata={"help": "query tokens incl. the appended EOS"})
    passage_max_len: int = field(default=128, metadata={"help": "passage tokens incl. the appended EOS"})
    append_eos_token: bool = field(default=False, metadata={"help": "truncate to max_len-1, then append the EOS id"})
    pad_to_multiple_of: int | None = field(default=16, metadata={"help": "pad batch width up to a multiple"})

    def __post_init__(self) -> None:
        for name in ("query_max_len", "passage_max_len"):
            if getattr(self, name) < 2:
                raise ValueError(f"--{name} must be >= 2, got {getattr(self, name)}")


@dataclass
class RetrieverTrainingArguments(TrainingArguments):
    """HF ``TrainingArguments`` (DeepSpeed, bf16, gradient checkpointing, checkpoints) plus Tevatron's
    ``warmup_ratio`` default 0.1 and ``overwrite_output_dir`` (both gone from transformers 5)."""

    warmup_ratio: float = field(
        default=0.1,
        metadata={"help": "warm-up as a fraction of all steps, used when --warmup_steps is 0 (Tevatron default 0.1)"},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "allow a non-empty --output_dir (its last checkpoint is resumed)"}
    )
    auto_resume: bool = field(
        default=True, metadata={"help": "(ours) resume from the last checkpoint-* in --output_dir (Tevatron does)"}
    )
    lr_schedule: str = field(
        default="auto",
        metadata={
            "help": "(ours) 'auto': the DeepSpeed config's scheduler block if any, else --lr_scheduler_type; "
            "'ds_warmup_decay_log': DeepSpeed WarmupDecayLR (log warm-up, linear decay, what the paper ran) "
            "even without DeepSpeed; 'hf': --lr_scheduler_type, dropping a DeepSpeed scheduler block"
        },
    )
    grad_cache: bool = field(default=False, metadata={"help": "Tevatron GradCache (not supported; RaDeR off)"})
    gc_q_chunk_size: int = field(default=4, metadata={"help": "GradCache query chunk (only with --grad_cache: refused)"})
    gc_p_chunk_size: int = field(default=32, metadata={"help": "GradCache passage chunk (only with --grad_cache: refused)"})
    # A bi-encoder uses every trainable weight on every step; DDP's unused-parameter scan would only cost time
    # and breaks with gradient checkpointing, and HF turns it on for any model that is not a PreTrainedModel.
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "DDP find_unused_parameters (False: all weights are used every step)"}
    )

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"--lr_schedule {self.lr_schedule!r}: choose one of {LR_SCHEDULES}")
        if self.grad_cache:
            raise ValueError(
                "--grad_cache is not supported: Tevatron's GradCache loss ignores the temperature (training.md "
                "§9.5) and RaDeR did not use it; lower --per_device_train_batch_size or use gradient accumulation"
            )
        if (self.gc_q_chunk_size, self.gc_p_chunk_size) != (4, 32):
            raise ValueError("--gc_q_chunk_size/--gc_p_chunk_size size GradCache chunks, and --grad_cache is not supported")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        # transformers 5 reads a fraction from warmup_steps < 1; --warmup_steps > 0 wins, as in Tevatron.
        if not self.warmup_steps:
            self.warmup_steps = self.warmup_ratio
        if self.lr_schedule == "hf" and self.deepspeed:
            self.deepspeed = _without_scheduler(self.deepspeed)
        super().__post_init__()

    def uses_deepspeed_scheduler(self) -> bool:
        """True when the DeepSpeed config brings its own ``scheduler`` block (it replaces HF's)."""
        return bool(self.deepspeed) and "scheduler" in read_deepspeed_config(self.deepspeed)


def read_deepspeed_config(value: str | dict) -> dict:
    """A ``--deepspeed`` value (file path, JSON string or dict) as a dict."""
    if isinstance(value, dict):
        return dict(value)
    try:
        text = value if value.lstrip().startswith("{") else Path(value).read_text(encoding="utf-8")
        return json.loads(text)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--deepspeed {value}: cannot read a JSON config ({err})") from err


def _without_scheduler(value: str | dict) -> dict:
    """The DeepSpeed config minus its ``scheduler`` block (so HF's schedule applies)."""
    config = read_deepspeed_config(value)
    if config.pop("scheduler", None) is not None:
        logger.info("--lr_schedule hf: dropped the DeepSpeed scheduler block")
    return config


RETRIEVER_ARGUMENT_CLASSES = (ModelArguments, LoraArguments, DataArguments, TextArguments, RetrieverTrainingArguments)


# ------------------------------------------------------------------------------------------------ reranker


@dataclass
class RerankerModelArguments:
    """The cross-encoder backbone (training.md §12.1); its 1-output head is always new (the fix of the
    ``num_labels=2`` bug, §12.4)."""

    model_name_or_path: str = field(metadata={"help": "base model: HF id or local directory (bare AutoModel is used)"})
    attn_implementation: str = field(
        default="flash_attention_2",
        metadata={"help": "attention kernel; falls back to sdpa when flash-attn is not installed (e.g. on CPU)"},
    )


@dataclass
class RerankerLoraArguments(LoraArguments):
    """LoRA on the reranker backbone; the head is trained in full (PEFT's ``modules_to_save`` in Tevatron)."""

    lora_r: int = field(default=8, metadata={"help": "LoRA rank (Tevatron's reranker default 8, training.md §12.1)"})

    def __post_init__(self) -> None:
        if self.lora_name_or_path:
            raise ValueError(
                "--lora_name_or_path is not supported by the reranker trainer: a saved reranker carries its own "
                "head; start from the base model with --lora, or resume a run with --resume_from_checkpoint"
            )
        if self.lora and not self.target_modules:
            raise ValueError("--lora_target_modules is empty; name the modules to adapt, e.g. q_proj,v_proj")


@dataclass
class RerankerDataArguments(DataArguments):
    """Training records and group sampling as the retriever's (training.md §12.3); ``--*_no_shuffle`` apply."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.train_group_size < 2:
            raise ValueError(
                f"--train_group_size {self.train_group_size}: the reranker needs at least 2 passages per query "
                "(1 positive + negatives) for its group cross-entropy; RaDeR used 12"
            )


@dataclass
class RerankerTextArguments:
    """How a (query, passage) pair becomes tokens (training.md §12.2); saved in ``reranker_config.json``.

    The pair string is ``query_prefix + query + pair_separator + passage_prefix + [title + " "] + text``:
    with Tevatron's example prefixes it is RaDeR's inference string ``"query: q document: d"``
    (models/reranking/pointwise.py ``RerankerFormat`` says why it is not Tevatron's double-spaced one).
    """

    query_prefix: str = field(default="query: ", metadata={"help": "text before the query (RaDeR: 'query: ')"})
    passage_prefix: str = field(
        default="document: ", metadata={"help": "text before the passage (RaDeR: 'document: ')"}
    )
    pair_separator: str = field(default=" ", metadata={"help": "(ours) text between the query and passage_prefix"})
    # Tevatron's default; RaDeR's value is unknown (training.md §12.5).
    rerank_max_len: int = field(default=512, metadata={"help": "pair tokens incl. the appended EOS; 0 = no truncation"})
    append_eos_token: bool = field(default=False, metadata={"help": "truncate to max_len-1, then append the EOS id"})
    pad_to_multiple_of: int = field(default=16, metadata={"help": "pad batch width up to a multiple"})

    def __post_init__(self) -> None:
        if self.rerank_max_len == 1 or self.rerank_max_len < 0:
            raise ValueError(f"--rerank_max_len must be 0 (no truncation) or >= 2, got {self.rerank_max_len}")
        if self.pad_to_multiple_of < 1:
            raise ValueError(f"--pad_to_multiple_of must be >= 1, got {self.pad_to_multiple_of}")


RERANKER_ARGUMENT_CLASSES = (
    RerankerModelArguments,
    RerankerLoraArguments,
    RerankerDataArguments,
    RerankerTextArguments,
    RetrieverTrainingArguments,
)
