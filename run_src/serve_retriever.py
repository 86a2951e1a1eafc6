"""Serve a retriever (BM25 or dense) over one corpus on HTTP: ``GET/POST /search``, ``GET /health``.

    python -m run_src.serve_retriever --retriever bm25 --split champ --port 8012
    python -m run_src.serve_retriever --retriever dense --model DIR --text_format rader \
        --split theoremqa_theorems --port 8001

The corpus comes from ``--source`` (``hf`` for the Hub's ``xlangai/BRIGHT``, a local mirror
directory, or a JSONL file); it defaults to ``$BRIGHT_DIR`` or the Hub, and the split ``champ``
falls back to the embedded CHAMP mirror. Dense document embeddings are cached under
``--cache_root`` (``$BRIGHT_CACHE_DIR``) and reused; BM25 indexes are cached next to them.
Binds 127.0.0.1 unless ``--host`` says otherwise. The launch scripts in ``servers/`` call this.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from models.settings import load_settings
from models.text_formats import PRESETS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeConfig:
    retriever: str
    split: str
    source: str
    long_context: bool
    model: str
    model_name: str
    text_format: str
    pooling: str
    task: str | None
    query_max_len: int | None
    doc_max_len: int | None
    batch_size: int
    encoder_backend: str
    encoder_url: str | None
    cache_root: str
    host: str
    port: int
    max_k: int
    max_query_chars: int
    max_batch: int


def build_parser() -> argparse.ArgumentParser:
    settings = load_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retriever", choices=["bm25", "dense"], required=True)
    parser.add_argument("--split", required=True, help="corpus split, e.g. theoremqa_theorems, aops, champ")
    parser.add_argument("--source", default=settings.bright_dir or "hf", help="hf | mirror dir | JSONL file")
    parser.add_argument("--long_context", action="store_true", help="use long_documents instead of documents")
    parser.add_argument("--model", default="", help="dense: model directory or HF id")
    parser.add_argument("--model_name", default="", help="dense: cache name (default: <model folder>-<text_format>)")
    parser.add_argument("--text_format", default="rader", choices=sorted(PRESETS), help="dense: prefixes/EOS preset")
    parser.add_argument("--pooling", default="", choices=["", "eos", "last", "mean", "cls"],
                        help="dense: default eos when the format appends EOS, else mean")
    parser.add_argument("--task", default=None, help="dense: BRIGHT split whose query instruction to prepend")
    parser.add_argument("--query_max_len", type=int, default=None)
    parser.add_argument("--doc_max_len", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--encoder_backend", default="transformers", choices=["transformers", "vllm-server"])
    parser.add_argument("--encoder_url", default=None, help="vllm-server: base URL of the embedding server")
    parser.add_argument("--cache_root", default=settings.bright_cache_dir)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max_k", type=int, default=1000)
    parser.add_argument("--max_query_chars", type=int, default=50_000)
    parser.add_argument("--max_batch", type=int, default=256)
    return parser


def parse_config(argv: list[str] | None) -> ServeConfig:
    args = build_parser().parse_args(argv)
    if args.retriever == "dense" and not args.model:
        raise SystemExit("--retriever dense needs --model (a model directory or HF id)")
    return ServeConfig(**vars(args))


def build_retriever(config: ServeConfig):  # noqa: ANN201 - returns a models.retrievers.Retriever
    from models.champ import source_with_champ
    from models.corpus import load_corpus
    from models.retrievers import BM25Retriever, DenseRetriever

    source = source_with_champ(config.source, config.split)
    corpus = load_corpus(source, config.split, long_context=config.long_context)
    if config.retriever == "bm25":
        return BM25Retriever.from_corpus(corpus, cache_dir=Path(config.cache_root) / "bm25" / corpus.name)

    from models.encoder_presets import default_model_name, encoder_config_from_flags
    from models.encoders import build_encoder

    encoder = build_encoder(encoder_config_from_flags(
        config.model, config.text_format, config.pooling,
        query_max_len=config.query_max_len, doc_max_len=config.doc_max_len, batch_size=config.batch_size,
        encoder_backend=config.encoder_backend, encoder_url=config.encoder_url,
    ))
    model_name = config.model_name or default_model_name(config.model, config.text_format)
    return DenseRetriever.from_cache(encoder, corpus, config.cache_root, model_name, task=config.task)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = parse_config(argv)
    logger.info("config: %s", asdict(config))
    import uvicorn

    from models.server_apps.retriever_app import ServerLimits, create_app

    retriever = build_retriever(config)
    app = create_app(retriever, ServerLimits(config.max_k, config.max_query_chars, config.max_batch))
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
