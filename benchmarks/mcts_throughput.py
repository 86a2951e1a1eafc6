"""How well the MCTS keeps a generator server busy: its tokens/second over a saturating plain load's.

Each search is sequential (one LLM call after another), so the runner gets throughput only by running
many searches at once. This script (not a test) measures, against one running OpenAI-compatible server:

1. ``plain``: ``--load_concurrency`` workers sending chat requests back to back for ``--seconds``
   (prompts shaped like the MCTS ones: a few-shot prompt of our OST/CRS files, ``--load_max_tokens``
   tokens each) — the server's saturated output rate;
2. ``mcts``: the real runner (:func:`run_src.run_parallel_workers.run_problems`) searching
   ``--problems`` CHAMP problems with ``--workers`` concurrent searches and the given retriever server.

It prints completion tokens/second of both and their ratio (target ≥ 0.8), and writes them as JSON with
``--json_out``. Start the servers first, e.g.::

    bash servers/up.sh generator=$(python -m models.embedded.assets | jq -r .smollm2),8010 bm25=champ,8012
    python -m benchmarks.mcts_throughput --generator_url http://127.0.0.1:8010/v1 \\
        --model ~/.cache/rader/assets/models/SmolLM2-135M-Instruct --bm25_url http://127.0.0.1:8012
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
from pathlib import Path

from models.llm.client import LLMClientConfig, SamplingParams
from models.llm.factory import build_llm_client
from models.serving.retriever_client import RetrieverClient
from run_src.mcts.llm_actions import ActionResources, ActionSettings, MCTSPrompts, RetrieverSet
from run_src.mcts.nodes import ActionName, ExpansionConfig
from run_src.mcts.problems import load_problems
from run_src.mcts.run_outputs import RunDirectory, index_width
from run_src.mcts.solve import SearchSettings
from run_src.run_parallel_workers import run_problems


def plain_load(base_url: str, model: str, concurrency: int, seconds: float, max_tokens: int) -> dict[str, float]:
    """Saturate the server with ``concurrency`` back-to-back chat requests for ``seconds``."""
    prompts = MCTSPrompts.load(True)
    problems = load_problems("CHAMP").problems
    client = build_llm_client(
        LLMClientConfig("openai-compatible", model, base_url=base_url, max_concurrency=concurrency)
    )

    async def worker(worker_id: int, stop_at: float) -> int:
        tokens, turn = 0, 0
        while time.monotonic() < stop_at:
            problem = problems[(worker_id * 7 + turn) % len(problems)]
            template = prompts.crs if turn % 2 else prompts.ost
            messages = template.render(question=problem.problem, partial_solution="(no steps yet)")
            params = SamplingParams(max_tokens=max_tokens, temperature=0.8, top_p=0.95, seed=worker_id * 1000 + turn)
            completion = await client.achat(messages, params)
            tokens += completion.completion_tokens
            turn += 1
        return tokens

    async def run() -> tuple[int, float]:
        started = time.monotonic()
        counts = await asyncio.gather(*(worker(i, started + seconds) for i in range(concurrency)))
        return sum(counts), time.monotonic() - started

    tokens, wall = asyncio.run(run())
    client.close()
    return {"completion_tokens": tokens, "seconds": wall, "tokens_per_s": tokens / wall}


def mcts_load(args: argparse.Namespace) -> dict[str, float]:
    """Run the real MCTS runner on ``--problems`` CHAMP problems and measure the generator's output rate."""
    client = build_llm_client(
        LLMClientConfig("openai-compatible", args.model, base_url=args.generator_url, max_concurrency=256)
    )
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
        started = time.monotonic()
        failed, _ = run_problems(problems, [resources], search, run, args.workers, {"model": args.model})
        wall = time.monotonic() - started
    usage = client.usage.as_dict()
    client.close()
    return {
        "completion_tokens": usage["completion_tokens"],
        "requests": usage["requests"],
        "seconds": wall,
        "tokens_per_s": usage["completion_tokens"] / wall,
        "failed_problems": len(failed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generator_url", required=True)
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--bm25_url", required=True, help="BM25 server over the CHAMP concepts (bm25=champ)")
    parser.add_argument("--load_concurrency", type=int, default=32)
    parser.add_argument("--load_max_tokens", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--workers", type=int, default=32, help="concurrent searches")
    parser.add_argument("--rollouts", type=int, default=2)
    parser.add_argument("--max_depth", type=int, default=4)
    parser.add_argument("--max_tokens", type=int, default=128)
    parser.add_argument("--json_out", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    plain = plain_load(args.generator_url, args.model, args.load_concurrency, args.seconds, args.load_max_tokens)
    print(
        f"plain load : {plain['tokens_per_s']:8.1f} tok/s ({plain['completion_tokens']} tokens in {plain['seconds']:.0f} s)"
    )
    mcts = mcts_load(args)
    print(f"mcts       : {mcts['tokens_per_s']:8.1f} tok/s ({mcts['completion_tokens']} tokens, {mcts['requests']} requests, "
          f"{mcts['seconds']:.0f} s, {mcts['failed_problems']} failed problems)")  # fmt: skip
    ratio = mcts["tokens_per_s"] / plain["tokens_per_s"]
    print(f"ratio mcts/plain: {ratio:.2f} (target >= 0.8)")
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps({"plain": plain, "mcts": mcts, "ratio": ratio, "args": vars(args)}, indent=2)
        )


if __name__ == "__main__":
    main()
