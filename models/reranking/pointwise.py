"""The pointwise reranker model: a HF backbone plus a linear head on the last real token (training.md §12).

``s(q, d) = Linear(Backbone("query: {q} document: {d}<eos>")[last non-pad position])`` (paper App. G).
The backbone is a bare ``AutoModel`` (decoder or encoder, no LM head), optionally wrapped in a LoRA
adapter; the head is our own ``nn.Linear(hidden, 1, bias=False)``, trained in full.

Why not ``AutoModelForSequenceClassification``: its head finds "the last non-pad token" by comparing
``input_ids`` with ``config.pad_token_id``. Qwen2.5 configs have no pad id (Tevatron set it to 0), and
when the pad id equals the EOS id (SmolLM2, gte-Qwen2, Llama-3 with the EOS fallback) the appended
EOS itself counts as padding, so the head reads the wrong position (training.md §12.7). Here the
position comes from the attention mask, so neither the pad id nor the padding side matters.

Owns: the pair format and tokenisation contract (§12.2: prefixes, truncation to ``max_len - 1``,
EOS id appended after truncation, right padding to a multiple of 16), the model, saving and
loading. It knows nothing about BRIGHT, losses or trainers.

Interface for training (``run_src/train_reranker.py``)::

    model = PointwiseReranker.from_backbone("Qwen/Qwen2.5-7B-Instruct", lora=LoraSettings())
    batch = model.encode_pairs(queries, passages)          # one query repeated per passage of its group
    logits = model(**batch)                                 # float32 [B*G]; CE over view(-1, G), target 0
    model.save_pretrained(out_dir, state_dict=gathered)     # adapter (or full backbone) + head + settings

Interface for inference (``run_src/rerank.py``)::

    model = PointwiseReranker.from_pretrained(out_dir)      # also a LoRA dir on top of its base model
    model.with_max_len(backbone_max_positions(out_dir))     # whole pairs, not the training limit
    scores = model.score_pairs(queries, passages, batch_size=8)

A saved directory holds the backbone (full ``save_pretrained`` or a PEFT adapter:
``adapter_config.json`` + ``adapter_model.safetensors``), the tokenizer, ``reranker_head.safetensors``
and ``reranker_config.json`` with every inference setting (format, max length, base model, LoRA),
so inference never has to be told how the model was trained (training.md §14 "store the
inference contract"). :meth:`PointwiseReranker.from_sequence_classification` loads the released
RaDeR/Tevatron checkpoints (seq-cls model, optionally a ``SEQ_CLS`` LoRA adapter) into this class.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RERANKER_CONFIG_NAME = "reranker_config.json"
HEAD_WEIGHTS_NAME = "reranker_head.safetensors"
ADAPTER_CONFIG_NAME = "adapter_config.json"
# RaDeR's LoRA targets (training.md §9.6), also used for the reranker (§12.1).
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "down_proj", "up_proj", "gate_proj")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# Where HF configs keep the longest sequence the positions cover (decoders and BERT; GPT-2; a few others).
POSITION_LIMIT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


@dataclass(frozen=True)
class RerankerFormat:
    """How a (query, passage) pair becomes token ids; saved with the model and reused at inference.

    The pair string is ``query_prefix + query + separator + passage_prefix + [title + " "] + passage``,
    i.e. ``"query: {q} document: {d}"`` by default: the string RaDeR's ``rerank.py`` scored and the
    paper writes (App. G). DEVIATION: Tevatron's ``format_pair`` joins the parts with single spaces
    *and* keeps the prefixes' trailing spaces, giving ``"query:  q document:  d"`` (§12.2); we keep
    the clean string, which is what the released rerankers saw at inference.

    ``max_len`` counts tokens including the appended EOS (``None``: no truncation, as RaDeR's
    inference). Truncation cuts the end of the whole pair string, as Tevatron's collator does.
    """

    query_prefix: str = field(default="query: ", metadata={"help": "text before the query"})
    passage_prefix: str = field(default="document: ", metadata={"help": "text before the passage"})
    separator: str = field(default=" ", metadata={"help": "text between the query and the passage prefix"})
    # Tevatron's rerank_max_len default; RaDeR's value is unknown (training.md §12.5).
    max_len: int | None = field(default=512, metadata={"help": "tokens incl. EOS; None = no truncation"})
    append_eos: bool = field(default=True, metadata={"help": "append the tokenizer's EOS id after truncation"})
    pad_to_multiple_of: int = field(default=16, metadata={"help": "pad each batch to a multiple of this"})

    def __post_init__(self) -> None:
        if self.max_len is not None and self.max_len < 2:
            raise ValueError(f"RerankerFormat.max_len={self.max_len}; use None (no truncation) or at least 2")
        if self.pad_to_multiple_of < 1:
            raise ValueError(f"RerankerFormat.pad_to_multiple_of={self.pad_to_multiple_of}; must be >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RerankerFormat:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown RerankerFormat fields {unknown}; known: {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the backbone; the head is always trained in full (as PEFT's ``modules_to_save``)."""

    r: int = field(default=8, metadata={"help": "rank; Tevatron's reranker default (training.md §12.1)"})
    alpha: int = field(default=64, metadata={"help": "scaling numerator (alpha / r)"})
    dropout: float = field(default=0.1, metadata={"help": "LoRA dropout"})
    target_modules: tuple[str, ...] = field(default=DEFAULT_LORA_TARGETS, metadata={"help": "module names"})

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "target_modules": list(self.target_modules)}


