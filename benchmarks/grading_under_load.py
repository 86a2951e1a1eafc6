"""Answer grading under the MCTS's concurrency: wrong-verdict rate and latency of a grade.

The paper's command runs 10 × 16 searches at once, and every search grades its completions against the gold
answer. Rewards must not depend on that load. This script (not a test) grades ``--answers`` correct
tuple, interval and set answers, each right only by symbolic equivalence of one item, from ``--threads``
threads at a time through :func:`models.answers.checking.grade` with a worker pool of
:func:`~models.answers.checking.grading_workers_for` processes, and, side by side in the same process
and alternating, through math-verify's own ``parse`` + ``verify`` called in the threads (what a user would
otherwise pick; it has no usable timeout off the main thread). It prints, per concurrency level, the wrong
verdicts, answers per second, the p50/p99 latency of one grade, and the throughput ratio ours / math-verify.

Usage::

    python -m benchmarks.grading_under_load --threads 8 64 160 --answers 800 --repeats 2
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

from models.answers.checking import SymbolicChecker, grade, grading_workers_for


def answer_pairs(count: int, offset: int = 0) -> list[tuple[str, str]]:
    """Distinct (solution text, gold) pairs that are equivalent only symbolically (no verdict cache helps)."""
    pairs: list[tuple[str, str]] = []
    for index in range(offset, offset + count):
        k, j = 2 + index % 41, index
        kind = index % 4
        if kind == 0:
            pairs.append((f"\\boxed{{({k}\\sqrt{{2}}, {j}, \\frac{{1}}{{2}})}}", f"(\\sqrt{{{2 * k * k}}}, {j}, 0.5)"))
        elif kind == 1:
            pairs.append((f"\\boxed{{(-\\infty, {k}\\sqrt{{7}}]}}", f"(-\\infty, \\sqrt{{{7 * k * k}}}]"))
        elif kind == 2:
            pairs.append((f"\\boxed{{\\{{{k}\\sqrt{{3}}, {j}\\}}}}", f"\\{{{j}, \\sqrt{{{3 * k * k}}}\\}}"))
        else:
            pairs.append((f"\\boxed{{[{j}, \\frac{{{k}\\pi}}{{2}})}}", f"[{j}, {k}\\pi/2)"))
    return pairs


def _math_verify_grade(solution: str, gold: str) -> bool:
    from math_verify import parse, verify

    return bool(verify(parse(f"${gold}$", parsing_timeout=None), parse(solution, parsing_timeout=None), timeout_seconds=None))


def _measure(grade_one: Callable[[tuple[str, str]], bool], pairs: list[tuple[str, str]], threads: int) -> dict[str, Any]:
    latencies: list[float] = []

    def timed(pair: tuple[str, str]) -> bool:
        started = time.monotonic()
        verdict = grade_one(pair)
        latencies.append(time.monotonic() - started)
        return verdict

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        verdicts = list(pool.map(timed, pairs))
    wall = time.monotonic() - started
    latencies.sort()
    return {
        "wrong": sum(not v for v in verdicts),
        "answers": len(pairs),
        "per_s": len(pairs) / wall,
        "p50_s": statistics.median(latencies),
        "p99_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[8, 64, 160])
    parser.add_argument("--answers", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds per concurrency level")
    parser.add_argument("--timeout_s", type=float, default=5.0, help="per-answer checking budget")
    parser.add_argument("--json_out", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results: list[dict[str, Any]] = []
    offset = 0
    for threads in args.threads:
        with SymbolicChecker(num_workers=grading_workers_for(threads)) as checker:
            checker.compare("1", "1", timeout_s=120)  # start the pool before timing

            def ours(pair: tuple[str, str], checker: SymbolicChecker = checker) -> bool:
                return grade(pair[0], pair[1], timeout_s=args.timeout_s, require_boxed=True, checker=checker).correct

            for repeat in range(args.repeats):
                for name, fn in (("ours", ours), ("math-verify", lambda p: _math_verify_grade(*p))):
                    pairs = answer_pairs(args.answers, offset)  # fresh answers every round: no cache effects
                    offset += args.answers
                    row = {"grader": name, "threads": threads, "repeat": repeat,
                           "pool": checker.num_workers if name == "ours" else 0, **_measure(fn, pairs, threads)}  # fmt: skip
                    results.append(row)
    print(f"{'grader':<12} {'threads':>7} {'pool':>4} {'wrong':>9} {'answers/s':>10} {'p50 s':>7} {'p99 s':>7}")
    for row in results:
        print(f"{row['grader']:<12} {row['threads']:>7} {row['pool']:>4} {row['wrong']:>4}/{row['answers']:<4} "
              f"{row['per_s']:>10.1f} {row['p50_s']:>7.3f} {row['p99_s']:>7.3f}")  # fmt: skip
    for threads in args.threads:
        ours_rate = statistics.mean(r["per_s"] for r in results if r["threads"] == threads and r["grader"] == "ours")
        lib_rate = statistics.mean(r["per_s"] for r in results if r["threads"] == threads and r["grader"] != "ours")
        print(f"{threads:>4} threads: throughput ours / math-verify = {ours_rate / lib_rate:.2f}")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
