"""Stage 5c: merge a trained LoRA retriever into a full checkpoint that vLLM, sentence-transformers and
our evaluation load directly (training.md §10.3).

    python -m run_src.merge_lora --adapter out/rader --output_dir out/rader-merged [--dtype bfloat16]

Steps: read ``retriever_config.json`` (the inference settings the trainer saved; flags may fill them in for
an adapter trained elsewhere), load the base ``AutoModel`` in float32, apply the adapter and embed a few
probe texts, ``merge_and_unload`` (W + alpha/r * B A), cast to ``--dtype``, embed the probes again and refuse
the result when any vector is non-finite or a cosine to the unmerged vector is below ``--min_cosine``
(0.999; the Tevatron example's fp16 cast produced NaN embeddings, §10.3). Written to ``--output_dir``:

* the merged bare model (``architectures: ["Qwen2Model"]`` etc.) as safetensors, and the tokenizer;
* ``retriever_config.json`` with ``merged: true``;
* sentence-transformers files: ``modules.json`` (Transformer -> Pooling -> Normalize),
  ``sentence_bert_config.json`` (text-only input; the tokenizer appends EOS for ST only, through
  ``add_eos_token``, so the plain tokenizer that vLLM and our encoders use is unchanged),
  ``1_Pooling/config.json`` (last-token pooling for eos/last), ``2_Normalize/``,
  ``config_sentence_transformers.json`` (prompts ``query``/``document`` = the training prefixes);
* ``merge_report.json`` (probe cosines) and ``_SUCCESS`` last.

Serve it with ``servers/embedding_server.sh OUT`` (last-token pooling, normalised), evaluate it with
``python -m run_src.evaluate_bright --model rader --model_path OUT --text_format <text_format in
retriever_config.json>``, or ``SentenceTransformer(OUT).encode_query(...)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.retrieval.model_identity import model_fingerprint
from models.stage import (
    SUCCESS_MARKER,
    StageRecord,
    add_config_argument,
    check_rerun,
    configure_logging,
    is_finished,
    mark_success,
    parse_flags,
    require_flags,
    run_stage,
)

logger = logging.getLogger(__name__)

STAGE = "merge_lora"
RECORD_NAME = "merge_config.json"
INFORMATIONAL = frozenset({"overwrite", "max_shard_size"})

DTYPES = ("bfloat16", "float32", "float16")
PROBE_TEXTS = (
    "Fermat's little theorem: a^p is congruent to a modulo a prime p.",
    "How many ways are there to put 10 identical balls into 3 distinct boxes?",
    "The sum of the interior angles of a convex polygon with n sides is (n - 2) * 180 degrees.",
    "Find all real x such that x^2 - 5x + 6 = 0.",
)
ST_POOLING = {"eos": "lasttoken", "last": "lasttoken", "mean": "mean", "cls": "cls"}


@dataclass(frozen=True)
class MergeConfig:
    adapter: str
    output_dir: str
    base_model: str | None
    dtype: str
    overwrite: bool
    min_cosine: float
    max_shard_size: str
    pooling: str | None
    query_prefix: str | None
    passage_prefix: str | None
    append_eos_token: bool | None
    normalize: bool | None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m run_src.{STAGE}", description=__doc__.splitlines()[0])
    add_config_argument(parser)
    parser.add_argument("--adapter", help="training output dir or checkpoint-* with the adapter (required)")
    parser.add_argument("--output_dir", help="where the merged model goes: empty, or this merge's own (required)")
    parser.add_argument("--base_model", default=None, help="base model (default: adapter_config.json's)")
    parser.add_argument("--dtype", default="bfloat16", choices=DTYPES, help="saved dtype (fp16 risks NaN, §10.3)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output_dir whatever it holds")
    parser.add_argument("--min_cosine", type=float, default=0.999, help="merged vs unmerged probe agreement")
    parser.add_argument("--max_shard_size", default="5GB", help="safetensors shard size")
    override = parser.add_argument_group("inference settings (only for adapters without retriever_config.json)")
    override.add_argument("--pooling", default=None, choices=sorted(ST_POOLING))
    override.add_argument("--query_prefix", default=None)
    override.add_argument("--passage_prefix", default=None)
    override.add_argument("--append_eos_token", default=None, action=argparse.BooleanOptionalAction)
    override.add_argument("--normalize", default=None, action=argparse.BooleanOptionalAction)
    return parser


def parse_config(argv: Sequence[str] | None = None) -> MergeConfig:
    parser = build_parser()
    args = parse_flags(parser, None if argv is None else list(argv))
    require_flags(parser, args, "adapter", "output_dir")
    return MergeConfig(**{k: v for k, v in vars(args).items() if k != "config"})


# ------------------------------------------------------------------------------------------------ settings


def resolve_settings(config: MergeConfig, base_model: str, tokenizer: Any) -> Any:
    """The adapter's ``retriever_config.json``, with any override flags applied."""
    from models.training.inference_settings import SETTINGS_FILE, InferenceSettings, matching_preset

    overrides = {
        key: value
        for key in ("pooling", "query_prefix", "passage_prefix", "append_eos_token", "normalize")
        if (value := getattr(config, key)) is not None
    }
    path = Path(config.adapter) / SETTINGS_FILE
    if path.is_file():
        settings = InferenceSettings.load(config.adapter)
        if overrides:
            logger.warning("overriding %s from the flags: %s", SETTINGS_FILE, overrides)
            settings = dataclasses.replace(settings, **overrides)
    else:
        missing = [
            k
            for k in ("pooling", "query_prefix", "passage_prefix", "append_eos_token", "normalize")
            if k not in overrides
        ]
        if missing:
            raise ValueError(
                f"{path} not found (adapter not trained by run_src.train_retriever); pass "
                + " ".join(f"--{k}" for k in missing)
            )
        settings = InferenceSettings(
            base_model_name_or_path=base_model,
            eos_token=tokenizer.eos_token,
            eos_token_id=tokenizer.eos_token_id,
            query_max_len=0,
            passage_max_len=0,
            temperature=0.0,
            dtype="unknown",
            **overrides,
        )
    text_format = matching_preset(settings.query_prefix, settings.passage_prefix, settings.append_eos_token)
    return dataclasses.replace(settings, base_model_name_or_path=base_model, text_format=text_format)


