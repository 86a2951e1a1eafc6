"""Run the retrieval-augmented MCTS over a problem set: ``python -m run_src.run_parallel_workers``.

Takes the paper command's flags (spec ``specs/mcts.md`` §8), searches many problems at once in a thread
pool so the generator server stays saturated (each search is sequential; concurrency comes from running
``--num_workers × --num_cpu`` of them side by side), and writes the run directory described in
:mod:`run_src.mcts.run_outputs`. Rerunning with the same ``--run_name`` skips finished problems; a problem
that raises is logged with its traceback to ``errors/`` and the others go on (exit code 3 at the end).

Example (paper configuration, servers from ``.env``)::

    python -m run_src.run_parallel_workers --dataset_name MATH --test_json_filename shuffled_train \\
        --api vllm-server --model_ckpt Qwen/Qwen2.5-7B-Instruct --retriever repllama \\
        --max_depth_allowed 6 --num_a1_steps 2 --num_rollouts 16 --disable_a3 --disable_a4 --disable_a5 \\
        --save_tree --bool_goldanswer_reward --LLM_candidate_theorems --retrieval_selfreasoning \\
        --num_workers 10 --num_cpu 16 --run_outputs_root outputs_MCTS/run_outputs --shard 0/4
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import hashlib
import json
import logging
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from models.answers.checking import SymbolicChecker, grading_workers_for
from models.io_utils import atomic_write_json
from models.llm.client import BACKENDS, LLMClient, LLMClientConfig, config_from_settings
from models.llm.factory import build_llm_client
from models.llm.prompt_templates import PROMPT_SHAPES
from models.retrieval.corpus import add_bright_revision_argument
from models.serving.retriever_client import RetrieverClient
from models.settings import Settings, load_settings
from models.stage import (
    EXIT_PARTIAL,
    StageRecord,
    add_config_argument,
    check_rerun,
    configure_logging,
    parse_flags,
    require_flags,
    run_stage,
)
from run_src.mcts.action_counts import format_shares, sum_counts
from run_src.mcts.llm_actions import ActionResources, ActionSettings, MCTSPrompts, RetrieverSet
from run_src.mcts.problems import DATASET_NAMES, Problem, ProblemSet, load_problems, parse_shard, select_problems
from run_src.mcts.run_outputs import (
    ProblemOutputs,
    RunDirectory,
    index_width,
    write_problem_error,
    write_problem_outputs,
)
from run_src.mcts.search import WEIGHT_SCHEDULERS
from run_src.mcts.solve import SearchSettings, solve_problem
from run_src.mcts.tree_types import REWARD_MODES, ActionName, ExpansionConfig

logger = logging.getLogger("run_src.run_parallel_workers")

# --api values of the reference mapped to our client backends.
API_BACKENDS = {
    "vllm-server": "openai-compatible",
    "openai": "openai",
    "azure": "azure",
    "transformers": "transformers",
}
RETRIEVER_NAMES = {"repllama": "Repllama", "RaDeR": "RaDeR", "rader": "RaDeR"}
EXIT_SOME_FAILED = EXIT_PARTIAL
DEFAULT_GRACE_S = 10.0  # after Ctrl-C/SIGTERM: how long searches in flight may finish and be written
STAGE = "run_parallel_workers"
# Recorded in args.json, never compared on a rerun: concurrency, endpoints, logging, where the problems are
# read from (their content is compared through the problem-set fingerprint), which of them this call searches
# (shard index, slice) and the spellings of defaults that the paper's command line passes.
INFORMATIONAL = frozenset({
    "num_workers", "num_cpu", "max_concurrency", "request_timeout", "max_retries", "generator_urls",
    "retriever_url", "bm25_url", "verbose", "note", "run_name", "run_outputs_root", "data_root", "data_file",
    "test_json_filename", "problem_ids", "start_idx", "end_idx", "shard", "disable_a3", "disable_a4", "disable_a5",
    "bool_goldanswer_reward", "grading_workers", "interrupt_grace_s",
})  # fmt: skip
UNPARSABLE_VERDICTS = ("negative", "skip")


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m run_src.{STAGE}", description=__doc__.split("\n\n")[0])
    add_config_argument(p)
    data = p.add_argument_group("problems")
    data.add_argument("--dataset_name", choices=DATASET_NAMES, help="(required)")
    data.add_argument("--test_json_filename", default="test_all", help="file stem inside <data_root>/<dataset_name>/")
    data.add_argument("--data_root", default="data")
    data.add_argument("--data_file", default=None, help="a problem file to use instead of the data_root layout")
    data.add_argument("--problem_ids", default=None, help="file listing the dataset ids to search (JSON list or lines)")
    data.add_argument("--start_idx", type=int, default=0)
    data.add_argument("--end_idx", type=int, default=None, help="exclusive; default: the end of the file")
    data.add_argument("--shard", default=None, help="i/N: search only problems with index %% N == i (job arrays)")

    gen = p.add_argument_group("generator")
    gen.add_argument("--api", default="vllm-server", choices=sorted(API_BACKENDS))
    gen.add_argument("--model_ckpt", help="served model name, or checkpoint dir for --api transformers (required)")
    gen.add_argument(
        "--generator_urls",
        default=None,
        help="comma-separated OpenAI-compatible base URLs, used round-robin by problem (default GENERATOR_URL)",
    )
    gen.add_argument(
        "--max_concurrency", type=int, default=None,
        help="requests in flight per generator endpoint (default: the number of concurrent searches, "
        "--num_workers x --num_cpu, so no search waits for a slot)",
    )
    gen.add_argument("--request_timeout", type=float, default=600.0)
    gen.add_argument("--max_retries", type=int, default=5)
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--top_p", type=float, default=0.95)
    gen.add_argument("--top_k", type=int, default=40, help="sent to the server ([FIX] S8); 0 disables")
    gen.add_argument("--max_tokens", type=int, default=1024, help="max tokens of the complete-the-solution action")
    gen.add_argument("--ost_max_tokens", type=int, default=256)
    gen.add_argument("--qg_max_tokens", type=int, default=1024)
    gen.add_argument("--summary_max_tokens", type=int, default=512)
    gen.add_argument("--reflection_max_tokens", type=int, default=200)
    gen.add_argument(
        "--llm_judge",
        action="store_true",
        help="ask the generator (question, completion, gold answer; temperature 0) when symbolic grading says no",
    )
    gen.add_argument(
        "--prompt_shape",
        choices=PROMPT_SHAPES,
        default="single_user",
        help="single_user: one user message with the few-shot block (the spec); chat_turns: few-shot chat turns",
    )
    gen.add_argument(
        "--interrupt_grace_s", type=float, default=DEFAULT_GRACE_S,
        help="after Ctrl-C/SIGTERM no new problem starts; searches in flight get this long to finish and be saved",
    )
    gen.add_argument(
        "--grading_workers",
        type=int,
        default=None,
        help="symbolic answer-check processes (default: one per concurrent search, at most the CPU count)",
    )

    search = p.add_argument_group("search")
    search.add_argument("--num_rollouts", type=int, default=16)
    search.add_argument("--max_depth_allowed", type=int, default=6)
    search.add_argument("--max_qg_nodes", type=int, default=None, help="default: max_depth_allowed // 2")
    search.add_argument("--num_a1_steps", type=int, default=2)
    search.add_argument("--mcts_num_last_votes", type=int, default=4)
    search.add_argument("--qg_nodes", type=int, default=1, help="generations per query-generation action")
    search.add_argument("--mcts_exploration_weight", type=float, default=2.0)
    search.add_argument("--mcts_weight_scheduler", default="const", choices=WEIGHT_SCHEDULERS)
    search.add_argument(
        "--mcts_discount_factor",
        type=float,
        default=1.0,
        help="reward multiplier per step above the rollout's last node (1.0: undiscounted, as the paper)",
    )
    search.add_argument("--disable_a1", action="store_true", help="no one-step thoughts")
    # rStar's optional actions are off by default, as in the paper (§4.1); --disable_a3/a4/a5 stay accepted
    # so the paper's command line runs unchanged.
    search.add_argument(
        "--enable_a3", action="store_true", help="rStar A3: propose sub-questions and answer them (off by default)"
    )
    search.add_argument(
        "--enable_a4",
        action="store_true",
        help="rStar A4 (re-answer a sub-question) is not implemented: this flag is refused",
    )
    search.add_argument("--enable_a5", action="store_true", help="rStar A5: rephrase the question (off by default)")
    search.add_argument("--disable_a3", action="store_true", help="keep rStar A3 off (the default)")
    search.add_argument(
        "--disable_a4", action="store_true", help="accepted for the paper's command; A4 is not implemented, always off"
    )
    search.add_argument("--disable_a5", action="store_true", help="keep rStar A5 off (the default)")
    search.add_argument("--disable_a6", action="store_true", help="no query generation / retrieval")
    search.add_argument("--num_subquestions", type=int, default=3, help="sub-questions proposed per A3 action")
    search.add_argument(
        "--num_votes",
        type=int,
        default=10,
        help="answers sampled per non-final A3 sub-question; the majority answer's share is its value",
    )
    search.add_argument(
        "--reward",
        choices=REWARD_MODES,
        default=None,
        help="gold: leaves valued by the gold answer (paper, default); self_consistency: by sibling agreement (rStar)",
    )
    search.add_argument(
        "--bool_goldanswer_reward",
        action="store_true",
        help="the paper's spelling of --reward gold (contradicts --reward self_consistency)",
    )
    search.add_argument(
        "--wrong_answer_reward",
        type=float,
        default=0.0,
        help="reward of a boxed but wrong answer: 0 = paper, 0.2 = reference code",
    )
    search.add_argument("--reference_da_value", action="store_true", help="DA value = last sample's reward (reference)")
    search.add_argument("--save_tree", action="store_true")
    search.add_argument("--seed", type=int, default=42)

    ret = p.add_argument_group("retrieval")
    ret.add_argument("--retriever", default="repllama", choices=["repllama", "RaDeR", "rader", "bm25"])
    ret.add_argument("--retriever_url", default=None, help="dense retriever server (default REPLLAMA_URL / RADER_URL)")
    ret.add_argument("--bm25_url", default=None, help="BM25 server (default BM25_URL when --retriever bm25)")
    ret.add_argument(
        "--threshold",
        type=float,
        default=1.0,
        help="probability of the dense retriever when --bm25_url is also given (1.0 = dense only)",
    )
    ret.add_argument("--topk_rt", type=int, default=5)
    ret.add_argument(
        "--retrieval_score_depth",
        type=int,
        default=100,
        help="scores kept per retrieval call in retriever_scores/ (the trace keeps --topk_rt)",
    )
    ret.add_argument(
        "--unparsable_verdicts",
        choices=UNPARSABLE_VERDICTS,
        default="negative",
        help="negative: a theorem whose self-reflection verdict cannot be read is logged as a hard negative "
        "(paper §4.2: not labelled relevant); skip: it is not logged",
    )
    ret.add_argument("--LLM_candidate_theorems", action="store_true", help="query = parsed candidate theorems")
    ret.add_argument("--retrieval_selfreasoning", action="store_true", help="self-reflection filter on theorems")
    ret.add_argument("--corpus", default=None, help="corpus source the retriever serves (recorded for later stages)")
    ret.add_argument("--task", default="theoremqa_theorems", help="corpus split the retriever serves")
    add_bright_revision_argument(ret, settings.bright_revision)  # the servers' revision, recorded for later stages

    out = p.add_argument_group("outputs")
    out.add_argument("--run_outputs_root", default=str(Path(settings.outputs_mcts_dir) / "run_outputs"))
    out.add_argument("--note", default="default")
    out.add_argument("--run_name", default=None, help="reuse to resume; default <timestamp>---[<note>]")
    out.add_argument("--num_workers", type=int, default=10, help="concurrent searches per process slot")
    out.add_argument("--num_cpu", type=int, default=1, help="process slots of the reference; multiplies num_workers")
    out.add_argument("--verbose", action="store_true")
    return p


def resolve_reward(args: argparse.Namespace) -> str:
    """``--reward``, with the paper's ``--bool_goldanswer_reward`` read as ``--reward gold``."""
    if args.bool_goldanswer_reward and args.reward == "self_consistency":
        raise ValueError("--bool_goldanswer_reward asks for gold-answer rewards, --reward self_consistency for others")
    return args.reward or "gold"


