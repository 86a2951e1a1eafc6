"""Rerank the top-k of a first-stage BRIGHT run (or the embedded CHAMP split) and evaluate the result.

    python -m run_src.rerank --task theoremqa_theorems --reranker llm --model Qwen/Qwen2.5-32B-Instruct \
        --first_stage_dir outputs/bright/rader+bm25/gpt4_reason/theoremqa_theorems --output_dir outputs/bright
    python -m run_src.rerank --task biology --reranker pointwise --model outputs/rader_reranker \
        --first_stage_dir outputs/bright/bm25/original/biology --top_k 100 --output_dir outputs/bright

Owns the orchestration of specs/evaluation.md §5: read a first-stage run, keep each query's top
``--top_k`` (100) after removing excluded ids, score every (query, document) pair, mix, evaluate.
The rerankers are :mod:`models.reranking.llm` (paper Table 2 "+QwenRerank") and
:mod:`models.reranking.pointwise` (the RaDeR reranker, Tables 5–6); data, post-processing and
metrics are :mod:`models.evaluation`'s, as in ``evaluate_bright``.

Scores. ``final = w · rerank + (1 − w) · first_stage`` with the first stage on its raw scale and
``w = --rerank_weight``: 0.5 for ``llm`` (the paper's interpolation), 1.0 for ``pointwise`` (RaDeR's
``rerank.py`` ranks by the logit alone). Ties keep first-stage order. Only the reranked top-k
documents are in the output, as in the reference, so metrics at cut-offs above ``--top_k`` are not
meaningful.

Queries. ``--query_type`` picks the text the reranker reads. Default: the first stage's query type
for ``llm`` (QwenRerank read the GPT-4 reasoning, §5.3), ``original`` for ``pointwise`` (the paper's
rerankers "receive only the question", Table 6).

Output: ``<output_dir>/<model_name>/<first-stage query type>/<task>[_long]/`` with the files
``evaluate_bright`` writes (``config.json``, ``score.json`` = the mixed run, ``results.json``,
``per_query.json``) plus ``rerank_scores.json`` (reranker scores alone, the reference's
``gpt4_score.json``), ``rerank_only_results.json``, ``first_stage_results.json`` (the same queries
and top-k before reranking) and ``rerank_cache.jsonl``. ``model_name`` defaults to
``<first-stage model>+<reranker name>`` (``+…_q<query type>`` when the reranker reads other
queries than the first stage did).

Resuming: each query's scores are appended to ``rerank_cache.jsonl`` as soon as they exist, so a
killed run continues where it stopped; cached queries are reused when their candidate list is
unchanged, pairs whose request failed are asked again. A cache written with other scoring
settings (``rerank_cache_meta.json``) is refused unless ``--overwrite``, and so is a rerun into a run
directory whose ``config.json`` holds other settings (the informational ones excepted).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from models.embedded.champ import source_with_champ
from models.evaluation.metrics import DEFAULT_K_VALUES, Run, evaluate_run, read_run
from models.evaluation.recipes import reranked_recipe, run_recipe
from models.evaluation.runs import gold_ids, postprocess_run, qrels_from_examples
from models.evaluation.tasks import TASKS
from models.io_utils import append_jsonl, atomic_write_json
from models.llm.prompt_templates import load_prompt
from models.reranking.llm import (
    DEFAULT_RERANK_WEIGHT,
    PROMPT_PATH,
    PROMPT_PLACEHOLDERS,
    STATUSES,
    LLMReranker,
    LLMRerankerConfig,
    combine_scores,
    criterion_for,
    rank_by,
)
from models.retrieval.corpus import (
    BRIGHT_SPLITS,
    LONG_DOCUMENT_SPLITS,
    QUERY_TYPES,
    Corpus,
    Example,
    load_corpus,
    load_examples,
)
from models.settings import Settings, load_settings
from models.stage import (
    StageRecord,
    add_config_argument,
    check_rerun,
    configure_logging,
    parse_flags,
    read_record,
    require_flags,
    run_stage,
)

logger = logging.getLogger(__name__)

STAGE = "rerank"
CACHE_SCHEMA_VERSION = 1
RERANKERS = ("llm", "pointwise")
DEFAULT_TOP_K = 100  # paper Table 2 "+QwenRerank (top-100)"; Tables 5-6 rerank BM25 top-100
CACHE_NAME = "rerank_cache.jsonl"
CACHE_META_NAME = "rerank_cache_meta.json"
POINTWISE_RERANK_WEIGHT = 1.0
# Speed, endpoints and locations: recorded, never compared on a rerun.
INFORMATIONAL = frozenset({"output_dir", "bright_dir", "overwrite", "missing_queries", "base_url", "max_concurrency",
                           "queries_per_batch", "timeout_s", "max_retries", "batch_size", "device"})  # fmt: skip


@dataclass(frozen=True)
class RerankConfig:
    """Resolved settings of one reranking run; ``config.json`` holds exactly these fields (+ ``derived``)."""

    task: str
    reranker: str
    model: str
    reranker_name: str
    model_name: str
    first_stage: str
    first_stage_model: str
    first_stage_query_type: str
    query_type: str
    long_context: bool
    bright_dir: str
    output_dir: str
    top_k: int
    rerank_weight: float
    max_queries: int | None
    missing_queries: str
    overwrite: bool
    # llm
    base_url: str | None
    max_concurrency: int
    queries_per_batch: int
    timeout_s: float
    max_retries: int
    max_tokens: int
    temperature: float
    seed: int | None
    max_doc_chars: int | None
    unparsable_score: float
    prompt_path: str
    # pointwise
    batch_size: int
    base_model: str | None
    merge_lora: bool
    dtype: str
    device: str

    @property
    def run_dir(self) -> Path:
        task_dir = f"{self.task}_long" if self.long_context else self.task
        return Path(self.output_dir) / self.model_name / self.first_stage_query_type / task_dir

    def llm_config(self) -> LLMRerankerConfig:
        return LLMRerankerConfig(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            seed=self.seed,
            max_doc_chars=self.max_doc_chars,
            unparsable_score=self.unparsable_score,
            prompt_path=self.prompt_path,
        )


# Settings that change the cached rerank scores of a pair (the rest only change speed or mixing).
_CACHE_IDENTITY = {
    "llm": ("task", "reranker", "model", "query_type", "long_context", "max_tokens", "temperature", "seed",
            "max_doc_chars", "prompt_path"),
    "pointwise": ("task", "reranker", "model", "query_type", "long_context", "base_model", "merge_lora", "dtype"),
}  # fmt: skip


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m run_src.{STAGE}", description=__doc__.splitlines()[0])
    add_config_argument(parser)
    parser.add_argument("--task", choices=sorted(TASKS), help="BRIGHT split, or champ (required)")
    parser.add_argument("--reranker", choices=RERANKERS, help="llm (0-5 prompt) or pointwise model (required)")
    parser.add_argument(
        "--model",
        default="",
        help="llm: model name on the server (default GENERATOR_MODEL); pointwise: a saved reranker directory",
    )
    first = parser.add_mutually_exclusive_group()
    first.add_argument("--first_stage_dir", help="an evaluate_bright run directory (score.json + config.json)")
    first.add_argument("--first_stage", help="a run file: score.json, 6-column TREC or qid docid score")
    parser.add_argument(
        "--first_stage_model", default="", help="first-stage name for --model_name (default: its config.json)"
    )
    parser.add_argument(
        "--query_type",
        default="",
        choices=["", *QUERY_TYPES],
        help="queries the reranker reads (default: the first stage's for llm, original for pointwise)",
    )
    parser.add_argument("--long_context", action="store_true", help="long_documents corpus and gold_ids_long")
    parser.add_argument("--bright_dir", default=settings.bright_dir or "hf", help="hf | hf:<repo or dir> | mirror dir")
    parser.add_argument("--output_dir", help="root of the run directories (required)")
    parser.add_argument("--model_name", default="", help="run name (default: <first stage>+<reranker name>)")
    parser.add_argument("--reranker_name", default="", help="default: llm-<model> / pointwise-<model dir>")
    parser.add_argument("--top_k", type=int, default=DEFAULT_TOP_K, help="first-stage documents reranked per query")
    parser.add_argument(
        "--rerank_weight",
        type=float,
        default=None,
        help=f"final = w*rerank + (1-w)*first stage (default {DEFAULT_RERANK_WEIGHT} llm, "
        f"{POINTWISE_RERANK_WEIGHT} pointwise)",
    )
    parser.add_argument("--max_queries", type=int, default=None, help="rerank only the first N scorable queries")
    parser.add_argument("--missing_queries", default="drop", choices=["drop", "zero"], help="as in evaluate_bright")
    parser.add_argument("--overwrite", action="store_true", help="discard the cache and score again")
    llm = parser.add_argument_group("llm reranker")
    llm.add_argument("--base_url", default=None, help="OpenAI-compatible API root (default GENERATOR_URL)")
    llm.add_argument("--max_concurrency", type=int, default=32, help="requests in flight")
    llm.add_argument("--queries_per_batch", type=int, default=4, help="queries whose pairs are sent together")
    llm.add_argument("--timeout_s", type=float, default=600.0, help="per-request timeout")
    llm.add_argument("--max_retries", type=int, default=5, help="retries after timeouts, 429 and 5xx")
    defaults = LLMRerankerConfig()
    llm.add_argument("--max_tokens", type=int, default=defaults.max_tokens, help="reply budget")
    llm.add_argument("--temperature", type=float, default=defaults.temperature, help="0 = greedy")
    llm.add_argument("--seed", type=int, default=defaults.seed, help="sampling seed sent to the server")
    llm.add_argument("--max_doc_chars", type=int, default=None, help="cut documents to this many characters")
    llm.add_argument(
        "--unparsable_score",
        type=float,
        default=defaults.unparsable_score,
        help="rerank score (0-1) for replies without a valid score and for failed requests",
    )
    llm.add_argument("--prompt_path", default=str(PROMPT_PATH), help="prompt file")
    point = parser.add_argument_group("pointwise reranker")
    point.add_argument("--batch_size", type=int, default=8, help="pairs per forward pass")
    point.add_argument("--base_model", default=None, help="base model under a LoRA reranker (default: recorded)")
    point.add_argument("--merge_lora", action="store_true", help="merge a LoRA adapter before scoring")
    point.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    point.add_argument("--device", default="auto", help="auto = cuda if available else cpu")
    return parser


def _first_stage_record(path: Path) -> dict[str, Any]:
    """The evaluate_bright record (config.json) next to a score.json, or ``{}``."""
    config_path = path.parent / "config.json" if path.is_file() else path / "config.json"
    return read_record(config_path) if config_path.is_file() else {}


def _first_stage_meta(path: Path) -> dict[str, Any]:
    """The first stage's settings, or ``{}``."""
    return _first_stage_record(path).get("settings", {})


