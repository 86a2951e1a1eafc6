"""Precompute document-embedding caches (DESIGN.md §3) for one or more corpus splits.

    python -m run_src.encode_corpus --model DIR --split theoremqa_theorems --split aops
    python -m run_src.encode_corpus --model DIR --text_format plain --pooling mean --split champ

Encoding a BRIGHT corpus with a 7B model takes hours, so it is its own stage: the retriever servers
and the evaluation then only load ``<cache_root>/doc_emb/<model_name>/<corpus>/``. The cache itself
(:mod:`models.embedding_cache`) writes shards atomically, so rerunning the same command after a kill
finishes the build from the first missing shard (with the shard size of the first run), and a
finished cache is reused without encoding. A cache built with other settings is refused, never
overwritten. The encoder flags mean the same as in ``run_src.serve_retriever`` (both go through
:mod:`models.encoder_presets`), so a server started with the same flags finds these caches.

Outputs, per split: the cache, plus ``encode_config.json`` next to it (the resolved config of the run
that built or finished it, with the corpus and encoder settings; a run that only reuses a finished
cache leaves it as it is, or adds it when a server built the cache), and one summary line on stdout.
``--config FILE`` takes a JSON object of this stage's fields (or an ``encode_config.json``); flags
given on the command line win. Exit status 1 when any split failed; the others still run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from models.champ import source_with_champ
from models.embedding_cache import DEFAULT_SHARD_SIZE, build_or_load_doc_embeddings, cache_dir
from models.encoder_presets import default_model_name, encoder_config_from_flags
from models.encoders import BACKENDS, POOLINGS, Encoder, EncoderConfig, EncoderServiceError, build_encoder
from models.io_utils import atomic_write_json
from models.settings import load_settings
from models.text_formats import PRESETS

logger = logging.getLogger(__name__)

CONFIG_FILE_NAME = "encode_config.json"
STAGE = "encode_corpus"


@dataclass(frozen=True)
class EncodeConfig:
    """Resolved settings of one run; ``pooling`` and ``model_name`` are never left empty."""

    model: str
    splits: tuple[str, ...]
    source: str
    long_context: bool
    text_format: str
    pooling: str
    model_name: str
    cache_root: str
    batch_size: int
    doc_max_len: int | None
    encoder_backend: str
    encoder_url: str | None
    shard_size: int
    quiet: bool

    def encoder_config(self) -> EncoderConfig:
        return encoder_config_from_flags(
            self.model,
            self.text_format,
            self.pooling,
            doc_max_len=self.doc_max_len,
            batch_size=self.batch_size,
            encoder_backend=self.encoder_backend,
            encoder_url=self.encoder_url,
        )


@dataclass(frozen=True)
class SplitResult:
    """What happened to one split: ``status`` is built, resumed, reused or failed."""

    split: str
    status: str
    n_docs: int = 0
    dim: int = 0
    seconds: float = 0.0
    path: str = ""
    error: str = ""

    def summary_line(self) -> str:
        if self.status == "failed":
            return f"{self.split}: FAILED after {self.seconds:.1f}s: {self.error}"
        return f"{self.split}: {self.status} {self.n_docs} docs, dim {self.dim}, in {self.seconds:.1f}s -> {self.path}"


def build_parser() -> argparse.ArgumentParser:
    settings = load_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="JSON of this stage's fields (or an encode_config.json)")
    parser.add_argument("--model", default=None, help="model directory or HF id (tokenizer + identity for vllm)")
    parser.add_argument("--split", dest="splits", action="append", default=None,
                        help="corpus split to encode (repeatable), e.g. theoremqa_theorems, aops, champ")
    parser.add_argument("--source", default=settings.bright_dir or "hf", help="hf | mirror dir | JSONL file")
    parser.add_argument("--long_context", action="store_true", default=None,
                        help="encode long_documents instead of documents")
    parser.add_argument("--text_format", default="rader", choices=sorted(PRESETS), help="prefixes/EOS preset")
    parser.add_argument("--pooling", default="", choices=["", *POOLINGS],
                        help="default eos when the format appends EOS, else mean")
    parser.add_argument("--model_name", default="", help="cache directory name (default: the model's folder name)")
    parser.add_argument("--cache_root", default=settings.bright_cache_dir, help="default $BRIGHT_CACHE_DIR")
    parser.add_argument("--batch_size", type=int, default=8, help="texts per forward pass / per request")
    parser.add_argument("--doc_max_len", type=int, default=None, help="tokens incl. EOS; default no truncation")
    parser.add_argument("--encoder_backend", default="transformers", choices=list(BACKENDS))
    parser.add_argument("--encoder_url", default=None, help="vllm-server: base URL of the embedding server")
    parser.add_argument("--shard_size", type=int, default=DEFAULT_SHARD_SIZE,
                        help="documents per resumable shard (a resumed build keeps its first size)")
    parser.add_argument("--quiet", action="store_true", default=None, help="no progress bars")
    return parser


def parse_config(argv: list[str] | None) -> EncodeConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config:
        file_values = _read_config_file(args.config, parser)
        splits_from_file = file_values.pop("splits", None)
        parser.set_defaults(**file_values)
        args = parser.parse_args(argv)  # command-line flags override the file
        if args.splits is None and splits_from_file is not None:
            args.splits = list(splits_from_file)
    if not args.model:
        parser.error("--model is required (a model directory or HF id)")
    if not args.splits:
        parser.error("give at least one --split (e.g. --split theoremqa_theorems)")
    if args.batch_size < 1 or args.shard_size < 1:
        parser.error(f"--batch_size and --shard_size must be >= 1, got {args.batch_size} and {args.shard_size}")
    if args.encoder_backend == "vllm-server" and not args.encoder_url:
        parser.error("--encoder_backend vllm-server needs --encoder_url (e.g. http://127.0.0.1:8001)")
    values = {k: v for k, v in vars(args).items() if k != "config"}
    values["splits"] = tuple(dict.fromkeys(args.splits))  # a split named twice is encoded once
    values["long_context"] = bool(args.long_context)
    values["quiet"] = bool(args.quiet)
    values["model_name"] = args.model_name or default_model_name(args.model, args.text_format)
    try:  # every encoder setting is checked here, before any model is loaded
        values["pooling"] = encoder_config_from_flags(
            args.model, args.text_format, args.pooling, doc_max_len=args.doc_max_len, batch_size=args.batch_size,
            encoder_backend=args.encoder_backend, encoder_url=args.encoder_url,
        ).pooling
    except ValueError as err:  # e.g. --pooling eos with a format that appends no EOS, --doc_max_len 1
        parser.error(str(err))
    return EncodeConfig(**values)


def _read_config_file(path: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        parser.error(f"--config {path}: cannot read a JSON object ({err})")
    if isinstance(data, dict) and data.get("stage") == STAGE:
        data = data.get("config", {})  # an encode_config.json written by this stage
    if not isinstance(data, dict):
        parser.error(f"--config {path} must hold a JSON object of {sorted(_field_names())}")
    unknown = sorted(set(data) - _field_names())
    if unknown:
        parser.error(f"--config {path} has unknown fields {unknown}; known: {sorted(_field_names())}")
    return data


def _field_names() -> set[str]:
    return {f.name for f in fields(EncodeConfig)}


def check_output(config: EncodeConfig) -> Path:
    """Fail before loading a model: the cache name must be a plain directory name, the root writable."""
    cache_dir(config.cache_root, config.model_name, "probe")  # ValueError for an unusable --model_name
    model_root = Path(config.cache_root) / "doc_emb" / config.model_name
    try:
        model_root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create {model_root} ({err}); pass a writable --cache_root") from err
    if not os.access(model_root, os.W_OK):
        raise ValueError(f"{model_root} is not writable; pass a writable --cache_root")
    return model_root


def encode_split(encoder: Encoder, config: EncodeConfig, split: str) -> SplitResult:
    """Build, resume or reuse one split's cache and record the config next to it."""
    from models.corpus import load_corpus

    start = time.perf_counter()
    source = source_with_champ(config.source, split)
    corpus = load_corpus(source, split, long_context=config.long_context)
    directory = cache_dir(config.cache_root, config.model_name, corpus.name)
    status = _cache_state(directory)
    if status == "resumed":
        logger.info("%s: %d shard files from a previous run are in %s", split, len(list(directory.glob("part-*.npy"))),
                    directory)
    cached = build_or_load_doc_embeddings(
        encoder, corpus, config.cache_root, config.model_name,
        shard_size=config.shard_size, show_progress=not config.quiet, mmap=True,
    )
    n_docs, dim = cached.embeddings.shape
    config_path = cached.path / CONFIG_FILE_NAME
    if status != "reused" or not config_path.is_file():  # describe the run that produced the vectors
        atomic_write_json(config_path, {
            "stage": STAGE,
            "config": _json_config(config),
            "split": split,
            "corpus_name": corpus.name,
            "resolved_source": str(source),
            "n_docs": int(n_docs),
            "dim": int(dim),
            "cache_shard_size": cached.meta.get("shard_size"),  # a resumed build keeps its first run's size
            "encoder": config.encoder_config().to_dict(),
        })
    logger.info("%s: %s %d documents (dim %d) in %s", split, status, n_docs, dim, cached.path)
    return SplitResult(split, status, int(n_docs), int(dim), time.perf_counter() - start, str(cached.path))