def _read_problem_ids(path: str) -> set[str]:
    text = Path(path).read_text(encoding="utf-8")
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        values = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(values, list):
        raise ValueError(f"--problem_ids {path}: expected a JSON list or one id per line")
    return {str(value) for value in values}


def check_rstar_flags(args: argparse.Namespace) -> None:
    """Refuse contradictory or unsupported rStar action flags (``ValueError`` naming them)."""
    if args.enable_a4:
        raise ValueError("--enable_a4: rStar's A4 (re-answer a sub-question) is not implemented; drop the flag")
    for action, enabled, disabled in (("a3", args.enable_a3, args.disable_a3), ("a5", args.enable_a5, args.disable_a5)):
        if enabled and disabled:
            raise ValueError(f"--enable_{action} and --disable_{action} contradict each other; keep one")


def expansion_config(args: argparse.Namespace) -> ExpansionConfig:
    disabled: set[ActionName] = set()
    if not args.enable_a3:
        disabled.add(ActionName.SUBQUESTION)
    if not args.enable_a5:
        disabled.add(ActionName.REPHRASE)
    if args.disable_a1:
        disabled.add(ActionName.OST)
    if args.disable_a6:
        disabled.add(ActionName.QUERY_GENERATION)
    return ExpansionConfig(
        max_depth_allowed=args.max_depth_allowed,
        max_qg_nodes=args.max_qg_nodes,
        num_a1_steps=args.num_a1_steps,
        num_direct_answer_samples=args.mcts_num_last_votes,
        num_query_generations=args.qg_nodes,
        num_subquestions=args.num_subquestions,
        disabled_actions=frozenset(disabled),
        wrong_answer_reward=args.wrong_answer_reward,
        reference_da_value=args.reference_da_value,
        reward=args.reward,
    )


