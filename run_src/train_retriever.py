"""Stage 5a: train a dense retriever with LoRA and InfoNCE, Tevatron-compatible (training.md §8-§10, §15).

    python -m run_src.train_retriever --output_dir out/rader --model_name_or_path Qwen/Qwen2.5-7B-Instruct \
        --lora --pooling eos --append_eos_token --normalize --temperature 0.01 --dataset_path train.jsonl ...
    python -m run_src.train_retriever --config tevatron_configs/qwen2.5-7b-instruct.json --output_dir out/rader \
        --dataset_name Raderspace/MATH_qCoT_LLMquery_questionasquery_lexicalquery
    deepspeed --include localhost:0,1 --module run_src.train_retriever --deepspeed tevatron_configs/ds_zero3_config.json ...
    torchrun --nproc_per_node 2 -m run_src.train_retriever ...

Flags are Tevatron v2's (``models/training/arguments.py``); the paper's README command runs unchanged.
The output directory gets ``train_config.json`` (every option) before training, ``checkpoint-<step>/`` every
``--save_steps``, and at the end the LoRA adapter (``adapter_config.json``, ``adapter_model.safetensors``),
the tokenizer, ``retriever_config.json`` (pooling, prefixes, EOS, normalisation, max lengths) and
``_SUCCESS``. ``python -m run_src.merge_lora`` turns it into a servable checkpoint.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from models.stage import EXIT_USAGE

logger = logging.getLogger(__name__)

STAGE = "train_retriever"


def model_dtype(training_args: Any) -> Any:
    """Weights are loaded in the training precision (Tevatron: bf16 with --bf16, fp16 with --fp16)."""
    import torch

    if training_args.bf16:
        return torch.bfloat16
    if training_args.fp16:
        return torch.float16
    return torch.float32


def load_tokenizer(name_or_path: str, cache_dir: str | None = None) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path, cache_dir=cache_dir)
    tokenizer.padding_side = "right"  # the collator pads right; pooling reads the last real token
    return tokenizer


def inference_settings(
    model_args: Any, lora_args: Any, data_args: Any, text_args: Any, tokenizer: Any, dtype: Any, hidden_size: int | None
) -> Any:
    from models.training.inference_settings import InferenceSettings, matching_preset, training_data_of

    return InferenceSettings(
        base_model_name_or_path=model_args.model_name_or_path,
        pooling=model_args.pooling,
        normalize=model_args.normalize,
        query_prefix=text_args.query_prefix,
        passage_prefix=text_args.passage_prefix,
        append_eos_token=text_args.append_eos_token,
        eos_token=tokenizer.eos_token,
        eos_token_id=tokenizer.eos_token_id,
        query_max_len=text_args.query_max_len,
        passage_max_len=text_args.passage_max_len,
        temperature=model_args.temperature,
        dtype=str(dtype).replace("torch.", ""),
        hidden_size=hidden_size,
        lora=lora_args.enabled,
        text_format=matching_preset(text_args.query_prefix, text_args.passage_prefix, text_args.append_eos_token),
        training_data=training_data_of(data_args.dataset_path),
    )


def main(argv: Sequence[str] | None = None) -> int:
    from models.training.arguments import RETRIEVER_ARGUMENT_CLASSES
    from models.training.collator import ContrastiveCollator
    from models.training.dataset import TrainDataset
    from models.training.model import ContrastiveEncoder
    from models.training.run_setup import record_training_run, start_training_run, train_and_mark_success
    from models.training.trainer import ContrastiveTrainer

    try:
        run = start_training_run(RETRIEVER_ARGUMENT_CLASSES, argv, STAGE)
        model_args, text_args = run.model_args, run.text_args
        tokenizer = load_tokenizer(model_args.tokenizer_name or model_args.model_name_or_path, model_args.cache_dir)
    except (ValueError, FileNotFoundError) as err:
        logger.error("%s", err)
        return EXIT_USAGE
    training_args = run.training_args
    dataset = TrainDataset(run.records, run.data_args, text_args, seed=training_args.seed, corpus=run.corpus)
    dtype = model_dtype(training_args)
    model = ContrastiveEncoder.build(model_args, run.lora_args, dtype, training_args.gradient_checkpointing)
    hidden = getattr(model.hf_model.config, "hidden_size", None)
    settings = inference_settings(model_args, run.lora_args, run.data_args, text_args, tokenizer, dtype, hidden)
    collator = ContrastiveCollator(
        tokenizer,
        query_max_len=text_args.query_max_len,
        passage_max_len=text_args.passage_max_len,
        append_eos=text_args.append_eos_token,
        pad_to_multiple_of=text_args.pad_to_multiple_of,
    )
    trainer = ContrastiveTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
        inference_settings=settings,
    )
    dataset.set_trainer(trainer)
    record_training_run(run, trainer, dataset, inference_settings=settings.to_dict())
    train_and_mark_success(trainer, training_args.output_dir, run.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
