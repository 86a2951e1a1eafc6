"""The shared-weight bi-encoder trained by the retriever stage: backbone, LoRA, pooling, loss.

Owns building the backbone (bare ``AutoModel``, training.md §9.1) with optional PEFT LoRA (§9.6),
pooling with the inference encoders' own function (``models.retrieval.encoders.pool_hidden_states``, so training and
serving read the same token), optional L2 normalisation, and the InfoNCE loss with the cross-device
gather (:mod:`models.training.loss`). Similarity and loss are computed in float32 whatever the
backbone dtype (DEVIATION: Tevatron scores in the bf16 model dtype; the maths is the same, the rounding
of ``cos / 0.01`` logits is not).

Usage::

    model = ContrastiveEncoder.build(model_args, lora_args, dtype=torch.bfloat16, gradient_checkpointing=True)
    out = model(query=batch["query"], passage=batch["passage"])      # out.loss, out.scores
    reps = model.encode(batch["query"])                               # [B, d]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.utils import ModelOutput

from models.retrieval.encoders import pool_hidden_states
from models.training.arguments import LoraArguments, ModelArguments
from models.training.loss import info_nce_loss

logger = logging.getLogger(__name__)


@dataclass
class ContrastiveOutput(ModelOutput):
    """What one forward returns; ``loss``/``scores`` only when both sides were given. A ``ModelOutput``
    (an ordered dict), so DeepSpeed's ZeRO-3 hooks and the HF Trainer see the tensors inside."""

    loss: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    q_reps: torch.Tensor | None = None
    p_reps: torch.Tensor | None = None


def resolve_attn_implementation(requested: str | None) -> str | None:
    """``flash_attention_2`` only when flash-attn is importable and CUDA is present; else ``sdpa``."""
    if requested != "flash_attention_2":
        return requested
    import importlib.util

    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return requested
    logger.warning("flash_attention_2 needs flash-attn and a CUDA device; using sdpa (training.md §9.7)")
    return "sdpa"


def load_backbone(
    model_name_or_path: str,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str | None = "sdpa",
    cache_dir: str | None = None,
) -> nn.Module:
    """The bare ``AutoModel`` (no LM head) in ``dtype``; pad id 0 when the config has none, as Tevatron."""
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(
        model_name_or_path,
        dtype=dtype,
        attn_implementation=resolve_attn_implementation(attn_implementation),
        cache_dir=cache_dir,
    )
    if backbone.config.pad_token_id is None:
        backbone.config.pad_token_id = 0
    return backbone


def add_lora(backbone: nn.Module, lora_args: LoraArguments, base_name: str, gradient_checkpointing: bool) -> nn.Module:
    """Wrap ``backbone`` with a new trainable LoRA adapter, or the one at ``--lora_name_or_path``."""
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model

    if gradient_checkpointing:
        # Checkpointed blocks need an input that requires grad, or the frozen embeddings cut the graph.
        backbone.enable_input_require_grads()
    if lora_args.lora_name_or_path:
        model = PeftModel.from_pretrained(backbone, lora_args.lora_name_or_path, is_trainable=True)
        logger.info("continuing LoRA adapter %s", lora_args.lora_name_or_path)
    else:
        config = LoraConfig(
            base_model_name_or_path=base_name,
            task_type=TaskType.FEATURE_EXTRACTION,
            r=lora_args.lora_r,
            lora_alpha=lora_args.lora_alpha,
            lora_dropout=lora_args.lora_dropout,
            target_modules=lora_args.target_modules,
            bias="none",
            inference_mode=False,
        )
        model = get_peft_model(backbone, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("LoRA: %d trainable of %d parameters (%.3f%%)", trainable, total, 100 * trainable / max(1, total))
    return model


class ContrastiveEncoder(nn.Module):
    """Encoder + pooling + normalisation + InfoNCE; the only module the trainer sees."""

    def __init__(self, encoder: nn.Module, pooling: str, normalize: bool, temperature: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.normalize = normalize
        self.temperature = temperature

    @classmethod
    def build(
        cls,
        model_args: ModelArguments,
        lora_args: LoraArguments,
        dtype: torch.dtype = torch.float32,
        gradient_checkpointing: bool = False,
    ) -> ContrastiveEncoder:
        backbone = load_backbone(
            model_args.model_name_or_path, dtype, model_args.attn_implementation, model_args.cache_dir
        )
        encoder = (
            add_lora(backbone, lora_args, model_args.model_name_or_path, gradient_checkpointing)
            if lora_args.enabled
            else backbone
        )
        return cls(encoder, model_args.pooling, model_args.normalize, model_args.temperature)

    @property
    def hf_model(self) -> nn.Module:
        """The transformers model under the PEFT wrapper (or the backbone itself)."""
        get_base = getattr(self.encoder, "get_base_model", None)
        return get_base() if callable(get_base) else self.encoder

    @property
    def config(self) -> Any:
        """The backbone's config (HF's DeepSpeed integration sizes its buckets from ``hidden_size``)."""
        return self.hf_model.config

    @property
    def is_peft(self) -> bool:
        from peft import PeftModel

        return isinstance(self.encoder, PeftModel)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, **kwargs: Any) -> None:
        """Called by the HF Trainer for ``--gradient_checkpointing``; forwarded to the transformers model."""
        self.hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gradient_checkpointing_kwargs, **kwargs)

    def encode(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled (and normalised) float32 representations ``[n, d]``."""
        hidden = self.encoder(
            input_ids=features["input_ids"], attention_mask=features["attention_mask"], use_cache=False
        ).last_hidden_state
        reps = pool_hidden_states(hidden, features["attention_mask"], self.pooling).float()
        if self.normalize:
            reps = torch.nn.functional.normalize(reps, p=2, dim=-1)
        return reps

    def forward(
        self, query: dict[str, torch.Tensor] | None = None, passage: dict[str, torch.Tensor] | None = None
    ) -> ContrastiveOutput:
        q_reps = self.encode(query) if query is not None else None
        p_reps = self.encode(passage) if passage is not None else None
        if q_reps is None or p_reps is None:
            return ContrastiveOutput(q_reps=q_reps, p_reps=p_reps)
        if not self.training:
            scores = q_reps @ p_reps.T
            return ContrastiveOutput(scores=scores, q_reps=q_reps, p_reps=p_reps)
        loss, scores = info_nce_loss(q_reps, p_reps, self.temperature)
        return ContrastiveOutput(loss=loss, scores=scores, q_reps=q_reps, p_reps=p_reps)
