"""Stage 6: evaluate one retriever on one BRIGHT split (or the embedded CHAMP split): retrieve, score, write files.

    python -m run_src.evaluate_bright --task theoremqa_theorems --model rader --model_path DIR \
        --query_type gpt4_reason --output_dir outputs/bright
    python -m run_src.evaluate_bright --task biology --model rader --model_path DIR --hybrid_bm25_alpha auto ...
    python -m run_src.evaluate_bright --task aops --scores run.trec --output_dir outputs/bright
    python -m run_src.evaluate_bright --task aops --task leetcode --query_type original --query_type gpt4_reason ...

A sweep (``--task`` and ``--query_type`` repeated) runs every combination in one process with the dense
model loaded once; each combination is its own run directory with its own record, exactly as if it had been
run alone, and a failing one does not stop the others (the exit status is the worst).

Owns the orchestration of specs/evaluation.md §2.2 plus the BM25 hybrid of §4; the metrics are
:mod:`models.evaluation.metrics`, the registries :mod:`models.evaluation.tasks`, the retrievers
:mod:`models.retrieval.retrievers`, the data :mod:`models.retrieval.corpus`.

Output (DESIGN.md §3, Evaluation): one run directory per (run name, query type, task),
``<output_dir>/<model_name>/<query_type>/<task>[_long]/``, so runs with and without reasoning
queries never collide (BRIGHT pitfall §10.4). ``model_name`` defaults to the ``--model`` key (with
``--model_path``: ``<key>-<model folder>``, so two checkpoints never share a run), plus
``+bm25`` (or ``+bm25_a<alpha>`` for an explicit alpha) for hybrids; with ``--scores`` it defaults to the
file's stem. It holds

* ``config.json``   the stage record (every setting), written before any retrieval (``--config`` reads it back);
* ``score.json``    ``{qid: {docid: score}}``, best first, top ``--top_k`` (1000) after removing excluded ids;
* ``results.json``  the 25 BRIGHT metrics (``NDCG@10`` … ``MRR``), rounded to 5 decimals;
* ``per_query.json`` ``{qid: {same keys}}`` unrounded, for every evaluated query.

An existing ``score.json`` is reused (only the metrics are recomputed) when its ``config.json`` agrees on
every setting but the informational ones; otherwise the stage refuses and names the differences
(``--overwrite`` retrieves again, ``--model_name`` writes a separate run). Dense document embeddings
come from the cache stage 1 writes for the same encoder flags (:mod:`models.retrieval.encoder_flags`).
With ``--scores FILE`` (score.json, TREC or Tevatron format) nothing is retrieved and no corpus is
loaded: the file's run gets the same post-processing (excluded ids removed, top ``--top_k``) and is
evaluated. Queries without gold documents (47 of CHAMP's 270 problems) cannot be scored and are
not retrieved for.

Hybrid (``--hybrid_bm25_alpha A|auto``, paper §6.1): per query, ``A·z(dense) + (1−A)·z(bm25)``.
``auto`` is 1.0 on the math tasks (aops, theoremqa_questions, theoremqa_theorems, champ) and 0.8
elsewhere; ``A = 1`` returns the dense run unchanged (raw cosine, no z-scores: spec §4 shows the
released file holds raw scores and the reranking interpolation depends on it). For ``A < 1`` the z-score
population is ``--hybrid_population``: ``corpus`` (every non-excluded document, the default) or ``topk:N``
(each retriever's own top N); :mod:`models.retrieval.hybrid` explains both.

Data: ``--bright_revision`` pins the ``xlangai/BRIGHT`` commit a Hub source loads (default
:data:`models.retrieval.corpus.BRIGHT_REVISION`); ``config.json`` records it with the source the data came
from and the corpus size (``derived.data``), and the summary line prints both.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.embedded.champ import source_with_champ
from models.evaluation.metrics import DEFAULT_K_VALUES, Run, evaluate_run, read_run
from models.evaluation.recipes import model_recipe
from models.evaluation.runs import check_no_excluded, gold_ids, postprocess_run, qrels_from_examples
from models.evaluation.tasks import RETRIEVERS, TASKS, default_run_name, encoder_flags_for, hybrid_alpha_for
from models.io_utils import atomic_write_json
from models.retrieval.corpus import (
    BRIGHT_SPLITS,
    LONG_DOCUMENT_SPLITS,
    QUERY_TYPES,
    Corpus,
    Example,
    add_bright_revision_argument,
    revision_applies,
)
from models.retrieval.encoder_flags import (
    INFORMATIONAL_ENCODER_FLAGS,
    NO_INSTRUCTION,
    EncoderFlags,
    add_encoder_arguments,
    check_encoder_flags,
    doc_cache_name,
)
from models.retrieval.hybrid import CORPUS_POPULATION, hybrid_search, parse_population
from models.retrieval.model_identity import model_fingerprint
from models.retrieval.retrievers import BM25Retriever, DenseRetriever, Retriever
from models.retrieval.text_formats import query_instruction
from models.settings import Settings, load_settings
from models.stage import (
    EXIT_INTERRUPTED,
    SettingsChanged,
    StageError,
    StageRecord,
    add_config_argument,
    check_rerun,
    configure_logging,
    parse_flags,
    require_flags,
    run_stage,
)

logger = logging.getLogger(__name__)

STAGE = "evaluate_bright"
RECORD_NAME = "config.json"
DEFAULT_TOP_K = 1000  # BRIGHT get_scores keeps the top 1000 per query (specs/evaluation.md §2.2 step 6)
# Settings that do not change which documents a run holds; a reused score.json may differ in them.
INFORMATIONAL = frozenset({"output_dir", "bright_dir", "cache_root", "overwrite", "missing_queries", "dtype",
                           "model_path", "tokenizer", *INFORMATIONAL_ENCODER_FLAGS})  # fmt: skip


@dataclass(frozen=True)
class EvalConfig:
    """Resolved settings of one evaluation run; ``config.json`` records exactly these (encoder flags flat)."""

    task: str
    model: str | None
    model_name: str
    query_type: str
    long_context: bool
    output_dir: str
    bright_dir: str
    bright_revision: str
    cache_root: str
    scores: str | None
    overwrite: bool
    top_k: int
    hybrid_bm25_alpha: float | None
    hybrid_population: str
    missing_queries: str
    encoder: EncoderFlags

    @property
    def run_dir(self) -> Path:
        task_dir = f"{self.task}_long" if self.long_context else self.task
        return Path(self.output_dir) / self.model_name / self.query_type / task_dir

    @property
    def is_dense(self) -> bool:
        return self.model is not None and RETRIEVERS[self.model].kind == "dense"

    def settings(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "encoder"}
        return {**values, **self.encoder.as_flags()}


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m run_src.{STAGE}", description=__doc__.splitlines()[0])
    add_config_argument(parser)
    parser.add_argument(
        "--task", action="append", choices=sorted(TASKS), help="BRIGHT split, or champ (required; repeat for a sweep)"
    )
    parser.add_argument(
        "--model",
        choices=sorted(RETRIEVERS),
        help="retriever key (required unless --scores): "
        + "; ".join(f"{name}: {spec.description}" for name, spec in RETRIEVERS.items()),
    )
    parser.add_argument(
        "--model_name", default="", help="run name (default: the --model key, +bm25 for hybrids; --scores: its stem)"
    )
    parser.add_argument(
        "--query_type", action="append", choices=QUERY_TYPES, help="original (default) or LLM reasoning; repeatable"
    )
    parser.add_argument("--long_context", action="store_true", help="long_documents corpus and gold_ids_long")
    parser.add_argument("--bright_dir", default=settings.bright_dir or "hf", help="hf | hf:<repo or dir> | mirror dir")
    add_bright_revision_argument(parser, settings.bright_revision)
    parser.add_argument("--output_dir", help="root of the run directories (required)")
    parser.add_argument("--cache_root", default=settings.bright_cache_dir, help="BM25 indexes and doc embeddings")
    parser.add_argument("--scores", default=None, help="evaluate this run file instead of retrieving")
    parser.add_argument("--overwrite", action="store_true", help="retrieve again even if score.json exists")
    parser.add_argument("--top_k", type=int, default=DEFAULT_TOP_K, help="documents kept per query")
    parser.add_argument(
        "--hybrid_bm25_alpha",
        nargs="?",
        const="auto",
        default=None,
        help="fuse with BM25: alpha in [0, 1] or 'auto' (1.0 math tasks, 0.8 otherwise)",
    )
    parser.add_argument(
        "--hybrid_population",
        default=CORPUS_POPULATION,
        help="documents the hybrid's z-scores are taken over: 'corpus' (every non-excluded one) or 'topk:N' "
        "(each retriever's top N, missing = that list's minimum)",
    )
    parser.add_argument(
        "--missing_queries",
        default="drop",
        choices=["drop", "zero"],
        help="queries absent from the run: drop from the means (BRIGHT) or score 0 (trec_eval -c)",
    )
    add_encoder_arguments(parser, title="dense encoder (defaults come from the --model entry)")
    return parser


def parse_config(argv: list[str] | None = None, settings: Settings | None = None) -> EvalConfig:
    """The one run ``argv`` describes (one task, one query type); see :func:`parse_configs` for sweeps."""
    configs = parse_configs(argv, settings)
    if len(configs) > 1:
        raise ValueError(f"these flags describe a sweep of {len(configs)} runs; use parse_configs")
    return configs[0]


def parse_configs(argv: list[str] | None = None, settings: Settings | None = None) -> list[EvalConfig]:
    """Parse flags (and ``--config``) into one resolved :class:`EvalConfig` per (query type, task) pair.

    Bad combinations exit via argparse before any run starts.
    """
    settings = settings or load_settings()
    parser = build_parser(settings)
    args = parse_flags(parser, argv)
    require_flags(parser, args, "task", "output_dir")
    tasks = list(dict.fromkeys(_as_list(args.task)))
    query_types = list(dict.fromkeys(_as_list(args.query_type) or ["original"]))
    if args.scores and len(tasks) * len(query_types) > 1:
        parser.error("--scores evaluates one run file: give one --task and one --query_type")
    return [_resolve(parser, args, task, query_type, settings) for query_type in query_types for task in tasks]


def _as_list(value: str | list[str] | None) -> list[str]:
    """A repeatable flag's values; a ``--config`` record stores one run's value as a plain string."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _resolve(
    parser: argparse.ArgumentParser, args: argparse.Namespace, task: str, query_type: str, settings: Settings
) -> EvalConfig:
    args = argparse.Namespace(**{**vars(args), "task": task, "query_type": query_type})
    if not args.model and not args.scores:
        parser.error("--model is required (a retriever key), unless --scores names a run file to evaluate")
    if args.long_context and args.task in BRIGHT_SPLITS and args.task not in LONG_DOCUMENT_SPLITS:
        parser.error(f"--long_context: {args.task} has no long_documents (only {', '.join(LONG_DOCUMENT_SPLITS)})")
    if args.top_k < 1:
        parser.error(f"--top_k must be >= 1, got {args.top_k}")

    spec = RETRIEVERS[args.model] if args.model else None
    alpha = _parse_alpha(args.hybrid_bm25_alpha, args.task, parser)
    if alpha is not None and (spec is None or spec.kind != "dense"):
        parser.error("--hybrid_bm25_alpha fuses a dense retriever (--model KEY) with BM25")
    if alpha is not None and alpha < 1.0 and args.scores:
        parser.error("--hybrid_bm25_alpha < 1 scores the full corpus with both retrievers; it cannot use --scores")
    try:
        population = parse_population(args.hybrid_population)
    except ValueError as err:
        parser.error(f"--hybrid_population: {err}")
    if population is not None and (alpha is None or alpha >= 1.0):
        parser.error("--hybrid_population topk:N applies to a hybrid with --hybrid_bm25_alpha below 1")
    if args.model_name:
        model_name = args.model_name
    elif args.model:
        model_name = default_run_name(args.model, args.model_path, settings) + _hybrid_suffix(args.hybrid_bm25_alpha, alpha)
    else:
        model_name = Path(args.scores).stem

    encoder = EncoderFlags.from_args(args)
    if spec is not None and spec.kind == "dense":
        try:
            encoder = encoder_flags_for(args.model, encoder, settings)
        except ValueError as err:  # a refused key (grit) or flags its family cannot take
            parser.error(str(err))
        if not encoder.model_path and not args.scores:
            parser.error(f"--model {args.model} needs --model_path (a model directory or Hub id)")
        # BRIGHT's instruction for the task unless --instruction_task says otherwise.
        encoder = dataclasses.replace(
            encoder, instruction_task=encoder.instruction_task or TASKS[args.task].instruction_task
        )
        if encoder.instruction_task not in (NO_INSTRUCTION, *BRIGHT_SPLITS):
            parser.error(
                f"--instruction_task {encoder.instruction_task!r}: use a BRIGHT split key or '{NO_INSTRUCTION}'"
            )
        problem = check_encoder_flags(encoder) if encoder.model_path else None
        if problem:
            parser.error(problem)
    elif encoder != EncoderFlags():
        parser.error("dense-encoder flags (--model_path, --pooling, ...) need a dense --model key")
    return EvalConfig(
        task=args.task,
        model=args.model,
        model_name=model_name,
        query_type=args.query_type,
        long_context=args.long_context,
        output_dir=args.output_dir,
        bright_dir=args.bright_dir,
        bright_revision=args.bright_revision,
        cache_root=args.cache_root,
        scores=args.scores,
        overwrite=args.overwrite,
        top_k=args.top_k,
        hybrid_bm25_alpha=alpha,
        hybrid_population=args.hybrid_population,
        missing_queries=args.missing_queries,
        encoder=encoder,
    )


