"""Stage 4: query records -> a Tevatron-format training set, its statistics and a drop report.

    python -m run_src.build_training_data --queries_dir outputs/queries/MATH --output outputs/train/MATH.jsonl
    python -m run_src.build_training_data --queries_dir outputs/queries/MATH outputs/queries/Numina \
        --query_types llmq cot lexical --min_negatives 1 --seed 0 --output outputs/train/mix.jsonl

Reads ``queries_<type>.jsonl`` from each ``generate_queries`` output directory (which must have its
``_SUCCESS`` marker), fetches positive and negative texts from the corpus by id, and writes, next to
``--output``:

* ``<name>.jsonl``        one row per training sample (``query_id, query, positive_passages[{docid, title,
  text}], negative_passages[...]`` plus ``query_type``, ``source``, ``relevant_doc_ids``), loadable with
  ``datasets.load_dataset("json", data_files=...)`` and Tevatron's legacy loader; written last;
* ``<name>.stats.json`` / ``<name>.stats.md``   per query type and source: samples, average negatives,
  average query length, drops by reason (the paper's Table 9 analogue);
* ``<name>.drops.jsonl``  every dropped sample with its reason;
* ``<name>.config.json``  the resolved flags plus the generator model and prompt versions of the inputs.

The rules (drop reasons, negatives, de-duplication) are in :mod:`run_src.query_synthesis.assembly`.
The output depends only on the inputs and ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from models.io_utils import atomic_write_json, atomic_write_jsonl, atomic_write_text
from models.settings import Settings, load_settings
from models.stage import (
    EXIT_FAILED,
    StageRecord,
    add_config_argument,
    check_rerun,
    configure_logging,
    parse_flags,
    read_record,
    require_flags,
    run_stage,
)
from run_src.query_synthesis.assembly import (
    BACKFILL_SOURCES,
    PASSAGE_TEXTS,
    Assembler,
    AssemblyConfig,
    CorpusKey,
    stats_markdown,
)
from run_src.query_synthesis.records import QUERY_TYPES, QueryRecord, queries_file, read_records

logger = logging.getLogger(__name__)

STAGE = "build_training_data"
INFORMATIONAL = frozenset({"cache_root", "allow_unfinished", "overwrite", "quiet"})


@dataclass(frozen=True)
class BuildConfig:
    """Resolved flags of this stage."""

    queries_dir: tuple[str, ...]
    output: str
    query_types: tuple[str, ...] | None
    min_negatives: int
    max_negatives: int | None
    lexical_top_k: int
    lexical_bm25_rank_start: int
    lexical_bm25_rank_end: int
    lexical_bm25_negatives: int
    lexical_dense_negatives: int
    backfill: str
    backfill_depth: int
    backfill_to: int
    cache_root: str
    passage_text: str
    seed: int
    shuffle: bool
    corpus: str | None
    corpus_split: str | None
    bright_revision: str | None
    allow_unfinished: bool
    overwrite: bool
    quiet: bool


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_argument(parser)
    parser.add_argument("--queries_dir", nargs="+", help="generate_queries output directories (required)")
    parser.add_argument("--output", help="training set JSONL to write, side files next to it (required)")
    parser.add_argument(
        "--query_types",
        nargs="+",
        default=None,
        choices=QUERY_TYPES,
        help="types to include (default: those the last generate_queries run in each directory produced)",
    )
    parser.add_argument(
        "--min_negatives",
        type=int,
        default=1,
        help="drop samples with fewer negatives (Tevatron crashes on 0, spec §5.3)",
    )
    parser.add_argument("--max_negatives", type=int, default=None, help="keep at most this many (default: all)")
    parser.add_argument("--lexical_top_k", type=int, default=20, help="round-trip filter: BM25 rank <= k (§4.4)")
    parser.add_argument("--lexical_bm25_rank_start", type=int, default=31, help="lexical negatives: BM25 ranks from")
    parser.add_argument("--lexical_bm25_rank_end", type=int, default=50, help="... to (inclusive)")
    parser.add_argument("--lexical_bm25_negatives", type=int, default=10, help="sampled from those ranks")
    parser.add_argument("--lexical_dense_negatives", type=int, default=10, help="dense top ids added")
    parser.add_argument(
        "--backfill",
        default="none",
        choices=BACKFILL_SOURCES,
        help="bm25: top samples up with BM25 hits for their query (§5.3 [REC]; off in the paper)",
    )
    parser.add_argument("--backfill_depth", type=int, default=50)
    parser.add_argument("--backfill_to", type=int, default=11, help="target negatives (train_group_size - 1)")
    parser.add_argument("--cache_root", default=settings.bright_cache_dir, help="BM25 indexes under <cache_root>/bm25")
    parser.add_argument(
        "--passage_text",
        default="raw",
        choices=PASSAGE_TEXTS,
        help="raw corpus text, or the statement before \\begin{proof}",
    )
    parser.add_argument("--seed", type=int, default=0, help="lexical negative sampling and --shuffle")
    parser.add_argument("--shuffle", action="store_true", help="shuffle rows (default: sorted by type, query id)")
    parser.add_argument("--corpus", default=None, help="read texts from this corpus source instead of the records'")
    parser.add_argument("--corpus_split", default=None, help="... and this split")
    parser.add_argument(
        "--bright_revision",
        default=None,
        help="BRIGHT revision of an 'hf' corpus (default: the one generate_queries recorded, else the pin)",
    )
    parser.add_argument(
        "--allow_unfinished",
        action="store_true",
        help="accept query directories without _SUCCESS (a generate_queries run still going)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a training set built with other settings")
    parser.add_argument("--quiet", action="store_true")
    return parser


def parse_config(argv: list[str] | None = None, settings: Settings | None = None) -> BuildConfig:
    settings = settings or load_settings()
    parser = build_parser(settings)
    args = parse_flags(parser, argv)
    require_flags(parser, args, "queries_dir", "output")
    values = {k: v for k, v in vars(args).items() if k != "config"}
    values["queries_dir"] = tuple(dict.fromkeys(values["queries_dir"]))
    if values["query_types"] is not None:
        values["query_types"] = tuple(dict.fromkeys(values["query_types"]))
    config = BuildConfig(**values)
    if not config.output.endswith(".jsonl"):
        parser.error(f"--output must name a .jsonl file, got {config.output!r}")
    if (config.corpus is None) != (config.corpus_split is None):
        parser.error("--corpus and --corpus_split go together")
    return config


def side_file(output: str | Path, suffix: str) -> Path:
    """``train.jsonl`` -> ``train.<suffix>``."""
    path = Path(output)
    return path.with_name(path.name[: -len(".jsonl")] + "." + suffix)


def read_inputs(config: BuildConfig) -> tuple[list[QueryRecord], tuple[str, ...], list[dict[str, Any]]]:
    """All records of the chosen types, the types used, and each input directory's generation config."""
    present: list[str] = []
    latest: list[str] = []  # types the directory's last generate_queries run produced (its config.json)
    sources: list[dict[str, Any]] = []
    for directory in map(Path, config.queries_dir):
        if not directory.is_dir():
            raise FileNotFoundError(f"--queries_dir {directory} does not exist")
        if not (directory / "_SUCCESS").is_file() and not config.allow_unfinished:
            raise ValueError(
                f"{directory} has no _SUCCESS marker: generate_queries did not finish there; rerun it (it resumes) "
                "or pass --allow_unfinished"
            )
        found = [t for t in QUERY_TYPES if queries_file(directory, t).is_file()]
        config_path = directory / "config.json"
        info = read_record(config_path) if config_path.is_file() else {}
        declared = info.get("settings", {}).get("query_types")
        present += found
        latest += [t for t in found if declared is None or t in declared]
        sources.append(
            {
                "queries_dir": str(directory),
                "generator_model": info.get("derived", {}).get("generator_model"),
                "prompts": info.get("identity", {}).get("prompts"),
                "runs": info.get("derived", {}).get("runs"),
                "bright_revision": info.get("identity", {}).get("bright_revision"),
            }
        )
    # By default only what the last run in each directory produced: a file left by an earlier run with other
    # settings is not silently mixed in (name it in --query_types to use it).
    types = config.query_types or tuple(t for t in QUERY_TYPES if t in latest)
    ignored = sorted(set(present) - set(types))
    if ignored and config.query_types is None:
        logger.warning("ignoring queries files of types %s left by an earlier generate_queries run", ignored)
    missing = [t for t in types if t not in present]
    if missing:
        raise FileNotFoundError(f"no queries_<type>.jsonl for {missing} in {list(config.queries_dir)}")
    if not types:
        raise FileNotFoundError(f"no queries_<type>.jsonl files in {list(config.queries_dir)}")
    records: list[QueryRecord] = []
    for directory in map(Path, config.queries_dir):
        for query_type in types:
            path = queries_file(directory, query_type)
            if path.is_file():
                records.extend(read_records(path))
            else:
                logger.warning("%s has no %s; skipped", directory, path.name)
    if config.corpus is not None:
        override = {"source": config.corpus, "split": str(config.corpus_split)}
        records = [_with_corpus(r, override) for r in records]
    return records, types, sources