def parse_config(argv: list[str] | None = None, settings: Settings | None = None) -> RerankConfig:
    """Parse flags into a resolved :class:`RerankConfig`; bad combinations exit through argparse."""
    settings = settings or load_settings()
    parser = build_parser(settings)
    args = parse_flags(parser, argv)
    require_flags(parser, args, "task", "reranker", "output_dir")
    if not (args.first_stage_dir or args.first_stage):
        parser.error("one of --first_stage_dir or --first_stage is required")
    if args.long_context and args.task in BRIGHT_SPLITS and args.task not in LONG_DOCUMENT_SPLITS:
        parser.error(f"--long_context: {args.task} has no long_documents (only {', '.join(LONG_DOCUMENT_SPLITS)})")
    for flag in ("top_k", "max_concurrency", "queries_per_batch", "batch_size", "max_tokens"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.max_queries is not None and args.max_queries < 1:
        parser.error(f"--max_queries must be >= 1, got {args.max_queries}")

    if args.first_stage_dir:
        first_path = Path(args.first_stage_dir) / "score.json"
        if not first_path.is_file():
            parser.error(f"--first_stage_dir {args.first_stage_dir}: no score.json (run evaluate_bright first)")
    else:
        first_path = Path(args.first_stage)
        if not first_path.is_file():
            parser.error(f"--first_stage {args.first_stage}: no such file")
    meta = _first_stage_meta(first_path) if first_path.name == "score.json" else {}
    if meta.get("task") not in (None, args.task):
        parser.error(f"the first stage {first_path} is a {meta['task']} run, not {args.task}")
    if meta and bool(meta.get("long_context")) != args.long_context:
        parser.error(f"the first stage {first_path} has long_context={meta.get('long_context')}; match --long_context")
    first_stage_model = args.first_stage_model or meta.get("model_name") or first_path.stem
    first_stage_query_type = meta.get("query_type") or args.query_type or "original"

    if args.reranker == "llm":
        model = args.model or settings.generator_model
        if not model:
            parser.error("--reranker llm needs --model (the served model name) or GENERATOR_MODEL")
        default_query_type, default_weight = first_stage_query_type, DEFAULT_RERANK_WEIGHT
        base_url = args.base_url or settings.generator_url
    else:
        if not args.model:
            parser.error(
                "--reranker pointwise needs --model (a directory written by PointwiseReranker.save_pretrained)"
            )
        model, default_query_type, default_weight, base_url = args.model, "original", POINTWISE_RERANK_WEIGHT, None
    query_type = args.query_type or default_query_type
    weight = args.rerank_weight if args.rerank_weight is not None else default_weight
    if not 0.0 <= weight <= 1.0:
        parser.error(f"--rerank_weight must be in [0, 1], got {weight}")
    reranker_name = args.reranker_name or f"{args.reranker}-{Path(model.rstrip('/')).name}"
    suffix = f"_q{query_type}" if query_type != first_stage_query_type else ""
    model_name = args.model_name or f"{first_stage_model}+{reranker_name}{suffix}"
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(RerankConfig) if hasattr(args, f.name)}
    resolved = dict(
        model=model,
        reranker_name=reranker_name,
        model_name=model_name,
        first_stage=str(first_path),
        first_stage_model=first_stage_model,
        first_stage_query_type=first_stage_query_type,
        query_type=query_type,
        rerank_weight=weight,
        base_url=base_url,
    )
    return RerankConfig(**{**flags, **resolved})