def _parse_alpha(value: str | None, task: str, parser: argparse.ArgumentParser) -> float | None:
    if value is None:
        return None
    if value == "auto":
        return hybrid_alpha_for(task)
    try:
        alpha = float(value)
    except ValueError:
        parser.error(f"--hybrid_bm25_alpha {value!r}: give a number in [0, 1] or 'auto'")
    if not 0.0 <= alpha <= 1.0:
        parser.error(f"--hybrid_bm25_alpha {alpha} is outside [0, 1]")
    return alpha


def _hybrid_suffix(raw: str | None, alpha: float | None) -> str:
    if alpha is None:
        return ""
    return "+bm25" if raw == "auto" else f"+bm25_a{alpha:g}"


# ------------------------------------------------------------------------------------------------ retrieval


def instruction_text(config: EvalConfig) -> str | None:
    """The literal query instruction the dense encoder will prepend (``None`` for BM25)."""
    if not config.is_dense:
        return None
    fmt = config.encoder.text_format_for(config.long_context)
    return query_instruction(fmt, config.encoder.instruction_split(config.task))


class EncoderPool:
    """The dense encoders of a sweep, each built once: runs on other splits and query types reuse the model."""

    def __init__(self) -> None:
        self._encoders: dict[Any, Any] = {}

    def get(self, encoder_config: Any) -> Any:
        from models.retrieval.encoders import build_encoder

        if encoder_config not in self._encoders:
            self._encoders[encoder_config] = build_encoder(encoder_config)
        else:
            logger.info("reusing the loaded encoder %s", encoder_config.model_name_or_path)
        return self._encoders[encoder_config]