def action_settings(args: argparse.Namespace) -> ActionSettings:
    return ActionSettings(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k or None,
        ost_max_tokens=args.ost_max_tokens,
        crs_max_tokens=args.max_tokens,
        qg_max_tokens=args.qg_max_tokens,
        summary_max_tokens=args.summary_max_tokens,
        reflection_max_tokens=args.reflection_max_tokens,
        llm_candidate_theorems=args.LLM_candidate_theorems,
        retrieval_selfreasoning=args.retrieval_selfreasoning,
        topk_rt=args.topk_rt,
        retrieval_score_depth=args.retrieval_score_depth,
        dense_probability=args.threshold,
        llm_judge=args.llm_judge,
        seed=args.seed,
        num_votes=args.num_votes,
    )


def retriever_set(args: argparse.Namespace, settings: Settings) -> RetrieverSet:
    timeout = args.request_timeout
    if args.retriever == "bm25":
        return RetrieverSet(bm25=RetrieverClient(args.bm25_url or settings.bm25_url, timeout_s=timeout))
    name = RETRIEVER_NAMES[args.retriever]
    default_url = settings.repllama_url if name == "Repllama" else settings.rader_url
    dense = RetrieverClient(args.retriever_url or default_url, timeout_s=timeout)
    bm25 = RetrieverClient(args.bm25_url, timeout_s=timeout) if args.bm25_url else None
    return RetrieverSet(dense=dense, bm25=bm25, dense_name=name)  # type: ignore[arg-type]


