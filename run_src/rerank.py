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

LLM styles. ``--rerank_style`` (llm only) picks how pairs are asked and replies read:
``ours`` (default: our few-shot chat prompt, temperature 0) or ``published`` (the zero-shot,
split-specific completion prompts, sampling temperature 0.6 / top-p 0.9 and two-character parser of
the reranker behind the paper's "+QwenRerank", spec §5.3; a reply without the marker scores 0, an
unreadable one −1). The style only supplies defaults: ``--temperature``, ``--top_p``,
``--max_tokens``, ``--seed``, ``--unparsable_score`` and ``--prompt_path`` given explicitly win, and
``config.json`` records the style with the values that were used.

Length (pointwise only). ``--max_length`` tokens per pair, EOS included; default: the backbone's
maximum position length (``max_position_embeddings``), not the training limit saved with the model,
since the authors scored whole ``query: q document: d<eos>`` pairs. The resolved value is recorded.

Queries. ``--query_type`` picks the text the reranker reads. Default: the first stage's query type
for ``llm`` (QwenRerank read the GPT-4 reasoning, §5.3), ``original`` for ``pointwise`` (the paper's
rerankers "receive only the question", Table 6).

Output: ``<output_dir>/<model_name>/<first-stage query type>/<task>[_long]/`` with the files
``evaluate_bright`` writes (``config.json``, ``score.json`` = the mixed run, ``results.json``,
``per_query.json``) plus ``rerank_scores.json`` (reranker scores alone, the reference's
``gpt4_score.json``), ``rerank_only_results.json``, ``first_stage_results.json`` (the same queries
and top-k before reranking) and ``rerank_cache.jsonl``. ``model_name`` defaults to
``<first-stage model>+<reranker name>`` (``llm-<model>``, ``llm-<model>-published`` for that style,
``pointwise-<model dir>``; ``+…_q<query type>`` when the reranker reads other queries than the first
stage did).

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
import math
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
from models.io_utils import atomic_write_json
from models.reranking.cache import CACHE_NAME, append_query, prepare_cache, read_cache, reusable
from models.reranking.llm import (
    DEFAULT_RERANK_WEIGHT,
    OURS,
    RERANK_STYLES,
    LLMReranker,
    LLMRerankerConfig,
    combine_scores,
    rank_by,
)
from models.reranking.style import RerankStyle
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
RERANKERS = ("llm", "pointwise")
DEFAULT_TOP_K = 100  # paper Table 2 "+QwenRerank (top-100)"; Tables 5-6 rerank BM25 top-100
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
    # llm (None for pointwise)
    base_url: str | None
    max_concurrency: int
    queries_per_batch: int
    timeout_s: float
    max_retries: int
    rerank_style: str | None
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    seed: int | None
    max_doc_chars: int | None
    unparsable_score: float | None
    prompt_path: str | None
    # pointwise
    batch_size: int
    base_model: str | None
    merge_lora: bool
    dtype: str
    device: str
    max_length: int | None  # None before run_rerank resolves the default, or a backbone with no position limit

    @property
    def run_dir(self) -> Path:
        task_dir = f"{self.task}_long" if self.long_context else self.task
        return Path(self.output_dir) / self.model_name / self.first_stage_query_type / task_dir

    @property
    def style(self) -> RerankStyle:
        """The llm reranking style (``ours`` where none is recorded)."""
        return RERANK_STYLES[self.rerank_style or OURS.name]

    def llm_config(self) -> LLMRerankerConfig:
        return LLMRerankerConfig.for_style(
            self.style.name,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            max_doc_chars=self.max_doc_chars,
            unparsable_score=self.unparsable_score,
            prompt_path=self.prompt_path,
        )


