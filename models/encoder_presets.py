"""Command-line encoder flags -> :class:`EncoderConfig`, shared by every stage that builds a dense encoder.

The retriever server (``run_src.serve_retriever``) and the corpus encoder (``run_src.encode_corpus``)
take the same ``--model/--text_format/--pooling/--batch_size/--*_max_len/--encoder_backend/--encoder_url``
flags. If each stage resolved them itself, a default could drift (say, the pooling picked for a format
without EOS) and a server would then refuse, or worse silently miss, the cache the encoding stage wrote,
because the cache metadata would differ. This module is the one place those defaults live.

Usage::

    from models.encoder_presets import default_model_name, encoder_config_from_flags
    config = encoder_config_from_flags(model="path/to/rader", text_format="rader")
    cache_name = default_model_name("path/to/rader", "rader")     # "rader-rader"
"""

from __future__ import annotations

from pathlib import Path

from models.encoders import EncoderConfig
from models.text_formats import get_format


def default_pooling(text_format: str) -> str:
    """``eos`` when the preset appends an EOS token (RaDeR/RepLLaMA decoders), else ``mean`` (sentence encoders)."""
    return "eos" if get_format(text_format).append_eos else "mean"


def default_model_name(model: str, text_format: str) -> str:
    """The cache directory name: the model's folder name plus the text format, because the format
    changes every document vector (``/ckpt/rader-7b/``, ``rader`` -> ``rader-7b-rader``).

    An HF id keeps only the part after the slash (``org/model`` -> ``model``).
    """
    name = Path(model.rstrip("/")).name
    if not name:
        raise ValueError(f"cannot derive a cache name from model {model!r}; pass --model_name")
    return f"{name}-{text_format}"


def encoder_config_from_flags(
    model: str,
    text_format: str = "rader",
    pooling: str = "",
    *,
    query_max_len: int | None = None,
    doc_max_len: int | None = None,
    batch_size: int = 8,
    encoder_backend: str = "transformers",
    encoder_url: str | None = None,
) -> EncoderConfig:
    """Resolve the shared encoder flags; an empty ``pooling`` means :func:`default_pooling`.

    Raises ``ValueError`` for an unknown ``text_format`` (naming the presets) or an inconsistent
    combination (``EncoderConfig`` checks, e.g. ``eos`` pooling with a format that appends no EOS).
    """
    if not model:
        raise ValueError("a dense encoder needs --model (a model directory or HF id)")
    return EncoderConfig(
        model_name_or_path=model,
        pooling=pooling or default_pooling(text_format),  # ValueError naming the presets on a typo
        text_format=get_format(text_format),
        query_max_len=query_max_len,
        doc_max_len=doc_max_len,
        batch_size=batch_size,
        backend=encoder_backend,
        server_url=encoder_url,
    )