def generator_clients(args: argparse.Namespace, settings: Settings) -> list[LLMClient]:
    backend = API_BACKENDS[args.api]
    assert backend in BACKENDS
    common = {
        "timeout_s": args.request_timeout,
        "max_retries": args.max_retries,
        "max_concurrency": args.max_concurrency or max(1, args.num_workers * args.num_cpu),
    }
    if backend != "openai-compatible" or not args.generator_urls:
        return [build_llm_client(config_from_settings(settings, backend, args.model_ckpt, **common))]  # type: ignore[arg-type]
    urls = [url.strip() for url in args.generator_urls.split(",") if url.strip()]
    return [
        build_llm_client(
            LLMClientConfig(
                backend="openai-compatible",
                model=args.model_ckpt,
                base_url=url,
                api_key=settings.generator_api_key,
                **common,
            )
        )
        for url in urls
    ]


def run_directory(args: argparse.Namespace, total_items: int) -> RunDirectory:
    run_name = args.run_name or f"{dt.datetime.now():%Y-%m-%d_%H-%M-%S}---[{args.note}]"
    model_folder = Path(args.model_ckpt.rstrip("/")).name
    root = Path(args.run_outputs_root) / args.dataset_name / model_folder / run_name
    return RunDirectory(root=root, width=index_width(total_items))