# Settings that change the cached rerank scores of a pair (the rest only change speed or mixing).
_CACHE_IDENTITY = {
    "llm": ("task", "reranker", "model", "query_type", "long_context", "rerank_style", "max_tokens", "temperature",
            "top_p", "seed", "max_doc_chars", "prompt_path"),
    "pointwise": ("task", "reranker", "model", "query_type", "long_context", "base_model", "merge_lora", "dtype",
                  "max_length"),
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
    parser.add_argument("--reranker_name", default="", help="default: llm-<model>[-published] / pointwise-<model dir>")
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
    llm.add_argument(
        "--rerank_style",
        default=None,
        choices=sorted(RERANK_STYLES),
        help="ours (default: few-shot chat prompt, greedy) or published (QwenRerank's zero-shot split prompts, "
        "sampling 0.6/0.9, two-character parser); the style's values below apply unless given",
    )

    def style_default(field: str) -> str:
        return ", ".join(f"{name} {getattr(style.sampling, field)}" for name, style in sorted(RERANK_STYLES.items()))

    llm.add_argument(
        "--max_tokens", type=int, default=None, help=f"reply budget (default {style_default('max_tokens')})"
    )
    llm.add_argument("--temperature", type=float, default=None, help=f"default {style_default('temperature')}")
    llm.add_argument("--top_p", type=float, default=None, help=f"default {style_default('top_p')}")
    llm.add_argument(
        "--seed", type=int, default=None, help=f"sampling seed sent to the server (default {style_default('seed')})"
    )
    llm.add_argument("--max_doc_chars", type=int, default=None, help="cut documents to this many characters")
    llm.add_argument(
        "--unparsable_score",
        type=float,
        default=None,
        help="rerank score (0-1) for replies the style's parser gives no score and for failed requests "
        f"(default {style_default('unparsable_score')})",
    )
    llm.add_argument("--prompt_path", default=None, help="prompt file (default: the style's prompt for --task)")
    point = parser.add_argument_group("pointwise reranker")
    point.add_argument("--batch_size", type=int, default=8, help="pairs per forward pass")
    point.add_argument("--base_model", default=None, help="base model under a LoRA reranker (default: recorded)")
    point.add_argument("--merge_lora", action="store_true", help="merge a LoRA adapter before scoring")
    point.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    point.add_argument("--device", default="auto", help="auto = cuda if available else cpu")
    point.add_argument(
        "--max_length",
        type=int,
        default=None,
        help="tokens per pair incl. EOS (default: the backbone's maximum position length, not the training limit)",
    )
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
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.max_length is not None and args.max_length < 2:
        parser.error(f"--max_length must be >= 2 (the pair and its EOS), got {args.max_length}")
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
        if args.max_length is not None:
            parser.error("--max_length applies to --reranker pointwise; the llm reranker cuts with --max_doc_chars")
        default_query_type, default_weight = first_stage_query_type, DEFAULT_RERANK_WEIGHT
        base_url = args.base_url or settings.generator_url
        llm_settings = _llm_settings(parser, args)
    else:
        if not args.model:
            parser.error(
                "--reranker pointwise needs --model (a directory written by PointwiseReranker.save_pretrained)"
            )
        if args.rerank_style is not None:
            parser.error("--rerank_style applies to --reranker llm only")
        model, default_query_type, default_weight, base_url = args.model, "original", POINTWISE_RERANK_WEIGHT, None
        llm_settings = dict.fromkeys(_LLM_STYLED, None)
    query_type = args.query_type or default_query_type
    weight = args.rerank_weight if args.rerank_weight is not None else default_weight
    if not 0.0 <= weight <= 1.0:
        parser.error(f"--rerank_weight must be in [0, 1], got {weight}")
    # A style other than ours is part of the default name, so the two styles' runs never share a directory.
    style = llm_settings["rerank_style"]
    style_suffix = f"-{style}" if style not in (None, OURS.name) else ""
    reranker_name = args.reranker_name or f"{args.reranker}-{Path(model.rstrip('/')).name}{style_suffix}"
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
        **llm_settings,
    )
    return RerankConfig(**{**flags, **resolved})


# The llm settings whose defaults come from --rerank_style (None for pointwise runs, which read none of them).
_LLM_STYLED = ("rerank_style", "max_tokens", "temperature", "top_p", "seed", "unparsable_score", "prompt_path")