def build_retriever(config: EvalConfig, corpus: Corpus, encoders: EncoderPool | None = None) -> Retriever:
    if not config.is_dense:
        return BM25Retriever.from_corpus(corpus, cache_dir=Path(config.cache_root) / "bm25" / corpus.name)
    encoder_config = config.encoder.encoder_config(config.long_context)
    encoder = (encoders or EncoderPool()).get(encoder_config)
    # The cache is named by the encoder (one rule for every stage), so stage 1 and dense and hybrid runs share it.
    return DenseRetriever.from_cache(
        encoder,
        corpus,
        config.cache_root,
        doc_cache_name(encoder_config),
        task=config.encoder.instruction_split(config.task),
    )


def retrieve(
    config: EvalConfig, corpus: Corpus, examples: Sequence[Example], encoders: EncoderPool | None = None
) -> Run:
    """Top ``top_k`` per query with excluded ids removed before the cut; hybrid when configured.

    Queries are encoded shortest first so that each batch pads little (encoders pad to the batch's
    longest text); the run is returned in the examples' order.
    """
    retriever = build_retriever(config, corpus, encoders)
    by_length = sorted(examples, key=lambda e: len(e.query))
    alpha = config.hybrid_bm25_alpha
    if alpha is not None and alpha < 1.0:
        assert isinstance(retriever, DenseRetriever)  # parse_config allows hybrids for dense models only
        bm25 = BM25Retriever.from_corpus(corpus, cache_dir=Path(config.cache_root) / "bm25" / corpus.name)
        population = parse_population(config.hybrid_population)
        run = hybrid_search(retriever, bm25, by_length, alpha, config.top_k, population)
    else:
        if alpha is not None:
            logger.info("hybrid alpha %.1f: the run is the dense run with raw scores (no z-normalisation)", alpha)
        hits = retriever.search_batch(
            [e.query for e in by_length], k=config.top_k, excluded_ids=[e.excluded_ids for e in by_length]
        )
        run = {e.query_id: dict(h) for e, h in zip(by_length, hits, strict=True)}
    return {e.query_id: run[e.query_id] for e in examples}