def stage_record(
    args: argparse.Namespace,
    run: RunDirectory,
    prompts: MCTSPrompts,
    problem_set: ProblemSet,
    selected: Sequence[Problem],
    shard: tuple[int, int] | None,
) -> StageRecord:
    """``args.json``: every flag, the fingerprint of the problems this run name covers and the prompt
    versions (compared on a rerun), and derived settings ([FIX] ``null`` instead of ``Infinity``)."""
    settings = {k: v for k, v in vars(args).items() if k != "config"}
    return StageRecord(
        STAGE,
        settings,
        informational=INFORMATIONAL,
        identity={
            "problem_set": problem_fingerprint(selected),
            "shard_count": shard[1] if shard else 1,
            "prompt_versions": prompts.versions(),
        },
        derived={
            "run_outputs_dir": str(run.root),
            "answer_sheets_dir": str(run.answer_sheets),
            "max_qg_nodes": expansion_config(args).qg_limit,
            "corpus_split": args.task,
            "prompt_versions": prompts.versions(),
            "problem_source": problem_set.source,
            "skipped_items": problem_set.skipped,
            "index_width": run.width,
        },
    )


def problem_fingerprint(problems: Sequence[Problem]) -> dict[str, object]:
    """What identifies a run's problem set: its size and a hash of every problem's id, text and gold answer."""
    digest = hashlib.sha256()
    for problem in problems:
        digest.update(json.dumps([problem.source_id, problem.problem, problem.gold_answer]).encode())
    return {"count": len(problems), "sha256": digest.hexdigest()[:16], "first_ids": [p.source_id for p in problems[:3]]}


def prompt_version_tag(prompts: MCTSPrompts) -> str:
    """One short tag over all prompt versions, for answer sheets."""
    joined = json.dumps(prompts.versions(), sort_keys=True)
    return hashlib.sha256(joined.encode()).hexdigest()[:12]


