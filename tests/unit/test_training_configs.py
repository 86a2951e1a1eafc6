"""The shipped training configurations parse with the trainers' own parsers and hold the paper's values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.training.arguments import RERANKER_ARGUMENT_CLASSES, RETRIEVER_ARGUMENT_CLASSES
from models.training.run_setup import parse_arguments
from tests.conftest import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "tevatron_configs"
PAPER_MODELS = {
    "qwen2.5-7b-instruct.json": "Qwen/Qwen2.5-7B-Instruct",
    "gte-qwen2-7b-instruct.json": "Alibaba-NLP/gte-Qwen2-7B-instruct",
    "llama-3.1-8b-instruct.json": "meta-llama/Llama-3.1-8B-Instruct",
    "qwen2.5-3b-instruct.json": "Qwen/Qwen2.5-3B-Instruct",
    "qwen2.5-14b-instruct.json": "Qwen/Qwen2.5-14B-Instruct",
    "reranker-qwen2.5-7b-instruct.json": "Qwen/Qwen2.5-7B-Instruct",
    "reranker-gte-qwen2-7b-instruct.json": "Alibaba-NLP/gte-Qwen2-7B-instruct",
}
# Parsing on a machine without a GPU: the same overrides scripts/05_train.sh adds there.
CPU_OVERRIDES = ["--use_cpu", "true", "--bf16", "false", "--deepspeed", ""]


def _parse(config: Path, *extra: str) -> tuple:
    from transformers import HfArgumentParser

    classes = RERANKER_ARGUMENT_CLASSES if config.name.startswith("reranker-") else RETRIEVER_ARGUMENT_CLASSES
    argv = ["--config", str(config), "--dataset_path", "train.jsonl", "--output_dir", "out", *extra]
    return parse_arguments(HfArgumentParser(classes), argv)


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
def test_paper_configs_carry_table_10(name: str) -> None:
    raw = json.loads((CONFIG_DIR / name).read_text())
    assert raw["bf16"] is True and raw["gradient_checkpointing"] is True
    assert raw["deepspeed"] == "tevatron_configs/ds_zero3_config.json" and (REPO_ROOT / raw["deepspeed"]).is_file()
    parts = _parse(CONFIG_DIR / name, *CPU_OVERRIDES)
    model_args, lora_args, data_args, *_, training = parts
    assert model_args.model_name_or_path == PAPER_MODELS[name]
    assert (training.per_device_train_batch_size, training.gradient_accumulation_steps) == (2, 16)
    assert (training.learning_rate, training.num_train_epochs, training.warmup_steps) == (1e-4, 1, 28)
    assert training.ddp_timeout == 1800 and training.seed == 42
    assert data_args.train_group_size == 12
    assert lora_args.lora and (lora_args.lora_alpha, lora_args.lora_dropout) == (64, 0.1)
    assert lora_args.lora_r == (8 if name.startswith("reranker-") else 16)
    assert set(lora_args.lora_target_modules.split(",")) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "down_proj", "up_proj", "gate_proj"}  # fmt: skip
    if not name.startswith("reranker-"):
        text = parts[3]
        assert (model_args.pooling, model_args.normalize, model_args.temperature) == ("eos", True, 0.01)
        assert (text.query_max_len, text.passage_max_len, text.append_eos_token) == (32, 3900, True)


def test_cpu_config_and_later_flags_win() -> None:
    model_args, _, data_args, text, training = _parse(
        CONFIG_DIR / "smollm2-135m-cpu.json", "--model_name_or_path", "smollm2", "--train_group_size", "4"
    )
    assert training.use_cpu and not training.bf16 and not training.deepspeed and not training.gradient_checkpointing
    assert model_args.model_name_or_path == "smollm2" and data_args.train_group_size == 4
    assert (model_args.pooling, model_args.temperature, text.append_eos_token) == ("eos", 0.01, True)


def test_every_shipped_json_is_known() -> None:
    shipped = {p.name for p in CONFIG_DIR.glob("*.json")}
    assert shipped == set(PAPER_MODELS) | {"smollm2-135m-cpu.json", "ds_zero2_config.json", "ds_zero3_config.json"}