def _with_corpus(record: QueryRecord, corpus: dict[str, str]) -> QueryRecord:
    from dataclasses import replace

    return replace(record, corpus=dict(corpus))


def run(config: BuildConfig) -> dict[str, Any]:
    from models.embedded.champ import source_with_champ
    from models.retrieval.corpus import load_corpus, resolve_revision, revision_applies

    output = Path(config.output)
    records, types, sources = read_inputs(config)
    revision = resolve_revision(config.bright_revision, {s["queries_dir"]: s["bright_revision"] for s in sources})
    record = StageRecord(
        STAGE,
        _flags(config),
        informational=INFORMATIONAL,
        identity={"inputs": sources},
        # What the trained model will say it was trained on (models.evaluation.recipes reads it back).
        derived={"query_types": list(types), "datasets": sorted({r.source for r in records}), "bright_revision": revision},
    )
    if not config.overwrite:
        check_rerun(side_file(output, "config.json"), record, fresh_run="pass --overwrite or another --output")
    output.parent.mkdir(parents=True, exist_ok=True)
    record.write(side_file(output, "config.json"))
    logger.info("read %d records of types %s from %d directories", len(records), list(types), len(config.queries_dir))
    keys = sorted({(r.corpus["source"], r.corpus["split"]) for r in records})
    corpora = {}
    for source, split in keys:
        resolved = source_with_champ(source, split)
        corpora[(source, split)] = load_corpus(resolved, split, revision=revision if revision_applies(resolved) else None)
    assembly = AssemblyConfig(
        query_types=types,
        min_negatives=config.min_negatives,
        max_negatives=config.max_negatives,
        lexical_top_k=config.lexical_top_k,
        lexical_bm25_rank_start=config.lexical_bm25_rank_start,
        lexical_bm25_rank_end=config.lexical_bm25_rank_end,
        lexical_bm25_negatives=config.lexical_bm25_negatives,
        lexical_dense_negatives=config.lexical_dense_negatives,
        backfill=config.backfill,
        backfill_depth=config.backfill_depth,
        backfill_to=config.backfill_to,
        passage_text=config.passage_text,
        seed=config.seed,
    )
    bm25_search = _bm25_search(corpora, str(Path(config.cache_root) / "bm25")) if config.backfill == "bm25" else None
    result = Assembler(assembly, corpora, bm25_search).assemble(records)
    rows = result.rows
    if config.shuffle:
        random.Random(config.seed).shuffle(rows)
    else:
        rows.sort(key=lambda row: (QUERY_TYPES.index(row["query_type"]), row["query_id"]))
    stats = {**result.stats, "inputs": sources}
    atomic_write_json(side_file(output, "stats.json"), stats)
    atomic_write_text(side_file(output, "stats.md"), stats_markdown(stats))
    atomic_write_jsonl(side_file(output, "drops.jsonl"), [asdict(drop) for drop in result.drops])
    atomic_write_jsonl(output, rows)
    by_type = stats["by_type"]
    logger.info(
        "wrote %d samples to %s (%s); dropped %d: %s",
        len(rows),
        output,
        {t: by_type[t]["kept"] for t in types},
        len(result.drops),
        by_type["all"]["dropped"],
    )
    return stats


def _flags(config: BuildConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def _bm25_search(corpora: dict[CorpusKey, Any], cache_root: str) -> Any:
    from models.retrieval.retrievers import BM25Retriever
    from run_src.query_synthesis.lexical import bm25_ranked_ids

    indexes = {
        key: BM25Retriever.from_corpus(corpus, Path(cache_root) / corpus.name) for key, corpus in corpora.items()
    }

    def search(key: CorpusKey, queries: list[str], depth: int) -> list[list[str]]:
        return bm25_ranked_ids(indexes[key], queries, depth)

    return search


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    configure_logging(quiet=config.quiet)

    def body() -> int:
        logger.info("config: %s", asdict(config))
        stats = run(config)
        print(json.dumps({t: item["kept"] for t, item in stats["by_type"].items()}))
        if not stats["by_type"]["all"]["kept"]:
            logger.error("no sample survived; %s says why each was dropped", side_file(config.output, "drops.jsonl"))
            return EXIT_FAILED
        return 0

    return run_stage(body, name=STAGE)


if __name__ == "__main__":
    sys.exit(main())
