"""HF ``Trainer`` for the contrastive retriever: loss plumbing, saving and resuming, nothing else.

Overrides, each for one reason:

* ``compute_loss`` - the model returns its own InfoNCE loss; ``loss_is_scaled_for_ga = False`` makes
  ``training_step`` divide it by the gradient-accumulation steps itself (and tells DeepSpeed not to),
  so the division happens exactly once in every set-up (training.md §9.5).
* ``training_step`` - divides the *reported* value by the world size: the loss carries a ``×W`` factor
  for the gradient (DDP/DeepSpeed average it away), the log should show the plain mean CE.
* ``create_scheduler`` - ``--lr_schedule ds_warmup_decay_log`` reproduces DeepSpeed's WarmupDecayLR
  (log warm-up, linear decay; what the paper's ZeRO-3 config ran) on runs without DeepSpeed. It and the
  loss-scaling flag live in :class:`ScheduledTrainer`, shared with the reranker's trainer
  (:mod:`models.training.reranker_trainer`).
* ``_save`` / ``_load_from_checkpoint`` - the model is a wrapper, not a ``PreTrainedModel``: save the PEFT
  adapter (or full backbone) from the possibly ZeRO-3-gathered state dict with the ``encoder.`` prefix
  stripped, plus the tokenizer, ``retriever_config.json`` and ``training_args.bin``; load it back on resume.

Usage::

    trainer = ContrastiveTrainer(model=model, args=training_args, train_dataset=dataset,
                                 data_collator=collator, processing_class=tokenizer, inference_settings=settings)
"""

from __future__ import annotations

import json
import logging
import math
import os
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from models.training.inference_settings import InferenceSettings
from models.training.loss import distributed_world

logger = logging.getLogger(__name__)

ENCODER_PREFIX = "encoder."
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
FULL_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def ds_warmup_decay_log_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier at optimizer step ``step`` (0-based) under DeepSpeed's WarmupDecayLR, log warm-up.

    DeepSpeed starts at ``last_batch_iteration = -1`` (lr = warmup_min_lr = 0) and steps after each
    optimizer step, so step ``s`` runs with ``gamma(s - 1)``: ``ln(i + 1) / ln(W)`` while ``i < W`` with
    ``W = max(2, warmup_steps)``, then ``max(0, (T - i) / max(1, T - W))``.
    """
    iteration = step - 1
    if iteration < 0:
        return 0.0
    warmup = max(2, warmup_steps)
    if iteration < warmup:
        return math.log(iteration + 1) / math.log(warmup)
    return max(0.0, (total_steps - iteration) / max(1.0, total_steps - warmup))


class ScheduledTrainer(Trainer):
    """What the retriever and reranker trainers share: the loss is divided by the gradient-accumulation
    steps exactly once (by ``training_step``), and ``--lr_schedule ds_warmup_decay_log`` is available."""

    loss_is_scaled_for_ga = False

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        if self.lr_scheduler is None and getattr(self.args, "lr_schedule", "auto") == "ds_warmup_decay_log":
            warmup = max(1, self.args.get_warmup_steps(num_training_steps))  # what HF hands DeepSpeed
            factor = partial(ds_warmup_decay_log_factor, warmup_steps=warmup, total_steps=num_training_steps)
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
            self._created_lr_scheduler = True
            logger.info(
                "lr schedule: DeepSpeed WarmupDecayLR (log) emulated, warmup %d of %d", warmup, num_training_steps
            )
        return super().create_scheduler(num_training_steps, optimizer)


class ContrastiveTrainer(ScheduledTrainer):
    """Trainer whose model is a :class:`models.training.model.ContrastiveEncoder`."""

    def __init__(self, *args: Any, inference_settings: InferenceSettings | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inference_settings = inference_settings

    # -------------------------------------------------------------------------------------------- loss

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        outputs = model(query=inputs["query"], passage=inputs["passage"])
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def training_step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        _, world = distributed_world()
        return super().training_step(*args, **kwargs) / world

    # -------------------------------------------------------------------------------------------- saving

    def _save(self, output_dir: str | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        if not self.args.should_save:
            return
        model = self.accelerator.unwrap_model(self.model)
        if state_dict is None:
            state_dict = model.state_dict()
        encoder_state = {k[len(ENCODER_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(ENCODER_PREFIX)}
        if not encoder_state:
            raise RuntimeError(f"no '{ENCODER_PREFIX}*' weights in the state dict to save ({len(state_dict)} keys)")
        logger.info("saving %s to %s", "LoRA adapter" if model.is_peft else "full backbone", output_dir)
        model.encoder.save_pretrained(output_dir, state_dict=encoder_state, safe_serialization=True)
        if model.is_peft:
            check_weights_not_empty(Path(output_dir) / ADAPTER_FILES[0])
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        if self.inference_settings is not None:
            self.inference_settings.save(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        """Load the adapter (or full backbone) written by :meth:`_save` into the wrapper's encoder."""
        wrapper = self.accelerator.unwrap_model(model if model is not None else self.model)
        module = wrapper.encoder if wrapper.is_peft else wrapper.hf_model
        count = load_checkpoint_weights(Path(resume_from_checkpoint), module, wrapper.is_peft)
        logger.info("loaded %d tensors from %s", count, resume_from_checkpoint)


def load_checkpoint_weights(directory: Path, module: torch.nn.Module, lora: bool) -> int:
    """Put a checkpoint's adapter (``lora``: into the PEFT model ``module``) or full weights back; returns the
    number of tensors. Only LoRA keys may be missing from an adapter (the frozen base is not saved)."""
    if lora:
        from peft import set_peft_model_state_dict

        state = read_weights(directory, ADAPTER_FILES)
        result = set_peft_model_state_dict(module, state)
        missing_lora = [k for k in result.missing_keys if "lora_" in k]
        if missing_lora or result.unexpected_keys:
            raise RuntimeError(
                f"{directory}: adapter does not fit the model (missing {missing_lora[:5]}, "
                f"unexpected {result.unexpected_keys[:5]})"
            )
    else:
        state = read_weights(directory, FULL_WEIGHT_FILES)
        module.load_state_dict(state, strict=True)
    return len(state)


def read_weights(directory: Path, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The first of ``names`` found in ``directory`` (or its shards, via ``<name>.index.json``), on CPU."""
    for name in names:
        path = directory / name
        index = directory / f"{name}.index.json"
        if not path.is_file() and index.is_file():
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(_read_weight_file(directory / shard))
            return state
        if path.is_file():
            return _read_weight_file(path)
    raise FileNotFoundError(f"{directory} holds none of {list(names)}; is it a checkpoint of this trainer?")


def _read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    if path.name.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def check_weights_not_empty(path: Path) -> None:
    """Fail loudly if partitioned (ZeRO-3) weights were written as empty tensors (spec §12.6).

    ``path`` is a ``.safetensors`` file; a missing file is left to the loaders to report.
    """
    if not path.is_file():
        return
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        empty = [key for key in keys if math.prod(handle.get_slice(key).get_shape()) == 0]
        if empty or not keys:
            raise RuntimeError(f"{path}: saved tensors are empty ({empty[:5]}); was the state dict gathered?")