def parse_args(argv: Sequence[str] | None, settings: Settings) -> argparse.Namespace:
    """Flags (``--config`` included) with the derived defaults filled in; bad values exit through argparse."""
    parser = build_parser(settings)
    args = parse_flags(parser, None if argv is None else list(argv))
    require_flags(parser, args, "dataset_name", "model_ckpt")
    for flag in ("num_rollouts", "num_workers", "num_cpu", "topk_rt", "retrieval_score_depth"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1")
    if args.grading_workers is not None and args.grading_workers < 1:
        parser.error("--grading_workers must be >= 1")
    if args.max_concurrency is not None and args.max_concurrency < 1:
        parser.error("--max_concurrency must be >= 1")
    if not 0.0 < args.mcts_discount_factor <= 1.0:
        parser.error(f"--mcts_discount_factor must be in (0, 1], got {args.mcts_discount_factor}")
    if args.dataset_name == "CHAMP" and args.corpus is None:
        from models.embedded.champ import prepare_champ_mirror

        args.corpus = str(prepare_champ_mirror())
        if args.task == "theoremqa_theorems":
            args.task = "champ"
    args.corpus = args.corpus or settings.bright_dir or "hf"
    try:
        args.reward = resolve_reward(args)
        check_rstar_flags(args)
        expansion_config(args)
        action_settings(args)
        if args.shard:
            parse_shard(args.shard)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    settings = load_settings()
    args = parse_args(argv, settings)
    configure_logging(verbose=args.verbose)
    return run_stage(lambda: run(args, settings), name=STAGE)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """The stage: select problems, check or start the run directory, search what is not finished."""
    shard = parse_shard(args.shard) if args.shard else None
    problem_set = load_problems(args.dataset_name, args.data_root, args.test_json_filename, args.data_file)
    wanted = _read_problem_ids(args.problem_ids) if args.problem_ids else None
    covered = select_problems(problem_set.problems, args.start_idx, args.end_idx, None, wanted)
    problems = select_problems(covered, 0, None, shard, None) if shard else covered
    expansion = expansion_config(args)
    run = run_directory(args, problem_set.total_items)
    prompts = MCTSPrompts.load(
        args.LLM_candidate_theorems,
        subquestions=expansion.enabled(ActionName.SUBQUESTION),
        rephrase=expansion.enabled(ActionName.REPHRASE),
        shape=args.prompt_shape,
    )
    record = stage_record(args, run, prompts, problem_set, covered, shard)
    args_path = run.root / "args.json"
    check_rerun(args_path, record, fresh_run="use a new --run_name (or the original flags and problem file)")
    run.create()
    record.write(args_path)

    finished = run.finished_ids()
    pending = [problem for problem in problems if problem.source_id not in finished]
    logger.info(
        "run %s: %d problems selected, %d already finished, %d to search",
        run.root,
        len(problems),
        len(problems) - len(pending),
        len(pending),
    )
    search = SearchSettings(
        num_rollouts=args.num_rollouts,
        exploration_weight=args.mcts_exploration_weight,
        weight_scheduler=args.mcts_weight_scheduler,
        discount=args.mcts_discount_factor,
        seed=args.seed,
        save_tree=args.save_tree,
        expansion=expansion,
        unparsable_verdicts_as_negatives=args.unparsable_verdicts == "negative",
    )
    concurrency = args.num_workers * args.num_cpu
    logger.info(
        "prompts sent as %s; LLM judge %s; %s",
        args.prompt_shape,
        "on (unmatched boxed answers go to the generator)" if args.llm_judge else "off (symbolic grading only)",
        f"unparsable verdicts {'logged as negatives' if args.unparsable_verdicts == 'negative' else 'not logged'}",
    )
    clients = generator_clients(args, settings)
    retrievers = retriever_set(args, settings)
    checker = SymbolicChecker(num_workers=args.grading_workers or grading_workers_for(concurrency))
    resources = [ActionResources(client, retrievers, action_settings(args), prompts, checker) for client in clients]
    provenance = {
        "model": args.model_ckpt,
        "prompt_version": prompt_version_tag(prompts),
        "prompt_versions": prompts.versions(),
        "prompt_shape": args.prompt_shape,
    }
    interrupted = False
    try:
        failed, seconds = run_problems(pending, resources, search, run, concurrency, provenance, args.interrupt_grace_s)
    except KeyboardInterrupt:
        failed, seconds, interrupted = [], [], True
    finally:
        checker.close()
    done = run.finished_ids()
    counts = sum_counts(sheet.get("action_counts", {}) for sheet in run.answer_sheet_records())
    summary = {
        "selected": len(problems),
        "finished": sum(problem.source_id in done for problem in problems),
        "interrupted": interrupted,
        "failed": sorted(failed),
        "generator_usage": [client.usage.as_dict() for client in clients],
        "search_seconds": {"problems": len(seconds), "total": round(sum(seconds), 1),
                           "max": round(max(seconds, default=0.0), 1)},
        **counts,
    }  # fmt: skip
    atomic_write_json(run.root / "run_summary.json", summary)
    for client in clients:
        client.close()
    logger.info("unparsable generator outputs per action (all finished problems):\n%s", format_shares(counts))
    logger.info(
        "finished %d/%d problems; %d failed (see %s)",
        summary["finished"],
        len(problems),
        len(failed),
        run.root / "errors",
    )
    if interrupted:
        raise KeyboardInterrupt  # run_stage: exit 130
    return EXIT_SOME_FAILED if failed else 0


def run_problems(
    problems: Sequence[Problem],
    resources: Sequence[ActionResources],
    search: SearchSettings,
    run: RunDirectory,
    concurrency: int,
    provenance: dict[str, Any],
    grace_s: float = DEFAULT_GRACE_S,
) -> tuple[list[int], list[float]]:
    """Search ``problems`` ``concurrency`` at a time; returns the indices that failed (each logged with its
    traceback) and the search seconds of those that did not."""
    failed: list[int] = []
    seconds: list[float] = []
    started = time.monotonic()

    def one(problem: Problem) -> ProblemOutputs:
        endpoint = resources[problem.index % len(resources)]
        return solve_problem(problem, endpoint, search, provenance)

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="mcts")
    futures = {pool.submit(one, problem): problem for problem in problems}
    try:
        with tqdm(total=len(futures), desc="MCTS problems", unit="problem", file=sys.stderr) as bar:
            for future in concurrent.futures.as_completed(futures):
                problem = futures[future]
                try:
                    outputs = future.result()
                    write_problem_outputs(run, outputs)
                    seconds.append(outputs.seconds)
                except Exception as error:  # one problem's failure must not stop the others
                    trace = "".join(traceback.format_exception(error))
                    logger.error("problem %d (%s) failed:\n%s", problem.index, problem.source_id, trace)
                    write_problem_error(run, problem.index, problem.source_id, error, trace)
                    failed.append(problem.index)
                bar.update(1)
                bar.set_postfix(failed=len(failed), rate=f"{bar.n / max(time.monotonic() - started, 1e-9):.3f}/s")
    except KeyboardInterrupt:
        _wind_down(pool, futures, run, resources, seconds, grace_s)
        raise
    pool.shutdown(wait=True)
    return failed, seconds


