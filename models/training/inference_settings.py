"""``retriever_config.json``: how a trained retriever must be used, saved next to its weights.

Tevatron saves only the adapter, so pooling, prefixes, normalisation, EOS policy and max lengths had to
be re-supplied by hand at inference (training.md §10.1). The trainer writes this file into every
checkpoint and the final output directory, the merge step copies it (with ``merged: true``), and
:meth:`InferenceSettings.encoder_config` turns it into a :class:`models.retrieval.encoders.EncoderConfig`.

Example::

    {"schema_version": 1, "kind": "contrastive_retriever", "base_model_name_or_path": "Qwen/Qwen2.5-7B-Instruct",
     "lora": true, "merged": false, "pooling": "eos", "normalize": true, "temperature": 0.01,
     "query_prefix": "query: ", "passage_prefix": "document: ", "append_eos_token": true,
     "eos_token": "<|im_end|>", "eos_token_id": 151645, "query_max_len": 32, "passage_max_len": 3900,
     "dtype": "bfloat16", "hidden_size": 3584, "text_format": "rader"}

Usage::

    settings = InferenceSettings.load(model_dir)
    encoder = build_encoder(settings.encoder_config(model_dir))
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.io_utils import atomic_write_json

SETTINGS_FILE = "retriever_config.json"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class InferenceSettings:
    """Everything besides the weights that determines a retriever's vectors."""

    base_model_name_or_path: str
    pooling: str
    normalize: bool
    query_prefix: str
    passage_prefix: str
    append_eos_token: bool
    eos_token: str | None
    eos_token_id: int | None
    query_max_len: int
    passage_max_len: int
    temperature: float
    dtype: str
    hidden_size: int | None = None
    lora: bool = True
    merged: bool = False
    text_format: str | None = None
    # What the model was trained on, from the training set's record: {"path", "query_types", "datasets"}.
    training_data: dict[str, Any] | None = None
    kind: str = "contrastive_retriever"
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> InferenceSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source or SETTINGS_FILE}: unknown fields {unknown}; known: {sorted(known)}")
        if data.get("schema_version", SCHEMA_VERSION) > SCHEMA_VERSION:
            raise ValueError(f"{source}: schema_version {data['schema_version']} is newer than this code")
        return cls(**data)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / SETTINGS_FILE
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, directory: str | Path) -> InferenceSettings:
        path = Path(directory) / SETTINGS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the directory was not written by run_src.train_retriever")
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")), str(path))

    def to_text_format(self) -> Any:
        """The :class:`models.retrieval.text_formats.TextFormat` with the trained prefixes and EOS (no instruction)."""
        from models.retrieval.text_formats import TextFormat

        return TextFormat(
            query_prefix=self.query_prefix,
            doc_prefix=self.passage_prefix,
            append_eos=self.append_eos_token,
            eos_token=self.eos_token if self.append_eos_token else None,
            name=self.text_format or "trained",
            source=SETTINGS_FILE,
        )

    def encoder_pooling(self) -> str:
        """``eos`` needs an appended EOS; without one, reading the last token is ``last``."""
        return "last" if self.pooling == "eos" and not self.append_eos_token else self.pooling

    def encoder_config(self, model_dir: str | Path, *, truncate: bool = False, **options: Any) -> Any:
        """An :class:`models.retrieval.encoders.EncoderConfig` for the model at ``model_dir``.

        ``truncate`` applies the training max lengths (RaDeR's evaluation does not truncate).
        """
        from models.retrieval.encoders import EncoderConfig

        return EncoderConfig(
            model_name_or_path=str(model_dir),
            pooling=self.encoder_pooling(),
            text_format=self.to_text_format(),
            normalize=self.normalize,
            query_max_len=self.query_max_len if truncate else None,
            doc_max_len=self.passage_max_len if truncate else None,
            **options,
        )


def matching_preset(query_prefix: str, passage_prefix: str, append_eos: bool) -> str | None:
    """The name of the ``models.retrieval.text_formats`` preset with these prefixes and EOS policy, if any."""
    from models.retrieval.text_formats import PRESETS

    for name, fmt in PRESETS.items():
        if (fmt.query_prefix, fmt.doc_prefix, fmt.append_eos) == (query_prefix, passage_prefix, append_eos):
            return name
    return None


def training_data_of(dataset_path: str | None) -> dict[str, Any] | None:
    """``{"path", "query_types", "datasets"}`` from the record ``build_training_data`` wrote beside a training
    set (``train.jsonl`` -> ``train.config.json``), or ``None`` for a set made elsewhere."""
    if not dataset_path or not dataset_path.endswith(".jsonl"):
        return None
    record_path = Path(dataset_path[: -len(".jsonl")] + ".config.json")
    if not record_path.is_file():
        return None
    derived = json.loads(record_path.read_text(encoding="utf-8")).get("derived", {})
    if "query_types" not in derived:
        return None
    return {"path": dataset_path, "query_types": derived["query_types"], "datasets": derived.get("datasets", [])}
