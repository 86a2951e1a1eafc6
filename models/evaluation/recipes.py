"""Which of the paper's rows a run of ours reproduces, read from what the run recorded (not from its name).

A paper row key (``paper_results.json``) spells a recipe::

    bm25                                        BRIGHT's BM25
    gte-qwen2-7b                                an untrained model (its family name)
    rader-qwen2.5-7b-math-llmq-cot-lexical      RaDeR: base model family, training data, query types
    rader-qwen2.5-7b-math-all+bm25+qwenrerank   ... "all" = the four query types; + hybrid; + LLM reranking

:func:`run_recipe` builds the same key from an ``evaluate_bright`` run record: the retriever key, the
model's ``retriever_config.json`` (the base model and the ``training_data`` the trainer copied from the
training set's record: query types and datasets), the hybrid setting, and, for ``rerank`` runs, the
reranker. ``make_tables`` puts a run next to the row with the same key.

Usage::

    run_recipe(json.load(open("outputs/bright/rader-merged/original/aops/config.json")))
    # "rader-qwen2.5-7b-math-llmq-cot-lexical"
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

QUERY_TYPE_ORDER = ("llmq", "cot", "question", "lexical")
DATASET_KEYS = {"MATH": "math", "NUMINA_MATH": "numina", "CHAMP": "champ", "BRIGHT": "bright", "JSON": "json"}


def model_family(name_or_path: str) -> str:
    """``Qwen/Qwen2.5-7B-Instruct`` -> ``qwen2.5-7b``, ``meta-llama/Llama-3.1-8B-Instruct`` -> ``llama3.1-8b``,
    ``Alibaba-NLP/gte-Qwen2-7B-instruct`` -> ``gte-qwen2-7b``: the spelling of the paper's row keys."""
    name = Path(name_or_path.rstrip("/")).name.lower()
    name = re.sub(r"-(instruct|chat|merged)$", "", name)
    name = re.sub(r"^meta-", "", name)
    return re.sub(r"llama-(\d)", r"llama\1", name)


def trained_recipe(base_model: str, training_data: dict[str, Any]) -> str:
    """``rader-<family>-<datasets>-<query types>`` for a model trained here."""
    types = [t for t in QUERY_TYPE_ORDER if t in training_data.get("query_types", [])]
    data = [DATASET_KEYS.get(d, d.lower()) for d in sorted(training_data.get("datasets", []))]
    kinds = "all" if types == list(QUERY_TYPE_ORDER) else "-".join(types)
    return "-".join(["rader", model_family(base_model), *data, kinds])


def model_recipe(model_key: str | None, model_path: str | None) -> str | None:
    """The recipe of a first-stage retriever: BM25, a trained RaDeR model (by its saved settings), or the
    family of an untrained model; ``None`` when nothing says."""
    if model_key == "bm25":
        return "bm25"
    if not model_path:
        return None
    settings = Path(model_path) / "retriever_config.json"
    if settings.is_file():
        data = json.loads(settings.read_text(encoding="utf-8"))
        if data.get("training_data"):
            return trained_recipe(data["base_model_name_or_path"], data["training_data"])
        return "rader-" + model_family(data["base_model_name_or_path"])
    return model_family(model_path)


def run_recipe(record: dict[str, Any]) -> str | None:
    """The recipe an ``evaluate_bright`` or ``rerank`` run record describes (module docstring)."""
    derived = record.get("derived", {})
    if derived.get("recipe"):
        return str(derived["recipe"])
    settings = record.get("settings", {})
    recipe = model_recipe(settings.get("model"), settings.get("model_path"))
    if recipe and settings.get("hybrid_bm25_alpha") is not None:
        recipe += "+bm25"
    return recipe


def reranked_recipe(first_stage: str | None, reranker: str) -> str | None:
    """A first stage's recipe plus its reranker (the paper's LLM reranker is "QwenRerank")."""
    if first_stage is None:
        return None
    return first_stage + ("+qwenrerank" if reranker == "llm" else f"+{reranker}")
