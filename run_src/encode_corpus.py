"""Stage 1: precompute document-embedding caches (DESIGN.md §3) for one or more corpus splits.

    python -m run_src.encode_corpus --model_path DIR --split theoremqa_theorems --split aops
    python -m run_src.encode_corpus --model_path DIR --text_format plain --pooling mean --split champ

Encoding a BRIGHT corpus with a 7B model takes hours, so it is its own stage: the retriever servers
and the evaluation then only load ``<cache_root>/doc_emb/<cache name>/<corpus>/``. The cache name follows
the one rule of :mod:`models.retrieval.encoder_flags` (model fingerprint, pooling, document format, length),
so a server or an evaluation given the same encoder flags finds these caches, and another checkpoint or
setting gets a cache of its own: the outputs are content-addressed, a rerun with other determining settings
writes beside them instead of over them. The cache (:mod:`models.retrieval.embedding_cache`) writes shards
atomically, so rerunning after a kill finishes the build from the first missing shard (with the first
run's shard size), and a finished cache is reused without encoding.

Several GPUs share one build: ``--worker i/N`` (one process per GPU, ``i`` from 0) encodes only every N-th
part of each split into the same cache directory and stops; a last run without ``--worker`` finds all the
parts and assembles the cache (``scripts/01_doc_embeddings.sh`` does both when more than one GPU is visible).

Outputs, per split: the cache, plus ``encode_config.json`` next to it (the stage record of the run that
built or finished it: every setting, the split, the model fingerprint) and one summary line on stdout.
Exit status 1 when any split failed; the others still run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from models.embedded.champ import source_with_champ
from models.retrieval.corpus import add_bright_revision_argument, revision_applies
from models.retrieval.embedding_cache import (
    DEFAULT_SHARD_SIZE,
    build_or_load_doc_embeddings,
    cache_dir,
    encode_doc_embedding_parts,
)
from models.retrieval.encoder_flags import (
    INFORMATIONAL_ENCODER_FLAGS,
    EncoderFlags,
    add_encoder_arguments,
    check_encoder_flags,
    doc_cache_name,
)
from models.retrieval.encoders import Encoder, EncoderServiceError, build_encoder
from models.retrieval.model_identity import model_fingerprint
from models.settings import load_settings
from models.stage import (
    EXIT_FAILED,
    EXIT_OK,
    StageRecord,
    add_config_argument,
    check_rerun,
    configure_logging,
    parse_flags,
    run_stage,
)

logger = logging.getLogger(__name__)

STAGE = "encode_corpus"
RECORD_NAME = "encode_config.json"
# ``split`` too: corpora with the same documents share one cache (and its record), e.g. aops and theoremqa_questions;
# the cache itself checks the corpus fingerprint.
INFORMATIONAL = frozenset({*INFORMATIONAL_ENCODER_FLAGS, "model_path", "tokenizer", "dtype", "source", "bright_revision",
                           "cache_root", "shard_size", "quiet", "worker", "split"})  # fmt: skip


@dataclass(frozen=True)
class EncodeConfig:
    """Resolved settings of one run; ``encoder.pooling`` and ``encoder.text_format`` are never empty."""

    splits: tuple[str, ...]
    source: str
    bright_revision: str
    long_context: bool
    encoder: EncoderFlags
    cache_root: str
    shard_size: int
    quiet: bool
    worker: tuple[int, int] | None = None  # (index, count): encode only this worker's parts

    @property
    def cache_name(self) -> str:
        return doc_cache_name(self.encoder.encoder_config(self.long_context))

    def settings(self, split: str) -> dict[str, object]:
        """The record's flag values for one split (``splits`` becomes that ``split``)."""
        values = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("encoder", "splits")
        }
        return {"split": split, **values, **self.encoder.as_flags()}