# ---------------------------------------------------------------------------------------------- cache


def _cache_identity(config: RerankConfig) -> dict[str, Any]:
    identity = {name: getattr(config, name) for name in _CACHE_IDENTITY[config.reranker]}
    if config.reranker == "llm":
        identity["prompt_sha256"] = hashlib.sha256(Path(config.prompt_path).read_bytes()).hexdigest()
    return {"schema_version": CACHE_SCHEMA_VERSION, **identity}


def _prepare_cache(run_dir: Path, config: RerankConfig) -> dict[str, dict[str, Any]]:
    """Check or start the cache; return the cached records by query id (the last record of a query wins)."""
    cache, meta_path = run_dir / CACHE_NAME, run_dir / CACHE_META_NAME
    identity = _cache_identity(config)
    if config.overwrite:
        cache.unlink(missing_ok=True)
    elif meta_path.is_file():
        stored = json.loads(meta_path.read_text(encoding="utf-8"))
        differing = sorted(k for k in stored.keys() | identity.keys() if stored.get(k) != identity.get(k))
        if differing:
            details = "; ".join(f"{k}: cached {stored.get(k)!r}, now {identity.get(k)!r}" for k in differing)
            raise ValueError(
                f"{cache} holds scores made with other settings ({details}); pass --overwrite to score again, "
                "or --model_name to write a separate run"
            )
    elif cache.is_file():
        raise ValueError(f"{cache} exists without {CACHE_META_NAME}; pass --overwrite to score again")
    atomic_write_json(meta_path, identity)
    return _read_cache(cache)