# ------------------------------------------------------------------------------------------------ embedding


def embed(model: Any, tokenizer: Any, settings: Any, texts: Sequence[str]) -> Any:
    """Vectors for ``texts`` exactly as the trainer's encoder computes them (float32 numpy)."""
    import torch

    from models.training.collator import pad_batch, pad_token_id, tokenize_texts
    from models.training.model import ContrastiveEncoder

    encoder = ContrastiveEncoder(model, settings.pooling, settings.normalize, temperature=1.0).eval()
    ids = tokenize_texts(tokenizer, texts, 1_000_000, settings.append_eos_token)
    with torch.inference_mode():
        return encoder.encode(pad_batch(ids, pad_token_id(tokenizer), None)).cpu().numpy()


def probe_texts(settings: Any) -> list[str]:
    return [settings.query_prefix + t for t in PROBE_TEXTS[:2]] + [settings.passage_prefix + t for t in PROBE_TEXTS]


def cosines(a: Any, b: Any) -> list[float]:
    import numpy as np

    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return [float(x) for x in np.sum(a * b, axis=1)]


# ------------------------------------------------------------------------------------------------ ST files


def sentence_transformers_tokenizer_args(tokenizer: Any, append_eos: bool, model_dir: Path) -> dict[str, Any] | None:
    """Tokenizer kwargs that make ST's tokenizer end every text with the EOS id, or ``None`` when this
    tokenizer cannot do it (then ST users must append the EOS string themselves; a warning says so).

    ``add_bos_token`` keeps a BOS the tokenizer already adds (Llama-3), because setting ``add_eos_token``
    rebuilds the post-processor from these two flags.
    """
    from transformers import AutoTokenizer

    if not append_eos:
        return {}
    probe = "query: probe text"
    plain = tokenizer(probe)["input_ids"]
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    kwargs = {"add_eos_token": True, "add_bos_token": bool(bos is not None and plain[:1] == [bos] != bare[:1])}
    try:
        with_eos = AutoTokenizer.from_pretrained(str(model_dir), **kwargs)(probe)["input_ids"]
    except (TypeError, ValueError) as err:
        logger.warning("tokenizer cannot append EOS by itself (%s); ST users must append %r", err, tokenizer.eos_token)
        return None
    if list(with_eos) != list(plain) + [tokenizer.eos_token_id]:
        logger.warning(
            "add_eos_token gives %s instead of %s + [%d]; ST users must append %r to their texts",
            with_eos[-4:],
            plain[-3:],
            tokenizer.eos_token_id,
            tokenizer.eos_token,
        )
        return None
    return kwargs


