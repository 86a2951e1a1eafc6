"""Serve a retriever (BM25 or dense) over one corpus on HTTP: ``GET/POST /search``, ``GET /health``.

    python -m run_src.serve_retriever --retriever bm25 --split champ --port 8012
    python -m run_src.serve_retriever --retriever dense --model_path DIR --text_format rader \
        --split theoremqa_theorems --port 8001

The corpus comes from ``--source`` (``hf`` for the Hub's ``xlangai/BRIGHT``, a local mirror
directory, or a JSONL file); it defaults to ``$BRIGHT_DIR`` or the Hub, and the split ``champ``
falls back to the embedded CHAMP mirror. A dense server serves the document embeddings stage 1
(``run_src.encode_corpus``) cached under ``--cache_root`` for the same encoder flags (one cache-naming
rule, :mod:`models.retrieval.encoder_flags`) and says which cache it serves; without such a cache it
refuses to start unless ``--encode_missing`` asks it to build one first. BM25 indexes are cached next
to the embeddings. Binds 127.0.0.1 unless ``--host`` says otherwise. The launch scripts in ``servers/``
call this. A server writes no outputs of its own, so it has no stored settings to compare.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.retrieval.corpus import add_bright_revision_argument
from models.retrieval.encoder_flags import EncoderFlags, add_encoder_arguments, check_encoder_flags, doc_cache_name
from models.serving.deferred_app import DeferredApp
from models.settings import load_settings
from models.stage import StageError, add_config_argument, configure_logging, parse_flags, require_flags, run_stage

logger = logging.getLogger(__name__)

STAGE = "serve_retriever"


@dataclass(frozen=True)
class ServeConfig:
    retriever: str
    split: str
    source: str
    bright_revision: str
    long_context: bool
    encoder: EncoderFlags
    encode_missing: bool
    cache_root: str
    host: str
    port: int
    max_k: int
    max_query_chars: int
    max_batch: int
    max_request_chars: int
    max_body_bytes: int
    max_header_bytes: int
    max_pending_requests: int
    enable_docs: bool


def build_parser() -> argparse.ArgumentParser:
    settings = load_settings()
    parser = argparse.ArgumentParser(prog=f"python -m run_src.{STAGE}", description=__doc__.splitlines()[0])
    add_config_argument(parser)
    parser.add_argument("--retriever", choices=["bm25", "dense"], help="what to serve (required)")
    parser.add_argument("--split", help="corpus split (required), e.g. theoremqa_theorems, aops, champ")
    parser.add_argument("--source", default=settings.bright_dir or "hf", help="hf | mirror dir | JSONL file")
    add_bright_revision_argument(parser, settings.bright_revision)
    parser.add_argument("--long_context", action="store_true", help="use long_documents instead of documents")
    parser.add_argument("--cache_root", default=settings.bright_cache_dir, help="embedding caches and BM25 indexes")
    parser.add_argument(
        "--encode_missing",
        action="store_true",
        help="dense: encode the corpus at start-up when stage 1 has not cached it (otherwise refuse)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="(required)")
    parser.add_argument("--max_k", type=int, default=1000)
    parser.add_argument("--max_query_chars", type=int, default=50_000)
    parser.add_argument("--max_batch", type=int, default=256)
    parser.add_argument(
        "--max_request_chars", type=int, default=int(os.environ.get("RETRIEVER_MAX_REQUEST_CHARS") or 1_000_000),
        help="characters of all queries of one request together (default $RETRIEVER_MAX_REQUEST_CHARS or 1e6)",
    )
    parser.add_argument(
        "--max_body_bytes", type=int, default=int(os.environ.get("RETRIEVER_MAX_BODY_BYTES") or 4_000_000),
        help="largest request body (default $RETRIEVER_MAX_BODY_BYTES or 4e6)",
    )
    parser.add_argument(
        "--max_header_bytes", type=int, default=int(os.environ.get("RETRIEVER_MAX_HEADER_BYTES") or 65_536),
        help="largest request head (default $RETRIEVER_MAX_HEADER_BYTES or 65536)",
    )
    parser.add_argument(
        "--max_pending_requests", type=int, default=int(os.environ.get("RETRIEVER_MAX_PENDING_REQUESTS") or 64),
        help="searches admitted at once, running or queued for the encoder; one more gets 503 with Retry-After "
        "(default $RETRIEVER_MAX_PENDING_REQUESTS or 64)",
    )
    parser.add_argument("--enable_docs", action="store_true", help="serve /docs and /openapi.json")
    add_encoder_arguments(parser, title="dense encoder (--retriever dense)")
    return parser


def parse_config(argv: list[str] | None) -> ServeConfig:
    parser = build_parser()
    args = parse_flags(parser, argv)
    require_flags(parser, args, "retriever", "split", "port")
    for name in ("max_k", "max_query_chars", "max_batch", "max_request_chars", "max_body_bytes", "max_header_bytes",
                 "max_pending_requests"):  # fmt: skip
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    encoder = EncoderFlags.from_args(args)
    if args.retriever == "dense":
        encoder = encoder.with_defaults()
        if not encoder.model_path:
            parser.error("--retriever dense needs --model_path (a model directory or HF id)")
        problem = check_encoder_flags(encoder)
        if problem:
            parser.error(problem)
    elif encoder != EncoderFlags():
        parser.error("--retriever bm25 takes no dense-encoder flags (--model_path, --pooling, ...)")
    if not _is_loopback(args.host) and not os.environ.get("RETRIEVER_API_KEY"):
        parser.error(
            f"--host {args.host} is not a loopback address: set RETRIEVER_API_KEY (clients then send "
            "'Authorization: Bearer <key>'), or bind 127.0.0.1"
        )
    values: dict[str, Any] = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig) if f.name != "encoder"
    }
    return ServeConfig(encoder=encoder, **values)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_retriever(config: ServeConfig, on_progress: Any = None) -> Any:
    """The BM25 or dense retriever ``config`` describes (a :class:`models.retrieval.retrievers.Retriever`)."""
    from models.embedded.champ import source_with_champ
    from models.retrieval.corpus import load_corpus, revision_applies
    from models.retrieval.retrievers import BM25Retriever, DenseRetriever

    source = source_with_champ(config.source, config.split)
    revision = config.bright_revision if revision_applies(source) else None
    corpus = load_corpus(source, config.split, long_context=config.long_context, revision=revision)
    if config.retriever == "bm25":
        return BM25Retriever.from_corpus(corpus, cache_dir=Path(config.cache_root) / "bm25" / corpus.name)

    from models.retrieval.encoders import build_encoder

    encoder_config = config.encoder.encoder_config(config.long_context)
    encoder = build_encoder(encoder_config)
    return DenseRetriever.from_cache(
        encoder,
        corpus,
        config.cache_root,
        doc_cache_name(encoder_config),
        task=config.encoder.instruction_split(None),
        on_progress=on_progress,
    )


def stage_one_cache(config: ServeConfig) -> tuple[Path, bool]:
    """Where stage 1 caches this server's document embeddings, and whether a finished cache is there."""
    from models.embedded.champ import source_with_champ
    from models.retrieval.corpus import corpus_name
    from models.retrieval.embedding_cache import cache_dir

    name = corpus_name(source_with_champ(config.source, config.split), config.split, config.long_context)
    directory = cache_dir(config.cache_root, doc_cache_name(config.encoder.encoder_config(config.long_context)), name)
    return directory, (directory / "embeddings.npy").is_file() and (directory / "meta.json").is_file()