def _read_cache(path: Path) -> dict[str, dict[str, Any]]:
    """Cached query records; a torn last line (the run was killed mid-write) is skipped."""
    records: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return records
    lines = path.read_text(encoding="utf-8").splitlines()
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if line_no == len(lines):
                logger.warning("%s: ignoring a torn last line (the previous run stopped while writing)", path)
                continue
            raise ValueError(f"{path} line {line_no} is not JSON; delete the file or pass --overwrite") from None
        records[record["query_id"]] = record
    return records


def _reusable(record: dict[str, Any] | None, doc_ids: list[str]) -> bool:
    """A cached query counts if it scored exactly these candidates and no request of it failed."""
    return (
        record is not None
        and record.get("doc_ids") == doc_ids
        and all(item["status"] != "error" for item in record["items"])
    )


# ---------------------------------------------------------------------------------------------- scoring


class _PairScorer:
    """Scores the candidates of several queries and appends each query's record to the cache."""

    def __init__(self, config: RerankConfig, settings: Settings, cache_path: Path) -> None:
        self.config = config
        self.cache_path = cache_path
        self.client: Any = None
        self.llm: LLMReranker | None = None
        self.model: Any = None
        if config.reranker == "llm":
            from models.llm.client import config_from_settings
            from models.llm.factory import build_llm_client

            client_config = config_from_settings(
                settings,
                "openai-compatible",
                model=config.model,
                base_url=config.base_url,
                max_concurrency=config.max_concurrency,
                timeout_s=config.timeout_s,
                max_retries=config.max_retries,
            )
            self.client = build_llm_client(client_config)
            self.llm = LLMReranker(self.client, config.llm_config(), task=config.task)
        else:
            from models.reranking.pointwise import PointwiseReranker

            self.model = PointwiseReranker.from_pretrained(
                config.model,
                base_model_name_or_path=config.base_model,
                merge_lora=config.merge_lora,
                dtype=config.dtype,
                device=config.device,
            )

    def check_server(self) -> None:
        """One tiny request before the run, so a wrong URL or model name fails now, not as N errors."""
        if self.client is None:
            return
        from models.llm.client import LLMServiceError, SamplingParams

        try:
            self.client.chat([{"role": "user", "content": "Reply with OK."}], SamplingParams(max_tokens=1))
        except LLMServiceError as err:
            raise ValueError(
                f"the generator at {self.config.base_url} (model {self.config.model!r}) does not answer: {err}; "
                "start it (servers/up.sh generator=MODEL) or fix --base_url/--model"
            ) from err

    def score(self, batch: list[tuple[str, str, list[str], list[str]]]) -> None:
        """``batch`` holds ``(query_id, query, doc_ids, doc_texts)``; one cache record per query."""
        if self.llm is not None:
            pairs = [(query, text) for _, query, _, texts in batch for text in texts]
            judgements = asyncio.run(self.llm.ascore_pairs(pairs))
            items = [j.to_dict() for j in judgements]
        else:
            queries = [query for _, query, _, texts in batch for _ in texts]
            texts = [text for _, _, _, texts in batch for text in texts]
            scores = self.model.score_pairs(queries, texts, batch_size=self.config.batch_size)
            items = [{"score": s, "status": "ok"} for s in scores]
        start = 0
        for query_id, _, doc_ids, _ in batch:
            record = {"query_id": query_id, "doc_ids": doc_ids, "items": items[start : start + len(doc_ids)]}
            append_jsonl(self.cache_path, record)
            start += len(doc_ids)

    def usage(self) -> dict[str, int] | None:
        return self.client.usage.as_dict() if self.client is not None else None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def describe_reranker(config: RerankConfig) -> dict[str, Any] | None:
    """What scored the pairs: the prompt's name, version and criterion, or the saved reranker's settings."""
    if config.reranker == "llm":
        template = load_prompt(Path(config.prompt_path), placeholders=PROMPT_PLACEHOLDERS)
        return {"prompt": template.identity(), "criterion": criterion_for(config.task)}
    from models.reranking.pointwise import RERANKER_CONFIG_NAME  # imports torch; the llm path does not need it

    saved = Path(config.model) / RERANKER_CONFIG_NAME
    return json.loads(saved.read_text(encoding="utf-8")) if saved.is_file() else None