def write_sentence_transformers_files(out: Path, settings: Any, hidden_size: int, tokenizer: Any) -> None:
    """modules.json, sentence_bert_config.json, 1_Pooling/, 2_Normalize/, config_sentence_transformers.json."""
    from models.io_utils import atomic_write_json

    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if settings.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (out / "2_Normalize").mkdir(exist_ok=True)
    atomic_write_json(out / "modules.json", modules)
    tokenizer_args = sentence_transformers_tokenizer_args(tokenizer, settings.append_eos_token, out)
    atomic_write_json(
        out / "sentence_bert_config.json",
        {
            # Plain text in, no chat template: ST would otherwise wrap texts of a chat model in its template.
            "transformer_task": "feature-extraction",
            "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
            "module_output_name": "token_embeddings",
            "processor_kwargs": tokenizer_args or {},
            "do_lower_case": False,
        },
    )
    mode = ST_POOLING[settings.pooling]
    atomic_write_json(
        out / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": hidden_size,
            "pooling_mode_cls_token": mode == "cls",
            "pooling_mode_mean_tokens": mode == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": mode == "lasttoken",
            "include_prompt": True,
        },
    )
    atomic_write_json(
        out / "config_sentence_transformers.json",
        {
            "model_type": "SentenceTransformer",
            "prompts": {"query": settings.query_prefix, "document": settings.passage_prefix},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine" if settings.normalize else "dot",
        },
    )


# ------------------------------------------------------------------------------------------------ stage


def merge(config: MergeConfig) -> dict[str, Any]:
    """Run the merge; returns the report written to ``merge_report.json``."""
    import numpy as np
    import torch
    from peft import PeftConfig, PeftModel
    from transformers import AutoModel, AutoTokenizer

    from models.io_utils import atomic_write_json

    adapter, out = Path(config.adapter), Path(config.output_dir)
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter}/adapter_config.json not found: --adapter must be a LoRA training output")
    if not is_finished(adapter) and not adapter.name.startswith("checkpoint-"):
        logger.warning("%s has no %s: training may not have finished", adapter, SUCCESS_MARKER)
    record = StageRecord(
        STAGE,
        dataclasses.asdict(config),
        informational=INFORMATIONAL,
        identity={"adapter_fingerprint": model_fingerprint(str(adapter))},
    )
    if out.exists() and any(out.iterdir()):
        if config.overwrite:
            shutil.rmtree(out)
        elif not (out / RECORD_NAME).is_file():
            raise ValueError(f"--output_dir {out} is not empty; pass --overwrite or choose another directory")
        else:
            check_rerun(out / RECORD_NAME, record, "pass --overwrite or another --output_dir")
            if is_finished(out):
                logger.info("%s already holds this merge; reusing it", out)
                return json.loads((out / "merge_report.json").read_text(encoding="utf-8"))
            logger.info("%s holds an unfinished merge with the same settings; merging again", out)
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    record.write(out / RECORD_NAME)

    peft_config = PeftConfig.from_pretrained(str(adapter))
    base_model = config.base_model or peft_config.base_model_name_or_path
    has_tokenizer = (adapter / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(str(adapter) if has_tokenizer else base_model)
    settings = resolve_settings(config, base_model, tokenizer)
    logger.info("merging %s into %s (save as %s)", adapter, base_model, config.dtype)

    # Merge in float32 and round once at the end.
    model = AutoModel.from_pretrained(base_model, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter)).eval()
    texts = probe_texts(settings)
    before = embed(model, tokenizer, settings, texts)
    model = model.merge_and_unload().to(getattr(torch, config.dtype)).eval()
    after = embed(model, tokenizer, settings, texts)
    agreement = cosines(before, after)
    report = {
        "adapter": str(adapter),
        "base_model": base_model,
        "dtype": config.dtype,
        "probe_cosines": agreement,
        "min_cosine": min(agreement),
        "finite": bool(np.isfinite(after).all()),
    }
    if not report["finite"] or report["min_cosine"] < config.min_cosine:
        raise ValueError(
            f"merged model disagrees with the adapter (finite={report['finite']}, min cosine "
            f"{report['min_cosine']:.5f} < {config.min_cosine}); try --dtype float32 or bfloat16"
        )
    model.save_pretrained(str(out), safe_serialization=True, max_shard_size=config.max_shard_size)
    tokenizer.save_pretrained(str(out))
    settings = dataclasses.replace(settings, merged=True, dtype=config.dtype, hidden_size=model.config.hidden_size)
    settings.save(out)
    write_sentence_transformers_files(out, settings, model.config.hidden_size, tokenizer)
    atomic_write_json(out / "merge_report.json", report)
    mark_success(out, report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(argv)
    configure_logging()

    def body() -> None:
        logger.info("config: %s", json.dumps(dataclasses.asdict(config)))
        report = merge(config)
        print(f"merged {config.adapter} -> {config.output_dir} (min probe cosine {report['min_cosine']:.6f})")

    return run_stage(body, name=STAGE)


if __name__ == "__main__":
    sys.exit(main())