def _llm_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """The style's sampling, failure score and prompt, with explicitly given flags winning (recorded as used)."""
    if args.temperature is not None and args.temperature < 0:
        parser.error(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        parser.error(f"--top_p must be in (0, 1], got {args.top_p}")
    if args.unparsable_score is not None and not math.isfinite(args.unparsable_score):
        parser.error(f"--unparsable_score must be a finite number, got {args.unparsable_score}")
    style = args.rerank_style or OURS.name
    given = {name: getattr(args, name) for name in _LLM_STYLED if name != "rerank_style"}
    config = LLMRerankerConfig.for_style(style, **given)
    resolved = {name: getattr(config, name) for name in _LLM_STYLED if name != "rerank_style"}
    resolved["prompt_path"] = config.prompt_path or str(RERANK_STYLES[style].prompt_path(args.task))
    return {"rerank_style": style, **resolved}


def _cache_identity(config: RerankConfig) -> dict[str, Any]:
    """The settings that shape a pair's cached score (the prompt by its bytes)."""
    identity = {name: getattr(config, name) for name in _CACHE_IDENTITY[config.reranker]}
    if config.reranker == "llm":
        identity["prompt_sha256"] = hashlib.sha256(Path(str(config.prompt_path)).read_bytes()).hexdigest()
    return identity


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
            ).with_max_len(config.max_length)

    def check_server(self) -> None:
        """One tiny request of the style's kind before the run, so a wrong URL or model name (or a server
        without the chat or completion endpoint the style needs) fails now, not as N errors."""
        if self.client is None or self.llm is None:
            return
        from models.llm.client import LLMServiceError, SamplingParams

        probe, params = "Reply with OK.", SamplingParams(max_tokens=1)
        try:
            if self.llm.style.kind == "completion":
                self.client.complete(probe, params)
            else:
                self.client.chat([{"role": "user", "content": probe}], params)
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
            append_query(self.cache_path, query_id, doc_ids, items[start : start + len(doc_ids)])
            start += len(doc_ids)

    def usage(self) -> dict[str, int] | None:
        return self.client.usage.as_dict() if self.client is not None else None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def describe_reranker(config: RerankConfig) -> dict[str, Any] | None:
    """What scored the pairs: the style, prompt name, version and task-specific part, or the saved reranker's
    settings."""
    if config.reranker == "llm":
        prompt_path = config.prompt_path or config.style.prompt_path(config.task)
        return config.style.describe(config.style.load_template(prompt_path), config.task)
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
    """The cached score, with the current unparsable-reply policy applied to llm items the parser gave none."""
    if config.reranker == "llm":
        return config.style.score_of(item["status"], item["score"], config.llm_config().unparsable_score)
    return float(item["score"])


def resolve_max_length(config: RerankConfig) -> RerankConfig:
    """Pointwise runs without ``--max_length``: the backbone's position limit, read from its config files
    (no weights), so that it is recorded and compared on a rerun before anything is loaded."""
    if config.reranker != "pointwise" or config.max_length is not None:
        return config
    from models.reranking.pointwise import backbone_max_positions  # imports torch; the llm path does not need it

    limit = backbone_max_positions(config.model, config.base_model)
    if limit is None:
        logger.warning("%s: the backbone config names no position limit; pairs are not truncated", config.model)
    else:
        logger.info("--max_length: the backbone's position limit, %d tokens", limit)
    return dataclasses.replace(config, max_length=limit)


def run_rerank(config: RerankConfig, settings: Settings | None = None) -> dict[str, float]:
    """Run the stage; returns the metrics of the mixed run (also in ``results.json``)."""
    settings = settings or load_settings()
    config = resolve_max_length(config)
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
    cached = prepare_cache(run_dir, _cache_identity(config), config.overwrite)
    todo = [qid for qid, ranking in candidates.items() if not reusable(cached.get(qid), list(ranking))]
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
        cached = read_cache(run_dir / CACHE_NAME)

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
    known = config.style.statuses if config.reranker == "llm" else ("ok",)
    counts = {status: statuses.get(status, 0) for status in (*known, *sorted(set(statuses) - set(known)))}
    derived.update(
        n_queries=len(candidates),
        n_pairs=sum(statuses.values()),
        status_counts=counts,
        n_unparsable=sum(n for status, n in counts.items() if status not in ("ok", "error")),
        n_errors=counts.get("error", 0),
        llm_usage=scorer.usage() if scorer is not None else None,  # None: everything came from the cache
        reranker=describe_reranker(config),
        first_stage_ndcg10=first_results["NDCG@10"],
        rerank_only_ndcg10=rerank_results["NDCG@10"],
    )
    _write_config(run_dir, config, derived)
    if derived["n_unparsable"] or derived["n_errors"]:
        logger.warning(
            "%d of %d replies had no valid score and %d requests failed (status counts %s; --unparsable_score %s)",
            derived["n_unparsable"],
            derived["n_pairs"],
            derived["n_errors"],
            counts,
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