def _cache_state(directory: Path) -> str:
    """``reused`` for a finished cache, ``resumed`` for a killed build, ``built`` for none yet."""
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        return "built"
    try:
        with open(meta_path, encoding="utf-8") as handle:
            state = json.load(handle).get("status")
    except (OSError, json.JSONDecodeError, AttributeError):
        return "built"  # the cache itself reports the damage with a fix
    return "reused" if state == "complete" else "resumed"


def _json_config(config: EncodeConfig) -> dict[str, Any]:
    data = asdict(config)
    data["splits"] = list(config.splits)
    return data


def run(config: EncodeConfig) -> list[SplitResult]:
    """Encode every split with one loaded encoder; a failing split is recorded and the rest continue."""
    check_output(config)
    results: list[SplitResult] = []
    with build_encoder(config.encoder_config()) as encoder:
        for split in config.splits:
            start = time.perf_counter()
            try:
                results.append(encode_split(encoder, config, split))
            except (ValueError, FileNotFoundError, EncoderServiceError) as err:
                logger.error("%s: %s", split, err)
                results.append(SplitResult(split, "failed", seconds=time.perf_counter() - start, error=str(err)))
    counts = {s: sum(r.status == s for r in results) for s in ("built", "resumed", "reused", "failed")}
    logger.info(
        "encoded %d splits (%s), %d documents in all",
        len(results), ", ".join(f"{n} {s}" for s, n in counts.items() if n), sum(r.n_docs for r in results),
    )
    return results


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = parse_config(argv)
    logger.info("config: %s", _json_config(config))
    try:
        results = run(config)
    except (ValueError, OSError, EncoderServiceError) as err:  # bad cache root, unloadable model, dead server
        logger.error("%s", err)
        return 1
    for result in results:
        print(result.summary_line())
    return 1 if any(r.status == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