# ------------------------------------------------------------------------------------------------ stage


def stage_record(config: EvalConfig, source: str) -> StageRecord:
    identity: dict[str, Any] = {}
    if config.is_dense and config.encoder.model_path and not config.scores:
        identity["model_fingerprint"] = model_fingerprint(config.encoder.model_path)
    return StageRecord(
        STAGE,
        config.settings(),
        informational=INFORMATIONAL,
        identity=identity,
        derived={
            "run_dir": str(config.run_dir),
            "source": source,
            "query_instruction_text": instruction_text(config),
            "k_values": list(DEFAULT_K_VALUES),
            "recipe": recipe_of(config),
        },
    )


def recipe_of(config: EvalConfig) -> str | None:
    """Which paper row this run reproduces (:mod:`models.evaluation.recipes`); ``None`` for external runs."""
    if config.scores:
        return None
    recipe = model_recipe(config.model, config.encoder.model_path or None)
    return recipe + "+bm25" if recipe and config.hybrid_bm25_alpha is not None else recipe


def run_evaluation(config: EvalConfig, encoders: EncoderPool | None = None) -> dict[str, float]:
    """Run the stage for ``config``; returns the aggregate metrics (also in ``results.json``).

    Everything that can be refused (settings, data, a ``--scores`` file for another split) is checked before
    the run directory gets any file, so a refused run leaves nothing behind.
    """
    from models.retrieval.corpus import load_corpus, load_examples

    run_dir = config.run_dir
    source = source_with_champ(config.bright_dir, config.task)
    revision = config.bright_revision if revision_applies(source) else None
    record = stage_record(config, source)
    score_path = run_dir / "score.json"
    fresh_run = "pass --overwrite to retrieve again, or --model_name to write a separate run"
    stored = not config.overwrite and check_rerun(run_dir / RECORD_NAME, record, fresh_run)
    reusable = stored and score_path.is_file() and not config.scores
    if score_path.is_file() and not stored and not config.overwrite and not config.scores:
        raise SettingsChanged(f"{score_path} has no {RECORD_NAME}, so its settings are unknown; {fresh_run}")
    all_examples = load_examples(source, config.task, config.query_type, revision=revision)
    examples = [e for e in all_examples if gold_ids(e, config.long_context)]
    if len(examples) < len(all_examples):
        logger.info(
            "%d of %d queries have no gold documents and are not evaluated",
            len(all_examples) - len(examples),
            len(all_examples),
        )
    if not examples:
        raise ValueError(f"no query of {config.task} ({source}) has gold documents; nothing to evaluate")
    data: dict[str, Any] = {"source": str(source), "revision": revision, "queries": len(all_examples),
                            "evaluated_queries": len(examples)}  # fmt: skip

    corpus: Corpus | None = None
    if config.scores:
        run = postprocess_run(read_run(config.scores), all_examples, config.top_k)
        check_scores_cover(run, examples, config)
    elif reusable:
        data["corpus_documents"] = stored_corpus_size(run_dir / RECORD_NAME)
    else:
        corpus = load_corpus(source, config.task, long_context=config.long_context, revision=revision)
        data["corpus_documents"] = len(corpus)
        logger.info("%s: %d documents, %d queries (%s)", config.task, len(corpus), len(all_examples), corpus.source)
    record.derived["data"] = data
    run_dir.mkdir(parents=True, exist_ok=True)
    record.write(run_dir / RECORD_NAME)  # before any retrieval: a bad output dir fails here

    if config.scores:
        atomic_write_json(score_path, run)
    elif reusable:
        logger.info("reusing %s (pass --overwrite to retrieve again)", score_path)
        run = read_run(score_path)
    else:
        assert corpus is not None
        run = retrieve(config, corpus, examples, encoders)
        atomic_write_json(score_path, run)
        logger.info("wrote %s (%d queries)", score_path, len(run))

    qrels = qrels_from_examples(examples, config.long_context)
    check_no_excluded(run, qrels, all_examples)
    aggregate, per_query = evaluate_run(qrels, run, DEFAULT_K_VALUES, missing_queries=config.missing_queries)
    atomic_write_json(run_dir / "per_query.json", per_query)
    atomic_write_json(run_dir / "results.json", aggregate)
    logger.info("evaluated %d queries: %s", len(per_query), aggregate)
    return aggregate