# ---------------------------------------------------------------------------------------------- stage


def _write_config(run_dir: Path, config: RerankConfig, derived: dict[str, Any]) -> None:
    record(config, derived).write(run_dir / "config.json")


def record(config: RerankConfig, derived: dict[str, Any] | None = None) -> StageRecord:
    """``config.json``: every setting, plus the prompt version (llm) that shaped the scores."""
    identity = {"prompt_sha256": _cache_identity(config).get("prompt_sha256")} if config.reranker == "llm" else {}
    return StageRecord(STAGE, dataclasses.asdict(config), informational=INFORMATIONAL, identity=identity,
                       derived=derived or {})  # fmt: skip


def _candidates(config: RerankConfig, examples: Sequence[Example], all_examples: Sequence[Example]) -> Run:
    """Top ``top_k`` of the first stage per scorable query, excluded ids removed, in examples order."""
    first = postprocess_run(read_run(config.first_stage), all_examples, config.top_k)
    run = {e.query_id: first[e.query_id] for e in examples if e.query_id in first}
    missing = len(examples) - len(run)
    if missing:
        logger.warning(
            "%d of %d scorable queries are absent from the first stage and are not reranked", missing, len(examples)
        )
    if config.max_queries is not None:
        run = dict(list(run.items())[: config.max_queries])
    if not run:
        raise ValueError(f"{config.first_stage} has no query of {config.task} with gold documents; nothing to rerank")
    return run


