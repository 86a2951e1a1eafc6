"""Stage 5b: train a pointwise reranker with LoRA and a grouped cross-entropy, Tevatron-compatible (training.md §12).

    python -m run_src.train_reranker --output_dir out/rader_reranker --model_name_or_path Qwen/Qwen2.5-7B-Instruct \
        --lora --lora_target_modules q_proj,k_proj,v_proj,o_proj,down_proj,up_proj,gate_proj \
        --dataset_path train.jsonl --query_prefix "query: " --passage_prefix "document: " --append_eos_token \
        --bf16 --per_device_train_batch_size 2 --gradient_accumulation_steps 16 --gradient_checkpointing \
        --train_group_size 12 --learning_rate 1e-4 --rerank_max_len 512 --num_train_epochs 1 --warmup_steps 28
    deepspeed --include localhost:0,1 --module run_src.train_reranker --deepspeed tevatron_configs/ds_zero3_config.json ...

Flags are Tevatron's reranker flags (``tevatron.reranker.driver.train``; classes in
``models/training/arguments.py``), so the paper's command runs unchanged; ``--lora_r`` defaults to 8 as there.
The model is :class:`models.reranking.pointwise.PointwiseReranker` (backbone + one-output linear head on the last
real token); data, group sampling, run set-up and the LR schedule are the retriever trainer's.

The output directory gets ``train_config.json`` (every option) before training, ``checkpoint-<step>/`` every
``--save_steps`` (resumable: step count, LR schedule, optimizer and weights continue), and at the end the
reranker (``adapter_config.json`` + ``adapter_model.safetensors`` or the full backbone,
``reranker_head.safetensors``, the tokenizer, ``reranker_config.json`` with the pair format) and ``_SUCCESS``.
``python -m run_src.rerank --reranker pointwise --model <output_dir>`` uses it as it is.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from models.stage import EXIT_USAGE

logger = logging.getLogger(__name__)

STAGE = "train_reranker"


@dataclass
class RunResult:
    """What :func:`run` ends with: the exit status and, after training, the trainer (its ``model`` is the
    trained reranker in memory)."""

    exit_code: int
    trainer: Any = None


def reranker_format(text_args: Any) -> Any:
    """The :class:`models.reranking.pointwise.RerankerFormat` the flags describe (saved with the model)."""
    from models.reranking.pointwise import RerankerFormat

    return RerankerFormat(
        query_prefix=text_args.query_prefix,
        passage_prefix=text_args.passage_prefix,
        separator=text_args.pair_separator,
        max_len=text_args.rerank_max_len or None,
        append_eos=text_args.append_eos_token,
        pad_to_multiple_of=text_args.pad_to_multiple_of,
    )


def build_reranker(model_args: Any, lora_args: Any, text_args: Any, training_args: Any) -> Any:
    """Backbone in the training precision, optional LoRA, a new head drawn with ``--seed``."""
    from models.reranking.pointwise import LoraSettings, PointwiseReranker
    from models.training.model import resolve_attn_implementation
    from run_src.train_retriever import model_dtype

    lora = (
        LoraSettings(
            r=lora_args.lora_r,
            alpha=lora_args.lora_alpha,
            dropout=lora_args.lora_dropout,
            target_modules=tuple(lora_args.target_modules),
        )
        if lora_args.lora
        else None
    )
    model = PointwiseReranker.from_backbone(
        model_args.model_name_or_path,
        fmt=reranker_format(text_args),
        lora=lora,
        dtype=str(model_dtype(training_args)).removeprefix("torch."),
        device="cpu",  # the Trainer (or DeepSpeed) places it
        attn_implementation=resolve_attn_implementation(model_args.attn_implementation),
        seed=training_args.seed,
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("reranker: %d trainable of %d parameters (%s backbone)", trainable, total, "LoRA" if lora else "full")
    return model


def run(argv: Sequence[str] | None = None) -> RunResult:
    """Parse, check, train and save; exit code 2 for bad flags or input, before any compute."""
    from models.training.arguments import RERANKER_ARGUMENT_CLASSES
    from models.training.collator import RerankerCollator
    from models.training.dataset import RerankerTrainDataset
    from models.training.reranker_trainer import RerankerTrainer
    from models.training.run_setup import record_training_run, start_training_run, train_and_mark_success

    try:
        training = start_training_run(RERANKER_ARGUMENT_CLASSES, argv, STAGE)
        model = build_reranker(training.model_args, training.lora_args, training.text_args, training.training_args)
    except (ValueError, FileNotFoundError) as err:
        logger.error("%s", err)
        return RunResult(EXIT_USAGE)
    except OSError as err:  # transformers' message for a model it cannot find or read
        logger.error("--model_name_or_path %s cannot be loaded: %s", training.model_args.model_name_or_path, err)
        return RunResult(EXIT_USAGE)
    args, data_args = training.training_args, training.data_args
    dataset = RerankerTrainDataset(training.records, data_args, seed=args.seed, corpus=training.corpus)
    trainer = RerankerTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=RerankerCollator(model.encode_pairs, data_args.train_group_size),
        group_size=data_args.train_group_size,
    )
    dataset.set_trainer(trainer)
    record_training_run(training, trainer, dataset, reranker=model.describe())
    train_and_mark_success(trainer, args.output_dir, training.resume)
    return RunResult(0, trainer)


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv).exit_code


if __name__ == "__main__":
    sys.exit(main())