@dataclass(frozen=True)
class SplitResult:
    """What happened to one split: ``status`` is built, resumed, reused, shared (linked to the cache of a split with
    the same documents), parts (a --worker run) or failed."""

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
        if self.status == "parts":
            return f"{self.split}: this worker's parts encoded in {self.seconds:.1f}s -> {self.path} (assemble next)"
        return f"{self.split}: {self.status} {self.n_docs} docs, dim {self.dim}, in {self.seconds:.1f}s -> {self.path}"


def build_parser() -> argparse.ArgumentParser:
    settings = load_settings()
    parser = argparse.ArgumentParser(prog=f"python -m run_src.{STAGE}", description=__doc__.splitlines()[0])
    add_config_argument(parser)
    parser.add_argument(
        "--split",
        dest="splits",
        action="append",
        default=None,
        help="corpus split to encode (repeatable), e.g. theoremqa_theorems, aops, champ",
    )
    parser.add_argument("--source", default=settings.bright_dir or "hf", help="hf | mirror dir | JSONL file")
    add_bright_revision_argument(parser, settings.bright_revision)
    parser.add_argument("--long_context", action="store_true", help="encode long_documents instead of documents")
    parser.add_argument("--cache_root", default=settings.bright_cache_dir, help="default $BRIGHT_CACHE_DIR")
    parser.add_argument(
        "--shard_size",
        type=int,
        default=DEFAULT_SHARD_SIZE,
        help="documents per resumable shard (a resumed build keeps its first size)",
    )
    parser.add_argument(
        "--worker",
        default=None,
        metavar="I/N",
        help="encode only worker I's parts of N (0 <= I < N; one process per GPU); a run without it assembles",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_encoder_arguments(parser, documents_only=True)
    return parser  # fmt: skip


def parse_config(argv: list[str] | None) -> EncodeConfig:
    parser = build_parser()
    args = parse_flags(parser, argv)
    encoder = EncoderFlags.from_args(args).with_defaults()
    if not encoder.model_path:
        parser.error("--model_path is required (a model directory or Hub id)")
    if not args.splits:
        parser.error("give at least one --split (e.g. --split theoremqa_theorems)")
    if args.shard_size < 1:
        parser.error(f"--shard_size must be >= 1, got {args.shard_size}")
    problem = check_encoder_flags(encoder)  # every encoder setting is checked before any model is loaded
    if problem:
        parser.error(problem)
    worker = _parse_worker(args.worker) if args.worker is not None else None
    if args.worker is not None and worker is None:
        parser.error(f"--worker must be I/N with 0 <= I < N (e.g. 0/4), got {args.worker!r}")
    return EncodeConfig(
        splits=tuple(dict.fromkeys(args.splits)),  # a split named twice is encoded once
        source=args.source,
        bright_revision=args.bright_revision,
        long_context=args.long_context,
        encoder=encoder,
        cache_root=args.cache_root,
        shard_size=args.shard_size,
        quiet=args.quiet,
        worker=worker,
    )


def _parse_worker(value: str) -> tuple[int, int] | None:
    index, sep, count = value.partition("/")
    if not (sep and index.isdigit() and count.isdigit()):
        return None
    worker = int(index), int(count)
    return worker if 0 <= worker[0] < worker[1] else None


def check_output(config: EncodeConfig) -> Path:
    """Fail before loading a model: the cache root must be writable."""
    model_root = Path(config.cache_root) / "doc_emb" / config.cache_name
    try:
        model_root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create {model_root} ({err}); pass a writable --cache_root") from err
    if not os.access(model_root, os.W_OK):
        raise ValueError(f"{model_root} is not writable; pass a writable --cache_root")
    return model_root


def split_record(config: EncodeConfig, split: str) -> StageRecord:
    return StageRecord(
        STAGE,
        config.settings(split),
        informational=INFORMATIONAL,
        identity={"model_fingerprint": model_fingerprint(config.encoder.model_path), "cache_name": config.cache_name},
    )


def encode_split(encoder: Encoder, config: EncodeConfig, split: str) -> SplitResult:
    """Build, resume or reuse one split's cache and record the run next to it."""
    from models.retrieval.corpus import load_corpus

    start = time.perf_counter()
    source = source_with_champ(config.source, split)
    revision = config.bright_revision if revision_applies(source) else None
    corpus = load_corpus(source, split, long_context=config.long_context, revision=revision)
    directory = cache_dir(config.cache_root, config.cache_name, corpus.name)
    record = split_record(config, split)
    check_rerun(directory / RECORD_NAME, record, fresh_run=f"delete {directory} to rebuild it")
    status = _cache_state(directory)
    if config.worker is not None:  # this worker's parts only; the record is written by the assembling run
        if status == "reused":
            return SplitResult(split, "reused", len(corpus), 0, time.perf_counter() - start, str(directory))
        parts = encode_doc_embedding_parts(
            encoder, corpus, config.cache_root, config.cache_name, config.worker,
            shard_size=config.shard_size, show_progress=not config.quiet,
        )  # fmt: skip
        logger.info("%s: worker %d/%d holds %d parts in %s", split, *config.worker, parts, directory)
        return SplitResult(split, "parts", 0, 0, time.perf_counter() - start, str(directory))
    if status == "resumed":
        logger.info("%s: %d shard files from a previous run are in %s", split, len(list(directory.glob("part-*.npy"))),
                    directory)  # fmt: skip
    cached = build_or_load_doc_embeddings(
        encoder, corpus, config.cache_root, config.cache_name,
        shard_size=config.shard_size, show_progress=not config.quiet, mmap=True,
    )  # fmt: skip
    n_docs, dim = cached.embeddings.shape
    if status == "built" and directory.is_symlink():  # the documents of another split: its cache was linked
        status = "shared"
    record_path = cached.path / RECORD_NAME
    if status not in ("reused", "shared") or not record_path.is_file():  # describe the run that made the vectors
        record.derived = {
            "corpus_name": corpus.name,
            "resolved_source": str(source),
            "revision": revision,
            "n_docs": int(n_docs),
            "dim": int(dim),
            "cache_shard_size": cached.meta.get("shard_size"),  # a resumed build keeps its first run's size
            "encoder": config.encoder.encoder_config(config.long_context).to_dict(),
        }
        record.write(record_path)
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


def run(config: EncodeConfig) -> list[SplitResult]:
    """Encode every split with one loaded encoder; a failing split is recorded and the rest continue."""
    check_output(config)
    results: list[SplitResult] = []
    with build_encoder(config.encoder.encoder_config(config.long_context)) as encoder:
        for split in config.splits:
            start = time.perf_counter()
            try:
                results.append(encode_split(encoder, config, split))
            except (ValueError, FileNotFoundError, EncoderServiceError) as err:
                logger.error("%s: %s", split, err)
                results.append(SplitResult(split, "failed", seconds=time.perf_counter() - start, error=str(err)))
    counts = {s: sum(r.status == s for r in results) for s in ("built", "resumed", "reused", "shared", "parts", "failed")}
    logger.info(
        "encoded %d splits (%s), %d documents in all",
        len(results), ", ".join(f"{n} {s}" for s, n in counts.items() if n), sum(r.n_docs for r in results),
    )  # fmt: skip
    return results


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    configure_logging(quiet=False)

    def body() -> int:
        logger.info("config: %s (cache name %s)", dataclasses.asdict(config), config.cache_name)
        try:
            results = run(config)
        except (OSError, EncoderServiceError) as err:  # unloadable model, dead server
            logger.error("%s", err)
            return EXIT_FAILED
        for result in results:
            print(result.summary_line())
        return EXIT_FAILED if any(r.status == "failed" for r in results) else EXIT_OK

    return run_stage(body, name=STAGE)


if __name__ == "__main__":
    sys.exit(main())