def _item_score(item: dict[str, Any], config: RerankConfig) -> float:
    """The cached score, with the current unparsable-reply policy applied to llm items without one."""
    if config.reranker == "llm" and item["status"] != "ok":
        return config.unparsable_score
    return float(item["score"])


def run_rerank(config: RerankConfig, settings: Settings | None = None) -> dict[str, float]:
    """Run the stage; returns the metrics of the mixed run (also in ``results.json``)."""
    settings = settings or load_settings()
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    source = source_with_champ(config.bright_dir, config.task)
    first_stage = _first_stage_record(Path(config.first_stage))
    recipe = reranked_recipe(run_recipe(first_stage) if first_stage else None, config.reranker)
    derived: dict[str, Any] = {"run_dir": str(run_dir), "source": source, "k_values": list(DEFAULT_K_VALUES),
                               "recipe": recipe}  # fmt: skip
    if not config.overwrite:
        check_rerun(run_dir / "config.json", record(config), "pass --overwrite to score again, or another --model_name")
    _write_config(run_dir, config, derived)  # before any compute: a bad output dir fails here

    all_examples = load_examples(source, config.task, config.query_type)
    examples = [e for e in all_examples if gold_ids(e, config.long_context)]
    candidates = _candidates(config, examples, all_examples)
    queries = {e.query_id: e.query for e in examples}
    cached = _prepare_cache(run_dir, config)
    todo = [qid for qid, ranking in candidates.items() if not _reusable(cached.get(qid), list(ranking))]
    logger.info(
        "%d queries x top %d: %d cached, %d to score",
        len(candidates),
        config.top_k,
        len(candidates) - len(todo),
        len(todo),
    )

    scorer: _PairScorer | None = None
    if todo:
        corpus: Corpus = load_corpus(source, config.task, long_context=config.long_context)
        scorer = _PairScorer(config, settings, run_dir / CACHE_NAME)
        try:
            scorer.check_server()
            step = config.queries_per_batch if config.reranker == "llm" else 1
            with tqdm(total=len(todo), desc=f"rerank {config.task}", unit="query") as progress:
                for start in range(0, len(todo), step):
                    chunk = todo[start : start + step]
                    scorer.score(
                        [(qid, queries[qid], list(candidates[qid]), [corpus.text_of(d) for d in candidates[qid]])
                         for qid in chunk]
                    )  # fmt: skip
                    progress.update(len(chunk))
        finally:
            scorer.close()
        cached = _read_cache(run_dir / CACHE_NAME)

    rerank_run: Run = {}
    final_run: Run = {}
    statuses: Counter[str] = Counter()
    for qid, ranking in candidates.items():
        items = cached[qid]["items"]
        statuses.update(item["status"] for item in items)
        scores = {doc_id: _item_score(item, config) for doc_id, item in zip(ranking, items, strict=True)}
        rerank_run[qid] = rank_by(scores, list(ranking))
        final_run[qid] = combine_scores(scores, ranking, config.rerank_weight)

    qrels = qrels_from_examples(examples, config.long_context)
    if config.max_queries is not None:  # a deliberate subset: judge only the queries that were reranked
        qrels = {qid: labels for qid, labels in qrels.items() if qid in candidates}
    first_results, _ = evaluate_run(qrels, candidates, missing_queries=config.missing_queries)
    rerank_results, _ = evaluate_run(qrels, rerank_run, missing_queries=config.missing_queries)
    aggregate, per_query = evaluate_run(qrels, final_run, missing_queries=config.missing_queries)
    atomic_write_json(run_dir / "rerank_scores.json", rerank_run)
    atomic_write_json(run_dir / "score.json", final_run)
    atomic_write_json(run_dir / "first_stage_results.json", first_results)
    atomic_write_json(run_dir / "rerank_only_results.json", rerank_results)
    atomic_write_json(run_dir / "per_query.json", per_query)
    atomic_write_json(run_dir / "results.json", aggregate)
    counts = {status: statuses.get(status, 0) for status in STATUSES}
    derived.update(
        n_queries=len(candidates),
        n_pairs=sum(statuses.values()),
        status_counts=counts,
        n_unparsable=counts["no_score"] + counts["out_of_range"],
        n_errors=counts["error"],
        llm_usage=scorer.usage() if scorer is not None else None,  # None: everything came from the cache
        reranker=describe_reranker(config),
        first_stage_ndcg10=first_results["NDCG@10"],
        rerank_only_ndcg10=rerank_results["NDCG@10"],
    )
    _write_config(run_dir, config, derived)
    if derived["n_unparsable"] or derived["n_errors"]:
        logger.warning(
            "%d of %d replies had no valid score and %d requests failed; they scored %.2f (--unparsable_score)",
            derived["n_unparsable"],
            derived["n_pairs"],
            derived["n_errors"],
            config.unparsable_score,
        )
    logger.info(
        "NDCG@10 first stage %.5f -> rerank only %.5f -> mixed %.5f (%d queries)",
        first_results["NDCG@10"],
        rerank_results["NDCG@10"],
        aggregate["NDCG@10"],
        len(per_query),
    )
    return aggregate


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    configure_logging()

    def body() -> None:
        logger.info("config: %s", dataclasses.asdict(config))
        results = run_rerank(config)
        summary = " ".join(f"{key} {results[key]:.5f}" for key in ("NDCG@10", "Recall@10", "MRR"))
        print(f"{config.task} {config.model_name} {config.first_stage_query_type}: {summary} -> {config.run_dir}")

    return run_stage(body, name=STAGE)


if __name__ == "__main__":
    sys.exit(main())