def _wind_down(
    pool: concurrent.futures.ThreadPoolExecutor,
    futures: dict[concurrent.futures.Future[ProblemOutputs], Problem],
    run: RunDirectory,
    resources: Sequence[ActionResources],
    seconds: list[float],
    grace_s: float,
) -> None:
    """After SIGINT/SIGTERM: start no new problem, give the searches in flight ``grace_s`` to finish and
    write their outputs, then stop every request (a second interrupt skips the wait)."""
    for future in futures:
        future.cancel()  # queued problems never start
    running = [f for f in futures if not f.cancelled() and not f.done()]
    logger.warning("interrupted: no new problems; %d searches in flight get %.0f s to finish", len(running), grace_s)
    saved = 0
    try:
        for future in concurrent.futures.as_completed(running, timeout=grace_s):
            if future.exception() is None:
                outputs = future.result()
                write_problem_outputs(run, outputs)
                seconds.append(outputs.seconds)
                saved += 1
    except (concurrent.futures.TimeoutError, KeyboardInterrupt):
        pass
    for client in {id(r.llm): r.llm for r in resources}.values():
        client.stop_requests(cancel_in_flight=True)
    pool.shutdown(wait=True)  # the cut-off searches fail at their next request; nothing of theirs is written
    logger.warning(
        "stopped: %d searches finished during the grace period, %d cut off; rerun with the same --run_name to "
        "resume", saved, len(running) - saved,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
