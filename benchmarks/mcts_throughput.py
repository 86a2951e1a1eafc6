"""How well the MCTS keeps a generator server busy: its output rate over the server's own saturated rate for
the very requests the MCTS sent.

Each search is sequential (one LLM call after another), so the runner gets throughput only by running many
searches at once; what it can lose is time between requests (retrieval, parsing, answer checking, the tail
of the run). This script (not a test) measures both sides against one running OpenAI-compatible server,
alternating them ``--repeats`` times:

1. ``mcts``: the real runner (:func:`run_src.run_parallel_workers.run_problems`) searching ``--problems``
   CHAMP problems with ``--workers`` concurrent searches, the generator client built as the runner builds it
   (requests in flight = concurrent searches), and every request it sends recorded;
2. ``replay``: the same recorded requests (same messages, sampling parameters and seeds, so the same prompt
   and answer lengths) sent with no dependencies between them, ``--workers`` in flight: the server's
   saturated rate for the MCTS's own prompt/answer length mix at the MCTS's load.

It prints completion tokens/second of each round, the medians, and the utilisation ``mcts / replay`` twice:
over the whole run, and in the steady state (until fewer problems, or requests, are left than slots; a run
of thousands of problems is nearly all steady state, a benchmark of a few dozen also has a tail in which
searches run out). The target is >= 0.95 in the steady state. ``--json_out`` writes it all as JSON. Start the servers first, e.g.::

    bash servers/up.sh generator=$(python -m models.embedded.assets | jq -r .smollm2),8010 bm25=champ,8012
    python -m benchmarks.mcts_throughput --generator_url http://127.0.0.1:8010/v1 \\
        --model ~/.cache/rader/assets/models/SmolLM2-135M-Instruct --bm25_url http://127.0.0.1:8012
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.llm.client import Completion, LLMClient, LLMClientConfig, SamplingParams
from models.llm.factory import build_llm_client
from models.serving.retriever_client import RetrieverClient
from run_src.mcts.llm_actions import ActionResources, ActionSettings, RetrieverSet
from run_src.mcts.nodes import ActionName, ExpansionConfig
from run_src.mcts.problems import load_problems
from run_src.mcts.run_outputs import RunDirectory, index_width
from run_src.mcts.solve import SearchSettings
from run_src.run_parallel_workers import run_problems


@dataclass(frozen=True)
class RecordedRequest:
    """One request the MCTS sent: ``chat`` messages or a ``complete`` prompt, with its sampling parameters."""

    kind: str
    payload: Any
    params: SamplingParams
    completion_tokens: int
    finished_at: float = 0.0  # time.time() when the reply arrived


def steady_rate(requests: list[RecordedRequest], started: float, steady_until: float | None) -> float | None:
    """Completion tokens/s of the requests that finished before ``steady_until`` (``None``: no such window)."""
    if steady_until is None or steady_until <= started:
        return None
    return sum(r.completion_tokens for r in requests if r.finished_at <= steady_until) / (steady_until - started)


def steady_end(finish_times: list[float], slots: int) -> float | None:
    """When fewer than ``slots`` units of work are left to start: the end of the window in which every slot
    can be busy (the (n - slots + 1)-th finish). A run of thousands of problems spends nearly all its time
    there; a benchmark of a few dozen also has a tail in which searches run out."""
    ordered = sorted(finish_times)
    return ordered[len(ordered) - slots] if len(ordered) > slots else None


def record_requests(client: LLMClient) -> list[RecordedRequest]:
    """Make ``client`` append every successful request to the returned list (benchmark instrumentation)."""
    recorded: list[RecordedRequest] = []
    chat, complete = client._chat, client._complete

    async def recording_chat(messages: Any, params: SamplingParams) -> Completion:
        completion = await chat(messages, params)
        recorded.append(RecordedRequest("chat", messages, params, completion.completion_tokens, time.time()))
        return completion

    async def recording_complete(prompt: Any, params: SamplingParams) -> Completion:
        completion = await complete(prompt, params)
        recorded.append(RecordedRequest("complete", prompt, params, completion.completion_tokens, time.time()))
        return completion

    client._chat, client._complete = recording_chat, recording_complete  # type: ignore[method-assign]
    return recorded


def generator_client(args: argparse.Namespace) -> LLMClient:
    """The client the runner would build: as many requests in flight as concurrent searches."""
    return build_llm_client(
        LLMClientConfig("openai-compatible", args.model, base_url=args.generator_url, max_concurrency=args.workers)
    )


def mcts_load(args: argparse.Namespace) -> tuple[dict[str, float], list[RecordedRequest]]:
    """Run the real MCTS runner on ``--problems`` CHAMP problems; its output rate and the requests it sent."""
    client = generator_client(args)
    recorded = record_requests(client)
    settings = ActionSettings(
        crs_max_tokens=args.max_tokens, ost_max_tokens=64, qg_max_tokens=args.max_tokens,
        summary_max_tokens=64, reflection_max_tokens=48, topk_rt=3,
    )  # fmt: skip
    resources = ActionResources(client, RetrieverSet(bm25=RetrieverClient(args.bm25_url)), settings)
    expansion = ExpansionConfig(
        max_depth_allowed=args.max_depth, disabled_actions=frozenset({ActionName.SUBQUESTION, ActionName.REPHRASE})
    )
    search = SearchSettings(num_rollouts=args.rollouts, expansion=expansion)
    problem_set = load_problems("CHAMP")
    problems = problem_set.problems[: args.problems]
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDirectory(Path(tmp), index_width(problem_set.total_items))
        run.create()
        started, wall_clock = time.monotonic(), time.time()
        failed, _ = run_problems(problems, [resources], search, run, args.workers, {"model": args.model})
        wall = time.monotonic() - started
        finishes = [run.answer_sheet(p.index).stat().st_mtime for p in problems if run.answer_sheet(p.index).is_file()]
    usage = client.usage.as_dict()
    client.close()
    return {
        "completion_tokens": usage["completion_tokens"],
        "requests": usage["requests"],
        "seconds": wall,
        "tokens_per_s": usage["completion_tokens"] / wall,
        "steady_tokens_per_s": steady_rate(recorded, wall_clock, steady_end(finishes, args.workers)),
        "failed_problems": len(failed),
    }, recorded


def replay_load(args: argparse.Namespace, requests: list[RecordedRequest]) -> dict[str, float]:
    """Send ``requests`` with ``--workers`` in flight and no dependencies: the saturated rate for their mix."""
    client = generator_client(args)

    async def one(request: RecordedRequest) -> RecordedRequest:
        if request.kind == "chat":
            completion = await client.achat(request.payload, request.params)
        else:
            completion = await client.acomplete(request.payload, request.params)
        return dataclasses.replace(request, completion_tokens=completion.completion_tokens, finished_at=time.time())

    async def run() -> list[RecordedRequest]:
        return await asyncio.gather(*(one(r) for r in requests))  # the client admits --workers at a time

    started, wall_clock = time.monotonic(), time.time()
    replies = asyncio.run(run())
    wall = time.monotonic() - started
    client.close()
    tokens = sum(r.completion_tokens for r in replies)
    steady = steady_rate(replies, wall_clock, steady_end([r.finished_at for r in replies], args.workers))
    return {
        "completion_tokens": tokens, "requests": len(requests), "seconds": wall, "tokens_per_s": tokens / wall,
        "steady_tokens_per_s": steady,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generator_url", required=True)
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--bm25_url", required=True, help="BM25 server over the CHAMP concepts (bm25=champ)")
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--workers", type=int, default=32, help="concurrent searches (and requests in flight)")
    parser.add_argument("--rollouts", type=int, default=2)
    parser.add_argument("--max_depth", type=int, default=4)
    parser.add_argument("--max_tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2, help="mcts/replay rounds, alternating")
    parser.add_argument("--json_out", default=None)
    args = parser.parse_args()
    if min(args.problems, args.workers, args.repeats) < 1:
        parser.error("--problems, --workers and --repeats must be >= 1")
    logging.basicConfig(level=logging.WARNING)

    rounds: list[dict[str, Any]] = []
    for index in range(args.repeats):
        mcts, recorded = mcts_load(args)
        replay = replay_load(args, recorded)
        rounds.append({"mcts": mcts, "replay": replay})
        print(
            f"round {index + 1}: mcts {mcts['tokens_per_s']:8.1f} tok/s, steady {_rate(mcts['steady_tokens_per_s'])} "
            f"({mcts['completion_tokens']} tokens, {mcts['requests']} requests, {mcts['seconds']:.0f} s, "
            f"{mcts['failed_problems']} failed problems) | replay {replay['tokens_per_s']:8.1f} tok/s, steady "
            f"{_rate(replay['steady_tokens_per_s'])} ({replay['completion_tokens']} tokens, {replay['seconds']:.0f} s)"
        )
    summary: dict[str, Any] = {}
    for key in ("tokens_per_s", "steady_tokens_per_s"):
        values = {side: [r[side][key] for r in rounds if r[side][key] is not None] for side in ("mcts", "replay")}
        if not all(values.values()):
            continue
        medians = {side: statistics.median(v) for side, v in values.items()}
        summary[key] = {"median": medians, "min": {side: min(v) for side, v in values.items()},
                        "utilisation": medians["mcts"] / medians["replay"]}  # fmt: skip
    print("\n| figure | mcts (tok/s) | replay (tok/s) | utilisation |\n|---|---|---|---|")
    labels = {"tokens_per_s": "whole run, tail included", "steady_tokens_per_s": "steady state (every search slot busy)"}
    for key, figure in summary.items():
        print(
            f"| MCTS over a replay of its own requests, {labels[key]} | {figure['median']['mcts']:.1f} | "
            f"{figure['median']['replay']:.1f} | **{figure['utilisation']:.2f}** |"
        )
    print(f"(medians of {args.repeats} alternating rounds; target >= 0.95 in the steady state)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"rounds": rounds, "summary": summary, "args": vars(args)}, indent=2))


def _rate(value: float | None) -> str:
    return "n/a (no more problems than workers)" if value is None else f"{value:.1f} tok/s"


if __name__ == "__main__":
    main()