def _build_into(deferred: Any, config: ServeConfig, limits: Any) -> None:
    from models.serving.retriever_app import create_app

    try:
        deferred.ready(create_app(build_retriever(config, on_progress=deferred.progress), limits))
    except Exception as err:  # noqa: BLE001 - any failure ends the server; the launcher sees it exit
        deferred.failed(err)


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    configure_logging()

    def body() -> None:
        logger.info("config: %s", dataclasses.asdict(config))
        import uvicorn

        from models.serving.retriever_app import ServerLimits, create_app

        limits = ServerLimits(
            max_k=config.max_k, max_query_chars=config.max_query_chars, max_batch=config.max_batch,
            max_request_chars=config.max_request_chars, max_body_bytes=config.max_body_bytes,
            api_key=os.environ.get("RETRIEVER_API_KEY") or None, enable_docs=config.enable_docs,
            max_pending_requests=config.max_pending_requests,
        )  # fmt: skip
        if config.retriever == "bm25":
            app: Any = create_app(build_retriever(config), limits)
        else:
            directory, finished = stage_one_cache(config)
            if finished:
                logger.info("serving the stage-1 cache %s", directory)
                app = create_app(build_retriever(config), limits)
            elif not config.encode_missing:
                raise StageError(
                    f"no document embeddings at {directory} for these encoder flags; build them with "
                    f"`python -m run_src.encode_corpus --model_path {config.encoder.model_path} --split {config.split}` "
                    "(scripts/01_doc_embeddings.sh) using the same encoder flags, or pass --encode_missing"
                )
            else:  # answer /health (503, with progress) while the corpus is encoded, then serve
                logger.info("no stage-1 cache: encoding the corpus into %s (--encode_missing)", directory)
                app = DeferredApp(config.retriever)
                threading.Thread(target=_build_into, args=(app, config, limits), daemon=True).start()
        uvicorn.run(
            app, host=config.host, port=config.port, log_level="warning",
            http="h11", h11_max_incomplete_event_size=config.max_header_bytes,  # bounds the request head
        )  # fmt: skip

    return run_stage(body, name=STAGE)


if __name__ == "__main__":
    sys.exit(main())
