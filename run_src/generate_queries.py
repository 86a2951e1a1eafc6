"""Stage 3: MCTS run directories -> query records for q_llmq, q_CoT, q_question and q_lexical.

    python -m run_src.generate_queries --run_dirs outputs_MCTS/run_outputs/MATH/Qwen2.5-7B-Instruct/RUN \
        --output_dir outputs/queries/MATH --query_types llmq cot question lexical --trajectory_filter correct \
        --model Qwen/Qwen2.5-7B-Instruct --base_url http://127.0.0.1:8010/v1 --dense_url http://127.0.0.1:8011

Spec ``specs/training.md`` §3–§5; the logic lives in :mod:`run_src.query_synthesis`, this module only
validates flags, wires the parts together and writes files. Output directory::

    config.json                 resolved flags, prompt names and versions, generator model (written first)
    nodes.jsonl                 the selected retrieval nodes (spec §3.3), with their hard-negative pools
    queries_<type>.jsonl        one QueryRecord per candidate sample, sorted by query id
    cache/completions.jsonl     every finished LLM completion, appended as it arrives (the resume point)
    summary.json                counts at every hand-off, LLM usage and failures
    _SUCCESS                    written last

A killed run restarts with the same command: completions already in the cache are not requested again, and
requests that failed are retried. Every request carries its own seed (derived from ``--seed`` and the sample
id) and its sampling parameters are stored on the record.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from models.io_utils import atomic_write_json, atomic_write_jsonl
from models.llm.client import BACKENDS, SamplingParams
from models.retrieval.encoder_flags import (
    INFORMATIONAL_ENCODER_FLAGS,
    EncoderFlags,
    add_encoder_arguments,
    check_encoder_flags,
)
from models.retrieval.model_identity import model_fingerprint
from models.settings import Settings, load_settings
from models.stage import (
    EXIT_PARTIAL,
    SUCCESS_MARKER,
    StageRecord,
    add_config_argument,
    check_rerun,
    clear_success,
    configure_logging,
    mark_success,
    parse_flags,
    require_flags,
    run_stage,
)
from run_src.query_synthesis.llm_queries import QueryPrompts
from run_src.query_synthesis.negatives import NEGATIVE_SCOPES
from run_src.query_synthesis.records import QUERY_TYPES, QueryRecord, compare_with_table9, queries_file, write_records
from run_src.query_synthesis.samples import THEOREM_SOURCES, LLMQuerySettings, SynthesisMix, parse_type_values
from run_src.query_synthesis.trajectories import TRAJECTORY_FILTERS, SelectionConfig

logger = logging.getLogger(__name__)

STAGE = "generate_queries"
RECORD_NAME = "config.json"
LLM_TYPES = ("llmq", "lexical")
# Recorded, never compared on a rerun: speed, endpoints, logging, and the prompt files' locations (their
# contents are compared through their versions).
INFORMATIONAL = frozenset({"grade_workers", "base_url", "max_concurrency", "timeout_s", "max_retries", "cache_root",
                           "dense_url", "overwrite", "quiet", "llmq_prompt", "lexical_prompt",
                           *(f"dense_{k}" for k in (*INFORMATIONAL_ENCODER_FLAGS, "model_path", "tokenizer", "dtype"))})  # fmt: skip
CorpusKey = tuple[str, str]


@dataclass(frozen=True)
class GenerateConfig:
    """Resolved flags of this stage (see ``build_parser`` for each field's meaning)."""

    run_dirs: tuple[str, ...]
    output_dir: str
    query_types: tuple[str, ...]
    trajectory_filter: str
    solutions: tuple[str, ...]
    include_retrieved_in_context: bool
    negative_scope: str
    corpus: str | None
    corpus_split: str | None
    bright_revision: str | None
    grade_workers: int
    grade_timeout_s: float
    backend: str
    model: str
    base_url: str
    max_concurrency: int
    timeout_s: float
    max_retries: int
    seed: int
    llmq_prompt: str
    llmq_temperature: float
    llmq_top_p: float
    llmq_top_k: int
    llmq_max_tokens: int
    theorem_source: str
    max_theorem_chars: int
    allow_theorem_name: bool
    lexical_prompt: str
    lexical_temperature: float
    lexical_top_p: float
    lexical_max_tokens: int
    samples_per_node: tuple[str, ...]
    dedup_key: tuple[str, ...]
    min_query_words: int
    max_query_words: int
    bm25_depth: int
    cache_root: str
    dense_url: str | None
    dense: EncoderFlags
    dense_k: int
    no_dense_negatives: bool
    overwrite: bool
    quiet: bool

    @property
    def needs_llm(self) -> bool:
        return any(t in LLM_TYPES for t in self.query_types)

    def llm_settings(self) -> LLMQuerySettings:
        return LLMQuerySettings(
            model=self.model,
            llmq_params=SamplingParams(
                max_tokens=self.llmq_max_tokens,
                temperature=self.llmq_temperature,
                top_p=self.llmq_top_p,
                top_k=self.llmq_top_k or None,
            ),
            lexical_params=SamplingParams(
                max_tokens=self.lexical_max_tokens, temperature=self.lexical_temperature, top_p=self.lexical_top_p
            ),
            seed=self.seed,
            theorem_source=self.theorem_source,
            max_theorem_chars=self.max_theorem_chars,
            min_query_words=self.min_query_words,
            max_query_words=self.max_query_words,
            reject_theorem_name=not self.allow_theorem_name,
            mix=self.mix(),
        )

    def mix(self) -> SynthesisMix:
        """The per-type multiplicity and de-duplication (``ValueError`` naming the flag on a bad pair)."""
        return SynthesisMix(
            samples_per_node=parse_type_values(self.samples_per_node, "--samples_per_node", int),
            dedup_key=parse_type_values(self.dedup_key, "--dedup_key"),
        )


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    from models.llm.prompt_templates import PROMPTS_DIR

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_argument(parser)
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument("--run_dirs", nargs="+", help="MCTS run directories (each with args.json)")
    io.add_argument("--output_dir", help="where records, cache and summary go (resumable)")
    io.add_argument(
        "--query_types",
        nargs="+",
        default=list(QUERY_TYPES),
        choices=QUERY_TYPES,
        help="query types to produce (spec §4)",
    )
    io.add_argument("--corpus", default=None, help="override args.json 'corpus' (hf | mirror dir | JSONL file)")
    io.add_argument("--corpus_split", default=None, help="override args.json 'corpus_split' (e.g. theoremqa_theorems)")
    io.add_argument(
        "--bright_revision", default=None, help="BRIGHT revision of an 'hf' corpus (default: the MCTS runs' recorded one)"
    )
    sel = parser.add_argument_group("trajectory and node selection (spec §3.3)")
    sel.add_argument(
        "--trajectory_filter",
        default="correct",
        choices=TRAJECTORY_FILTERS,
        help="correct: recomputed answer right (paper); all: reference code; self_reflection_passed: "
        "a retrieval judged relevant (runs that never reach gold answers)",
    )
    sel.add_argument(
        "--solutions",
        nargs="+",
        default=["final"],
        choices=["final", "rollout"],
        help="trace files to read: Final Solutions (every solution node) and/or Rollout Solutions",
    )
    sel.add_argument(
        "--include_retrieved_in_context",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="carry earlier retrieved summaries into the partial solution (reference behaviour)",
    )
    sel.add_argument(
        "--negative_scope",
        default="node",
        choices=NEGATIVE_SCOPES,
        help="node: rejections of the same retrieval call (§5.1 [REC]); question: all of the problem's",
    )
    sel.add_argument("--grade_workers", type=int, default=1, help="symbolic grader worker processes")
    sel.add_argument("--grade_timeout_s", type=float, default=5.0, help="time limit per symbolic comparison")
    llm = parser.add_argument_group("generator LLM (q_llmq, q_lexical)")
    llm.add_argument("--backend", default="openai-compatible", choices=BACKENDS)
    llm.add_argument("--model", default=settings.generator_model, help="served model name (default $GENERATOR_MODEL)")
    llm.add_argument("--base_url", default=settings.generator_url, help="API root (default $GENERATOR_URL)")
    llm.add_argument("--max_concurrency", type=int, default=32, help="requests in flight")
    llm.add_argument("--timeout_s", type=float, default=600.0, help="limit per HTTP attempt")
    llm.add_argument("--max_retries", type=int, default=5, help="retries after timeouts, 429 and 5xx")
    llm.add_argument(
        "--seed", type=int, default=0, help="run seed; each request's seed derives from it and the sample id"
    )
    llm.add_argument("--llmq_prompt", default=str(PROMPTS_DIR / "q_llmq.txt"))
    llm.add_argument("--llmq_temperature", type=float, default=0.8, help="paper Table 8")
    llm.add_argument("--llmq_top_p", type=float, default=0.95, help="paper Table 8")
    llm.add_argument("--llmq_top_k", type=int, default=40, help="paper Table 8; 0 = not sent")
    llm.add_argument("--llmq_max_tokens", type=int, default=512)
    llm.add_argument(
        "--theorem_source",
        default="retrieved_summary",
        choices=THEOREM_SOURCES,
        help="theorem text in the q_llmq prompt: the MCTS summary (spec [REC]), the positive's corpus statement, "
        "or the QG node's hypothesised theorem (reference code)",
    )
    llm.add_argument("--max_theorem_chars", type=int, default=3000, help="theorem text is cut after this many chars")
    llm.add_argument(
        "--allow_theorem_name",
        action="store_true",
        help="keep q_llmq queries that name their theorem (rejected by default, spec §4.3 [REC])",
    )
    llm.add_argument("--lexical_prompt", default=str(PROMPTS_DIR / "q_lexical.txt"))
    llm.add_argument("--lexical_temperature", type=float, default=1.0, help="reference lexical generation")
    llm.add_argument("--lexical_top_p", type=float, default=0.95)
    llm.add_argument("--lexical_max_tokens", type=int, default=256)
    mix = parser.add_argument_group("how many samples of each type (spec §6.2: Table 9's mix)")
    mix.add_argument(
        "--samples_per_node",
        nargs="+",
        default=[],
        metavar="TYPE=N",
        help="LLM samples per retrieval node (llmq) or per unique positive (lexical); default llmq=1 lexical=1",
    )
    mix.add_argument(
        "--dedup_key",
        nargs="+",
        default=[],
        metavar="TYPE=KEY",
        help="text: merge equal (problem, positive, query); node: one per retrieval node; occurrence: one per "
        "trajectory through the node; default llmq=occurrence cot=text question=node lexical=text",
    )
    llm.add_argument("--min_query_words", type=int, default=3)
    llm.add_argument("--max_query_words", type=int, default=96)
    lex = parser.add_argument_group("lexical retrieval (spec §4.4 L3)")
    lex.add_argument("--bm25_depth", type=int, default=50, help="BM25 ids kept per query (ranks 31-50 are sampled)")
    lex.add_argument(
        "--cache_root", default=settings.bright_cache_dir, help="BM25 indexes (bm25/) and embeddings (doc_emb/)"
    )
    lex.add_argument("--dense_url", default=None, help="retriever server for the dense top-k (e.g. RepLLaMA)")
    lex.add_argument("--dense_k", type=int, default=10, help="dense candidates per lexical query (paper: 10)")
    lex.add_argument("--no_dense_negatives", action="store_true", help="lexical negatives from BM25 only")
    add_encoder_arguments(
        parser, prefix="dense_", title="or an in-process dense encoder for the lexical negatives (--dense_model_path)"
    )
    parser.add_argument("--overwrite", action="store_true", help="discard this directory's earlier outputs and cache")
    parser.add_argument("--quiet", action="store_true", help="log warnings only, no progress bars")
    return parser


def parse_config(argv: list[str] | None = None, settings: Settings | None = None) -> GenerateConfig:
    settings = settings or load_settings()
    parser = build_parser(settings)
    args = parse_flags(parser, argv)
    require_flags(parser, args, "run_dirs", "output_dir")
    dense = EncoderFlags.from_args(args, prefix="dense_")
    if dense.model_path:
        dense = dense.with_defaults()
        problem = check_encoder_flags(dense, flag_prefix="dense_")
        if problem:
            parser.error(problem)
    values = {f.name: getattr(args, f.name) for f in fields(GenerateConfig) if f.name != "dense"}
    for key in ("run_dirs", "query_types", "solutions"):
        values[key] = tuple(dict.fromkeys(values[key]))
    config = GenerateConfig(dense=dense, **values)
    if config.needs_llm and not config.model:
        parser.error("q_llmq / q_lexical need --model (the served model name) or GENERATOR_MODEL")
    if "lexical" in config.query_types and not (config.dense_url or dense.model_path or config.no_dense_negatives):
        parser.error(
            "q_lexical needs a dense retriever for its negatives: --dense_url URL or --dense_model_path DIR, "
            "or --no_dense_negatives for BM25 negatives only"
        )
    if config.dense_url and dense.model_path:
        parser.error("give either --dense_url or --dense_model_path, not both")
    for name in (
        "grade_workers",
        "max_concurrency",
        "bm25_depth",
        "dense_k",
        "min_query_words",
        "max_theorem_chars",
    ):
        if getattr(config, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(config, name)}")
    if config.max_query_words < config.min_query_words:
        parser.error("--max_query_words must be >= --min_query_words")
    try:
        config.mix()
    except ValueError as err:
        parser.error(str(err))
    return config


# ------------------------------------------------------------------------------------------------ checks


def check_generator(config: GenerateConfig) -> None:
    """Fail before any work when an OpenAI-compatible generator cannot be reached or refuses the key.

    Any other HTTP answer to ``GET /models`` (even 404 from a server without that route) means it is up.
    """
    if config.backend != "openai-compatible":
        return
    import httpx

    url = config.base_url.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {load_settings().generator_api_key}"}
    try:
        response = httpx.get(url, timeout=30.0, headers=headers)
    except httpx.HTTPError as err:
        raise ConnectionError(
            f"generator at {config.base_url} is not reachable ({type(err).__name__}: {err}); start it with "
            f"servers/up.sh generator={config.model} or pass --base_url"
        ) from err
    if response.status_code in (401, 403):
        raise ConnectionError(
            f"generator at {config.base_url} refused the API key (HTTP {response.status_code}); set GENERATOR_API_KEY"
        )


def _load_corpora(keys: list[CorpusKey], revision: str) -> dict[CorpusKey, Any]:
    from models.embedded.champ import source_with_champ
    from models.retrieval.corpus import load_corpus, revision_applies

    corpora = {}
    for source, split in keys:
        resolved = source_with_champ(source, split)
        corpora[(source, split)] = load_corpus(resolved, split, revision=revision if revision_applies(resolved) else None)
    return corpora


def runs_revision(config: GenerateConfig, runs: list[Any]) -> str:
    """The BRIGHT revision of the corpora: the flag, else what the MCTS runs recorded, else the pin."""
    from models.retrieval.corpus import resolve_revision

    return resolve_revision(config.bright_revision, {str(r.run_dir): r.args.get("bright_revision") for r in runs})


# ------------------------------------------------------------------------------------------------ stage


def run(config: GenerateConfig) -> dict[str, Any]:
    """The whole stage; returns the summary that is also written to ``summary.json``."""
    from run_src.query_synthesis.run_reader import ReadReport, iter_problems, read_run_info

    started = time.monotonic()
    out = Path(config.output_dir)
    runs = [read_run_info(path, config.corpus, config.corpus_split) for path in config.run_dirs]
    prompts = QueryPrompts.load(config.llmq_prompt, config.lexical_prompt) if config.needs_llm else None
    record = stage_record(config, runs, prompts)
    if config.overwrite:
        discard_outputs(out)
    check_rerun(out / RECORD_NAME, record, fresh_run="pass --overwrite to discard them, or another --output_dir")
    out.mkdir(parents=True, exist_ok=True)
    clear_success(out)
    record.write(out / RECORD_NAME)
    if config.needs_llm:
        check_generator(config)
    corpus_keys = sorted({(run.corpus_source, run.corpus_split) for run in runs})
    corpora = _load_corpora(corpus_keys, runs_revision(config, runs))
    lexical_tools = _lexical_tools(config, corpora) if "lexical" in config.query_types else None

    from run_src.query_synthesis.trajectories import AnswerGrader, select_nodes

    read_report = ReadReport()
    selection = SelectionConfig(config.trajectory_filter, config.include_retrieved_in_context, config.negative_scope)
    problems = (problem for run in runs for problem in iter_problems(run, config.solutions, read_report))
    with AnswerGrader(config.grade_workers, config.grade_timeout_s) as grader:
        nodes, select_report = select_nodes(problems, selection, grader)
    atomic_write_jsonl(out / "nodes.jsonl", [node.to_dict() for node in nodes])
    logger.info(
        "read %d finished problems (%d unfinished, %d unreadable); %d trajectories, %d with retrieval, %d correct, "
        "%d selected (%s); %d retrieval nodes (%d merged duplicates, %d rejected positives)",
        read_report.problems_finished,
        read_report.problems_unfinished,
        read_report.problems_unreadable,
        select_report.trajectories,
        select_report.trajectories - select_report.trajectories_without_retrieval,
        select_report.trajectories_correct,
        select_report.trajectories_selected,
        config.trajectory_filter,
        select_report.nodes,
        select_report.retrieval_steps_merged,
        select_report.retrieval_steps_rejected_positive,
    )

    from run_src.query_synthesis import samples

    produced: dict[str, list[QueryRecord]] = {}
    mix = config.mix()
    if "cot" in config.query_types:
        produced["cot"] = samples.cot_records(nodes, mix)
    if "question" in config.query_types:
        produced["question"] = samples.question_records(nodes, mix)
    llm_summary: dict[str, Any] = {}
    if config.needs_llm:
        assert prompts is not None
        produced.update(_llm_types(config, nodes, corpora, prompts, lexical_tools, llm_summary))
    for query_type in config.query_types:
        write_records(queries_file(out, query_type), produced[query_type])
    usable = {t: sum(r.status == "ok" for r in produced[t]) for t in config.query_types}
    summary = {
        "read": asdict(read_report) | {"errors": read_report.errors[:20]},
        "selection": select_report.as_dict(),
        "records": {t: _status_counts(produced[t]) for t in config.query_types},
        "mix": mix.as_dict(),
        "table9": compare_with_table9(usable),
        "llm": llm_summary,
        "seconds": round(time.monotonic() - started, 1),
    }
    logger.info(
        "usable records per type %s; shares %s (paper MATH %s)",
        usable,
        {t: v["share"] for t, v in summary["table9"]["produced"].items()},
        {t: v["share"] for t, v in summary["table9"]["paper"]["MATH"].items()},
    )
    atomic_write_json(out / "summary.json", summary)
    if not llm_summary.get("failures"):
        mark_success(out, {"records": summary["records"]})
    return summary


def _status_counts(records: list[QueryRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        counts[record.status] = counts.get(record.status, 0) + 1
    return dict(sorted(counts.items()))


@dataclass
class _LexicalTools:
    bm25: dict[CorpusKey, Any]
    dense: dict[CorpusKey, Any]


def _lexical_tools(config: GenerateConfig, corpora: dict[CorpusKey, Any]) -> _LexicalTools:
    """BM25 per corpus and the dense searcher, built before any LLM work so set-up errors show early."""
    from models.retrieval.retrievers import BM25Retriever
    from run_src.query_synthesis.lexical import local_dense_search, server_dense_search

    bm25 = {key: BM25Retriever.from_corpus(c, Path(config.cache_root) / "bm25" / c.name) for key, c in corpora.items()}
    dense: dict[CorpusKey, Any] = {}
    if config.dense_url and not config.no_dense_negatives:
        if len(corpora) > 1:
            logger.warning(
                "one dense server (%s) serves all %d corpora; its ids must match each", config.dense_url, len(corpora)
            )
        search = server_dense_search(config.dense_url)
        dense = dict.fromkeys(corpora, search)
    elif config.dense.model_path and not config.no_dense_negatives:
        dense = {key: local_dense_search(corpus, config.dense, config.cache_root) for key, corpus in corpora.items()}
    return _LexicalTools(bm25=bm25, dense=dense)


def _llm_types(
    config: GenerateConfig,
    nodes: list[Any],
    corpora: dict[CorpusKey, Any],
    prompts: QueryPrompts,
    tools: _LexicalTools | None,
    summary: dict[str, Any],
) -> dict[str, list[QueryRecord]]:
    """q_llmq and q_lexical: one batch of LLM requests for both, then parsing and lexical retrieval."""
    from models.llm.client import config_from_settings
    from models.llm.factory import build_llm_client
    from run_src.query_synthesis import samples
    from run_src.query_synthesis.generation import CompletionCache, generate_all
    from run_src.query_synthesis.lexical import lexical_retrieval

    settings = config.llm_settings()
    plan = samples.plan_llmq(nodes, corpora, prompts, settings) if "llmq" in config.query_types else None
    targets = samples.plan_lexical(nodes, settings.mix.samples("lexical")) if "lexical" in config.query_types else []
    lexical_requests = samples.lexical_requests(targets, corpora, prompts, settings)
    requests = [*(plan.requests.values() if plan else []), *lexical_requests.values()]
    client = build_llm_client(
        config_from_settings(
            load_settings(),
            config.backend,
            model=config.model,
            base_url=config.base_url,
            max_concurrency=config.max_concurrency,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
        )
    )
    try:
        outcome = generate_all(
            client,
            requests,
            CompletionCache(Path(config.output_dir) / "cache" / "completions.jsonl"),
            quiet=config.quiet,
        )
    finally:
        client.close()
    summary.update(
        requests=len(requests),
        cached=outcome.cached,
        generated=outcome.generated,
        failures=len(outcome.failures),
        usage=client.usage.as_dict(),
        model=config.model,
        prompts=prompts.identities(),
    )
    if outcome.failures:
        logger.warning("%d LLM requests failed; rerun the same command to retry them", len(outcome.failures))
    produced: dict[str, list[QueryRecord]] = {}
    if plan is not None:
        produced["llmq"] = samples.llmq_records(plan, outcome, corpora, prompts, settings)
    if targets:
        assert tools is not None
        records = samples.parse_lexical(targets, lexical_requests, outcome, corpora, prompts, settings)
        retrievals: dict[str, Any] = {}
        for key in sorted({(r.corpus["source"], r.corpus["split"]) for r in records}):
            todo = [r for r in records if (r.corpus["source"], r.corpus["split"]) == key and r.status == "ok"]
            found = lexical_retrieval(
                [r.query for r in todo],
                [r.positive_id for r in todo],
                tools.bm25[key],
                tools.dense.get(key),
                depth=config.bm25_depth,
                dense_k=config.dense_k,
                quiet=config.quiet,
            )
            retrievals.update({r.query_id: item for r, item in zip(todo, found, strict=True)})
        produced["lexical"] = samples.attach_retrieval(records, retrievals, settings.mix)
    elif "lexical" in config.query_types:
        produced["lexical"] = []
    return produced


def stage_record(config: GenerateConfig, runs: list[Any], prompts: QueryPrompts | None) -> StageRecord:
    """``config.json``: every flag; the prompts' versions and the input runs are what the outputs depend on."""
    settings = {f.name: getattr(config, f.name) for f in fields(config) if f.name != "dense"}
    return StageRecord(
        STAGE,
        {**settings, **config.dense.as_flags("dense_")},
        informational=INFORMATIONAL,
        identity={
            "prompts": prompts.identities() if prompts else {},
            "dense_model": model_fingerprint(config.dense.model_path) if config.dense.model_path else None,
            "bright_revision": runs_revision(config, runs),
        },
        derived={
            "generator_model": config.model if config.needs_llm else None,
            "runs": [
                {
                    "run_dir": str(r.run_dir),
                    "dataset": r.dataset,
                    "corpus": r.corpus_source,
                    "corpus_split": r.corpus_split,
                    "mcts_model": r.args.get("model_ckpt"),
                    "retriever": r.args.get("retriever"),
                }
                for r in runs
            ],
        },
    )


def discard_outputs(out: Path) -> None:
    """What ``--overwrite`` removes: this stage's files in ``out`` (nothing else there is touched)."""
    import shutil

    for name in (
        RECORD_NAME,
        "nodes.jsonl",
        "summary.json",
        SUCCESS_MARKER,
        *(queries_file(out, t).name for t in QUERY_TYPES),
    ):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "cache", ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    configure_logging(quiet=config.quiet)

    def body() -> int:
        logger.info("config: %s", asdict(config))
        summary = run(config)
        print(json.dumps({t: summary["records"][t] for t in config.query_types}))
        failures = summary.get("llm", {}).get("failures", 0)
        if failures:  # outputs are written, but a script must not mistake an incomplete stage for a finished one
            logger.error("%d LLM requests failed; rerun the same command to retry only those", failures)
            return EXIT_PARTIAL
        return 0

    return run_stage(body, name=STAGE)


if __name__ == "__main__":
    sys.exit(main())