def check_scores_cover(run: Run, examples: Sequence[Example], config: EvalConfig) -> None:
    """Refuse a ``--scores`` file none of whose queries can be scored on this task (another split's run)."""
    scorable = {e.query_id for e in examples}
    if not scorable & set(run):
        raise StageError(
            f"--scores {config.scores}: none of its queries is a scorable query of {config.task} "
            f"({len(scorable)} queries, e.g. {sorted(scorable)[:3]}); is it a run for another split or query type?"
        )


def stored_corpus_size(path: Path) -> int | None:
    """The corpus size a reused run recorded (``None`` for records from before it was recorded)."""
    data = json.loads(path.read_text(encoding="utf-8")).get("derived", {}).get("data", {})
    size = data.get("corpus_documents")
    return int(size) if isinstance(size, int) else None


def data_summary(config: EvalConfig) -> str:
    """``BRIGHT@3066d29c9651, 2159 documents`` from the record the run wrote."""
    data = json.loads((config.run_dir / RECORD_NAME).read_text(encoding="utf-8"))["derived"]["data"]
    where = f"revision {data['revision'][:12]}" if data.get("revision") else Path(data["source"]).name or data["source"]
    size = data.get("corpus_documents")
    return f"{where}, {size} documents" if size is not None else where


def main(argv: list[str] | None = None) -> int:
    configs = parse_configs(argv)
    configure_logging()
    encoders = EncoderPool()
    codes = []
    for number, config in enumerate(configs, start=1):

        def body(config: EvalConfig = config) -> None:
            logger.info("config: %s", config.settings())
            results = run_evaluation(config, encoders)
            summary = " ".join(f"{key} {results[key]:.5f}" for key in ("NDCG@10", "Recall@10", "Recall@100", "MRR"))
            print(f"{config.task} {config.model_name} {config.query_type}: {summary} [{data_summary(config)}] "
                  f"-> {config.run_dir}")  # fmt: skip

        if len(configs) > 1:
            logger.info("run %d of %d: %s / %s", number, len(configs), config.query_type, config.task)
        codes.append(run_stage(body, name=STAGE))
        if codes[-1] == EXIT_INTERRUPTED:
            break
    failed = [f"{c.query_type}/{c.task}" for c, code in zip(configs, codes, strict=False) if code != 0]
    if failed and len(configs) > 1:
        logger.error("%d of %d runs failed: %s", len(failed), len(configs), ", ".join(failed))
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