def format_pair(query: str, passage: str, fmt: RerankerFormat, title: str = "") -> str:
    """The pair string of :class:`RerankerFormat` (EOS is appended as an id by the tokenisation)."""
    body = f"{title.strip()} {passage}" if title and title.strip() else passage
    return f"{fmt.query_prefix}{query}{fmt.separator}{fmt.passage_prefix}{body}"


def resolve_device_dtype(device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """``auto``: CUDA with bfloat16 when a GPU is visible, else CPU with float32."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}; choose one of {list(DTYPES)}")
    resolved = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        return torch.device(resolved), torch.bfloat16 if resolved.startswith("cuda") else torch.float32
    return torch.device(resolved), getattr(torch, dtype)


class PointwiseReranker(nn.Module):
    """Backbone + linear head over the hidden state of each sequence's last real token.

    Build with :meth:`from_backbone` (new head) or :meth:`from_pretrained` (saved reranker). The
    module stays in whatever train/eval mode the caller sets; :meth:`score_pairs` switches to eval
    for its own forward passes and restores the mode afterwards.
    """

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: Any,
        fmt: RerankerFormat,
        *,
        base_model_name_or_path: str,
        head: nn.Linear | None = None,
        lora: LoraSettings | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.format = fmt
        self.base_model_name_or_path = base_model_name_or_path
        self.lora = lora
        self.hidden_size = int(self._backbone_config().hidden_size)
        self.head = head if head is not None else _new_head(self.hidden_size, self._backbone_config())
        if tuple(self.head.weight.shape) != (1, self.hidden_size):
            raise ValueError(f"head weight has shape {tuple(self.head.weight.shape)}, expected (1, {self.hidden_size})")
        eos_id = tokenizer.eos_token_id
        if fmt.append_eos and eos_id is None:
            raise ValueError(
                f"{base_model_name_or_path}: the tokenizer defines no eos_token but the format appends EOS; "
                "use RerankerFormat(append_eos=False) for encoders such as BERT"
            )
        self.eos_id: int | None = int(eos_id) if fmt.append_eos else None
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
        # Any id works: pooling reads the mask, and right padding never precedes a real token.
        self.pad_id = int(pad_id) if pad_id is not None else 0

    # ------------------------------------------------------------------------------------------ build

    @classmethod
    def from_backbone(
        cls,
        model_name_or_path: str,
        *,
        fmt: RerankerFormat | None = None,
        lora: LoraSettings | None = None,
        dtype: str = "auto",
        device: str = "auto",
        attn_implementation: str | None = None,
        seed: int | None = None,
    ) -> PointwiseReranker:
        """A new reranker on a pretrained backbone, with a freshly initialised head.

        The head is drawn like HF's seq-cls ``score`` layer (normal, std ``initializer_range``);
        ``seed`` makes it reproducible. With ``lora`` the backbone is wrapped by PEFT
        (``FEATURE_EXTRACTION``) and only the adapter and the head are trainable.
        """
        from transformers import AutoModel, AutoTokenizer

        torch_device, torch_dtype = resolve_device_dtype(device, dtype)
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        kwargs: dict[str, Any] = {"dtype": torch_dtype}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        backbone = AutoModel.from_pretrained(model_name_or_path, **kwargs)
        if lora is not None:
            backbone = _wrap_lora(backbone, lora, model_name_or_path)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        head = _new_head(int(backbone.config.hidden_size), backbone.config, generator)
        model = cls(
            backbone,
            tokenizer,
            fmt or RerankerFormat(),
            base_model_name_or_path=model_name_or_path,
            head=head,
            lora=lora,
        )
        return model.to(torch_device)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        base_model_name_or_path: str | None = None,
        merge_lora: bool = False,
        is_trainable: bool = False,
        dtype: str = "auto",
        device: str = "auto",
    ) -> PointwiseReranker:
        """Load a directory written by :meth:`save_pretrained` (full backbone or LoRA adapter).

        A LoRA directory loads its adapter on top of ``base_model_name_or_path`` (default: the base
        recorded at save time); ``merge_lora`` folds it into the weights for faster inference, and
        ``is_trainable`` keeps it trainable to resume training. A directory with only a PEFT
        ``SEQ_CLS`` adapter (Tevatron/RaDeR release format) goes through
        :meth:`from_sequence_classification`. The model is returned in eval mode.
        """
        from transformers import AutoModel, AutoTokenizer

        directory = Path(path)
        config_path = directory / RERANKER_CONFIG_NAME
        if not config_path.is_file():
            adapter = _read_adapter_config(directory)
            if adapter is not None and str(adapter.get("task_type", "")).upper() == "SEQ_CLS":
                base = base_model_name_or_path or adapter.get("base_model_name_or_path")
                if not base:
                    raise ValueError(f"{directory}/{ADAPTER_CONFIG_NAME} names no base model; pass the base")
                return cls.from_sequence_classification(base, adapter=str(directory), dtype=dtype, device=device)
            raise FileNotFoundError(
                f"{directory} is not a saved reranker: no {RERANKER_CONFIG_NAME} (written by "
                "PointwiseReranker.save_pretrained) and no SEQ_CLS adapter_config.json"
            )
        config = json.loads(config_path.read_text(encoding="utf-8"))
        version = config.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"{config_path}: schema_version {version!r}, this code reads {SCHEMA_VERSION}")
        fmt = RerankerFormat.from_dict(config["format"])
        torch_device, torch_dtype = resolve_device_dtype(device, dtype)
        base = base_model_name_or_path or config["base_model_name_or_path"]
        lora_config = config.get("lora")
        lora = (
            LoraSettings(**{**lora_config, "target_modules": tuple(lora_config["target_modules"])})
            if lora_config
            else None
        )
        if config["backbone_format"] == "lora":
            from peft import PeftModel

            backbone = AutoModel.from_pretrained(base, dtype=torch_dtype)
            backbone = PeftModel.from_pretrained(backbone, str(directory), is_trainable=is_trainable)
            if merge_lora:
                backbone = backbone.merge_and_unload()
                lora = None
        elif config["backbone_format"] == "full":
            backbone = AutoModel.from_pretrained(str(directory), dtype=torch_dtype)
        else:
            raise ValueError(f"{config_path}: backbone_format {config['backbone_format']!r} is neither lora nor full")
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        head = _new_head(int(config["hidden_size"]), None)
        head.load_state_dict(_load_head(directory / HEAD_WEIGHTS_NAME))
        model = cls(backbone, tokenizer, fmt, base_model_name_or_path=base, head=head, lora=lora)
        model.to(device=torch_device, dtype=torch_dtype)
        model.head.float()  # scores in float32 whatever the backbone dtype
        return model.train(is_trainable)

    @classmethod
    def from_sequence_classification(
        cls,
        model_name_or_path: str,
        *,
        adapter: str | None = None,
        fmt: RerankerFormat | None = None,
        dtype: str = "auto",
        device: str = "auto",
    ) -> PointwiseReranker:
        """Load a HF ``*ForSequenceClassification`` reranker (``num_labels=1``, head ``score``), optionally
        with a PEFT ``SEQ_CLS`` adapter merged in: the format Tevatron and the RaDeR releases use.

        Its backbone and ``score`` head move into this class, which pools by the attention mask, so
        the pad-token pitfall (§12.7) is gone. ``fmt`` defaults to RaDeR's inference string with no
        truncation (``rerank.py`` scored full pairs).
        """
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch_device, torch_dtype = resolve_device_dtype(device, dtype)
        seq_cls = AutoModelForSequenceClassification.from_pretrained(
            model_name_or_path, num_labels=1, dtype=torch_dtype
        )
        if adapter is not None:
            from peft import PeftModel

            seq_cls = PeftModel.from_pretrained(seq_cls, adapter).merge_and_unload()
        score = getattr(seq_cls, "score", None)
        if not isinstance(score, nn.Linear) or score.out_features != 1:
            raise ValueError(
                f"{model_name_or_path}: expected a decoder seq-cls model with a 1-output 'score' head "
                f"(Qwen2/Llama style), found {type(score).__name__}"
            )
        backbone = getattr(seq_cls, seq_cls.base_model_prefix)
        head = nn.Linear(score.in_features, 1, bias=score.bias is not None)
        head.load_state_dict(score.state_dict())
        tokenizer = AutoTokenizer.from_pretrained(
            adapter if adapter and _has_tokenizer(adapter) else model_name_or_path
        )
        model = cls(
            backbone,
            tokenizer,
            fmt or RerankerFormat(max_len=None),
            base_model_name_or_path=model_name_or_path,
            head=head,
        )
        model.to(device=torch_device, dtype=torch_dtype)
        model.head.float()
        return model.eval()

    # ------------------------------------------------------------------------------------------ save

    def save_pretrained(self, output_dir: str | Path, state_dict: Mapping[str, torch.Tensor] | None = None) -> Path:
        """Write backbone (adapter or full), tokenizer, head and ``reranker_config.json`` to ``output_dir``.

        ``state_dict`` is this module's state dict when the caller gathered it (DeepSpeed ZeRO-3:
        the live parameters are shards); keys start with ``backbone.`` and ``head.``. A head that
        is not a full ``(1, hidden)`` tensor is refused instead of saved (the empty-head bug, §12.6).
        """
        from safetensors.torch import save_file

        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = dict(state_dict) if state_dict is not None else self.state_dict()
        head_state = {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
        backbone_state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        weight = head_state.get("weight")
        if weight is None or tuple(weight.shape) != (1, self.hidden_size):
            shape = None if weight is None else tuple(weight.shape)
            raise ValueError(
                f"head weight has shape {shape}, expected (1, {self.hidden_size}); under ZeRO-3 pass the "
                "gathered state_dict to save_pretrained"
            )
        self.backbone.save_pretrained(str(out), state_dict=backbone_state, safe_serialization=True)
        save_file(
            {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in head_state.items()},
            out / HEAD_WEIGHTS_NAME,
        )
        self.tokenizer.save_pretrained(str(out))
        from models.io_utils import atomic_write_json

        atomic_write_json(out / RERANKER_CONFIG_NAME, self.describe())
        logger.info("saved reranker (%s backbone) to %s", "lora" if self.is_lora else "full", out)
        return out

    def describe(self) -> dict[str, Any]:
        """The inference contract written to ``reranker_config.json``."""
        return {
            "schema_version": SCHEMA_VERSION,
            "base_model_name_or_path": self.base_model_name_or_path,
            "backbone_format": "lora" if self.is_lora else "full",
            "lora": self.lora.to_dict() if self.is_lora and self.lora is not None else None,
            "hidden_size": self.hidden_size,
            "head": {"bias": self.head.bias is not None, "pooling": "last non-pad token (attention mask)"},
            "format": dataclasses.asdict(self.format),
            "eos_token": self.tokenizer.eos_token if self.format.append_eos else None,
            "eos_token_id": self.eos_id,
            "dtype": str(next(self.backbone.parameters()).dtype).removeprefix("torch."),
        }

    @property
    def is_lora(self) -> bool:
        return hasattr(self.backbone, "peft_config")

    @property
    def max_positions(self) -> int | None:
        """The backbone's position limit (``max_position_embeddings``), or ``None`` when its config names none."""
        return position_limit(self._backbone_config())

    def with_max_len(self, max_len: int | None) -> PointwiseReranker:
        """Truncate pairs at ``max_len`` tokens (EOS included; ``None``: never) from now on; returns ``self``.

        Inference sets this: the ``max_len`` saved with the model is the training limit, while RaDeR's
        ``rerank.py`` scored whole pairs (spec evaluation.md §5.2).
        """
        self.format = dataclasses.replace(self.format, max_len=max_len)
        return self

    def _backbone_config(self) -> Any:
        return self.backbone.config

    # ------------------------------------------------------------------------------------------ inputs

    def tokenize_pairs(
        self, queries: Sequence[str], passages: Sequence[str], titles: Sequence[str] | None = None
    ) -> list[list[int]]:
        """Token ids per pair: the pair string truncated to ``max_len - 1``, then the EOS id (§12.2)."""
        if len(queries) != len(passages) or (titles is not None and len(titles) != len(passages)):
            raise ValueError(
                f"got {len(queries)} queries, {len(passages)} passages and {titles and len(titles)} titles"
            )
        texts = [
            format_pair(q, p, self.format, titles[i] if titles is not None else "")
            for i, (q, p) in enumerate(zip(queries, passages, strict=True))
        ]
        limit = self.format.max_len
        if limit is not None and self.eos_id is not None:
            limit -= 1
        encoded = self.tokenizer(
            texts, add_special_tokens=True, truncation=limit is not None, max_length=limit, padding=False
        )["input_ids"]
        return [list(ids) + [self.eos_id] if self.eos_id is not None else list(ids) for ids in encoded]

    def collate(self, token_ids: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Right-pad to the longest sequence rounded up to ``pad_to_multiple_of``; CPU tensors."""
        if not token_ids:
            raise ValueError("collate needs at least one sequence")
        multiple = self.format.pad_to_multiple_of
        width = -(-max(len(ids) for ids in token_ids) // multiple) * multiple
        input_ids = torch.full((len(token_ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(token_ids), width), dtype=torch.long)
        for row, ids in enumerate(token_ids):
            input_ids[row, : len(ids)] = torch.tensor(list(ids), dtype=torch.long)
            mask[row, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def encode_pairs(
        self, queries: Sequence[str], passages: Sequence[str], titles: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """:meth:`tokenize_pairs` then :meth:`collate`: a batch ready for :meth:`forward`."""
        return self.collate(self.tokenize_pairs(queries, passages, titles))

    # ------------------------------------------------------------------------------------------ compute

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Relevance logits, float32 ``[batch]``, for training (grad flows) and inference alike.

        For a group loss view them as ``[-1, group_size]`` with the positive first (§12.4).
        """
        device = self.head.weight.device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        extra = {"use_cache": False} if getattr(self._backbone_config(), "use_cache", None) is not None else {}
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        # Index of the last 1 in each mask row: right or left padding alike.
        last = attention_mask.shape[1] - 1 - torch.argmax(attention_mask.flip(dims=[1]), dim=1)
        pooled = hidden[rows, last]
        return self.head(pooled.to(self.head.weight.dtype)).squeeze(-1).float()

    def score_pairs(
        self,
        queries: Sequence[str],
        passages: Sequence[str],
        batch_size: int = 8,
        *,
        titles: Sequence[str] | None = None,
        show_progress: bool = False,
    ) -> list[float]:
        """Scores in input order, without gradients; the same whatever the batch size or batch mates.

        Pairs are batched longest first so each batch pads little; scores do not depend on it
        (causal or masked attention never lets padding reach a real token).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        ids = self.tokenize_pairs(queries, passages, titles)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        scores = [0.0] * len(ids)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                for start in tqdm(range(0, len(order), batch_size), desc="rerank", disable=not show_progress):
                    chunk = order[start : start + batch_size]
                    logits = self(**self.collate([ids[i] for i in chunk])).cpu().tolist()
                    for i, value in zip(chunk, logits, strict=True):
                        scores[i] = float(value)
        finally:
            self.train(was_training)
        return scores

    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        """Checkpoint the backbone; with LoRA the inputs must require grads or no gradient reaches it.

        ``kwargs`` (the HF Trainer passes ``every_n_layers`` and ``offload``) go to the backbone unchanged.
        """
        self.backbone.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs=gradient_checkpointing_kwargs, **kwargs
        )
        if self.is_lora:
            self.backbone.enable_input_require_grads()


# ---------------------------------------------------------------------------------------------- helpers


def position_limit(config: Any) -> int | None:
    """The first of :data:`POSITION_LIMIT_FIELDS` that ``config`` sets to a positive int, else ``None``."""
    for name in POSITION_LIMIT_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def backbone_max_positions(path: str | Path, base_model_name_or_path: str | None = None) -> int | None:
    """The position limit of the backbone a saved reranker directory runs on, from config files only.

    Follows :meth:`PointwiseReranker.from_pretrained`: a full backbone's own config, a LoRA adapter's
    base (``base_model_name_or_path`` or the recorded one), a SEQ_CLS adapter's base model.
    """
    from transformers import AutoConfig

    directory = Path(path)
    config_path = directory / RERANKER_CONFIG_NAME
    if config_path.is_file():
        saved = json.loads(config_path.read_text(encoding="utf-8"))
        lora = saved.get("backbone_format") == "lora"
        source = (base_model_name_or_path or saved["base_model_name_or_path"]) if lora else str(directory)
    else:
        adapter = _read_adapter_config(directory)
        if adapter is None:
            raise FileNotFoundError(
                f"{directory} is not a saved reranker: no {RERANKER_CONFIG_NAME} and no {ADAPTER_CONFIG_NAME}"
            )
        source = base_model_name_or_path or adapter.get("base_model_name_or_path") or ""
        if not source:
            raise ValueError(f"{directory}/{ADAPTER_CONFIG_NAME} names no base model; pass the base")
    return position_limit(AutoConfig.from_pretrained(source))


def _new_head(hidden_size: int, config: Any, generator: torch.Generator | None = None) -> nn.Linear:
    head = nn.Linear(hidden_size, 1, bias=False)
    std = float(getattr(config, "initializer_range", 0.02) or 0.02)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * std)
    return head


def _wrap_lora(backbone: nn.Module, lora: LoraSettings, base: str) -> nn.Module:
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        base_model_name_or_path=base,
        task_type=TaskType.FEATURE_EXTRACTION,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        inference_mode=False,
    )
    return get_peft_model(backbone, config)


def _load_head(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; the reranker directory has no head weights")
    return load_file(str(path))


def _read_adapter_config(directory: Path) -> dict[str, Any] | None:
    path = directory / ADAPTER_CONFIG_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _has_tokenizer(directory: str) -> bool:
    return any((Path(directory) / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
