"""HF ``Trainer`` for the pointwise reranker: grouped cross-entropy, saving and resuming, nothing else.

The model is a :class:`models.reranking.pointwise.PointwiseReranker`; a batch is ``B`` groups of ``G`` pairs
(group-major, positive first, :class:`models.training.collator.RerankerCollator`). Overrides, each for
one reason:

* ``compute_loss`` - logits ``[B*G]`` viewed as ``[-1, G]``, cross-entropy with target 0, mean over the
  groups (training.md §12.4). No in-batch negatives and no gather: each process's loss is already the mean
  of its own groups, so DDP/DeepSpeed gradient averaging gives the mean over all of them. The view follows
  the tensor, not ``--per_device_train_batch_size``, so a short last batch is grouped right (the reference
  bug); the head has one output (the ``num_labels=2`` bug does not arise).
* ``_save`` - always the reranker's own ``save_pretrained``: PEFT adapter (or full backbone) + head as
  safetensors + tokenizer + ``reranker_config.json``, from the state dict HF hands over, which under
  ZeRO-3 is the gathered 16-bit one (``stage3_gather_16bit_weights_on_model_save``); every written tensor
  is checked to be non-empty (training.md §12.6: the reference could save partitioned, empty weights).
* ``_load_from_checkpoint`` - resume: the adapter (or full backbone) and the head back into the model; HF
  restores optimizer, scheduler, step count and RNG states around it.
* ``create_scheduler`` - inherited from :class:`models.training.trainer.ScheduledTrainer`
  (``--lr_schedule ds_warmup_decay_log``).

Usage::

    trainer = RerankerTrainer(model=reranker, args=training_args, train_dataset=dataset,
                              data_collator=RerankerCollator(reranker.encode_pairs, G), group_size=G)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from models.reranking.pointwise import HEAD_WEIGHTS_NAME
from models.training.loss import grouped_ce_loss
from models.training.trainer import (
    ScheduledTrainer,
    check_weights_not_empty,
    load_checkpoint_weights,
    read_weights,
)

logger = logging.getLogger(__name__)

BACKBONE_PREFIX, HEAD_PREFIX = "backbone.", "head."


class RerankerTrainer(ScheduledTrainer):
    """Trainer whose model is a :class:`models.reranking.pointwise.PointwiseReranker`."""

    def __init__(self, *args: Any, group_size: int, **kwargs: Any) -> None:
        if group_size < 2:
            raise ValueError(f"group_size must be >= 2 (1 positive + negatives), got {group_size}")
        model = kwargs.get("model", args[0] if args else None)
        if model is not None and getattr(model, "config", None) is None:
            # HF reads model.config (DeepSpeed "auto" bucket sizes from hidden_size, use_cache); the
            # reranker is a plain nn.Module, so point it at its backbone's config.
            model.config = model.backbone.config
        super().__init__(*args, **kwargs)
        self.group_size = group_size

    # -------------------------------------------------------------------------------------------- loss

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        loss = grouped_ce_loss(logits, self.group_size)
        return (loss, {"logits": logits.view(-1, self.group_size)}) if return_outputs else loss

    # -------------------------------------------------------------------------------------------- saving

    def _save(self, output_dir: str | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        if not self.args.should_save:
            return
        model = self.accelerator.unwrap_model(self.model)
        if state_dict is None:
            state_dict = model.state_dict()
        if not any(key.startswith(HEAD_PREFIX) for key in state_dict):
            raise RuntimeError(
                f"no reranker head in the state dict to save ({len(state_dict)} keys); under DeepSpeed ZeRO-3 set "
                '"stage3_gather_16bit_weights_on_model_save": true so the weights are gathered before saving'
            )
        logger.info("saving reranker (%s backbone + head) to %s", "LoRA" if model.is_lora else "full", output_dir)
        model.save_pretrained(output_dir, state_dict=state_dict)
        written = [Path(output_dir) / HEAD_WEIGHTS_NAME, *sorted(Path(output_dir).glob("*.safetensors"))]
        for path in written:
            check_weights_not_empty(path)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        """Load the adapter (or full backbone) and the head written by :meth:`_save` into the model."""
        reranker = self.accelerator.unwrap_model(model if model is not None else self.model)
        directory = Path(resume_from_checkpoint)
        count = load_checkpoint_weights(directory, reranker.backbone, reranker.is_lora)
        reranker.head.load_state_dict(read_weights(directory, (HEAD_WEIGHTS_NAME,)), strict=True)
        logger.info("loaded %d backbone tensors and the head from %s", count, directory)
