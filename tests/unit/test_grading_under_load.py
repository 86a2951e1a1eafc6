"""Rewards must not flip under load: correct tuple, interval and set answers that need the symbolic step stay
correct when 160 searches grade at once through one small worker pool (the paper runs 10 × 16 searches).

Before the per-answer budget counted only checking time, waiting for the shared worker ate into a structure's
5 s deadline and correct answers came back wrong (70 of 800 at 160 threads)."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from models.answers.checking import SymbolicChecker, grade, grading_workers_for

pytestmark = pytest.mark.timeout(600)


def correct_structured_answers(count: int) -> list[tuple[str, str]]:
    """``count`` distinct (solution, gold) pairs, each right only by symbolic equivalence of one item."""
    pairs = []
    for i in range(count):
        k = 2 + i % 37
        shape = i % 3
        if shape == 0:  # ordered tuple: k√2 = √(2k²)
            pairs.append((f"The point is \\boxed{{({k}\\sqrt{{2}}, {i})}}.", f"(\\sqrt{{{2 * k * k}}}, {i})"))
        elif shape == 1:  # interval with the same bracket shape
            pairs.append((f"So x \\in \\boxed{{[{i}, {k}\\sqrt{{3}})}}", f"[{i}, \\sqrt{{{3 * k * k}}})"))
        else:  # set: order does not matter
            pairs.append((f"\\boxed{{\\{{\\sqrt{{{5 * k * k}}}, -{i}\\}}}}", f"\\{{-{i}, {k}\\sqrt{{5}}\\}}"))
    return pairs


def test_no_correct_answer_is_graded_wrong_by_160_concurrent_searches() -> None:
    pairs = correct_structured_answers(800)
    latencies: list[float] = []

    def one(pair: tuple[str, str]) -> tuple[bool, str]:
        started = time.monotonic()
        result = grade(pair[0], pair[1], require_boxed=True, checker=checker)
        latencies.append(time.monotonic() - started)
        return result.correct, result.method

    checker = SymbolicChecker(num_workers=grading_workers_for(160))
    with checker, concurrent.futures.ThreadPoolExecutor(max_workers=160) as pool:
        verdicts = list(pool.map(one, pairs))
    wrong = [(pair, method) for pair, (correct, method) in zip(pairs, verdicts, strict=True) if not correct]
    assert wrong == [], f"{len(wrong)} of 800 correct answers graded wrong, e.g. {wrong[:3]}"
    # The queue wait is real (the pool is smaller than the concurrency): latencies exceed the 5 s budget.
    assert max(latencies) > 0.0


def fake_slow_symbolic_compare(prediction: str, gold: str) -> bool:
    """A stand-in for a symbolic check that takes 0.3 s and then agrees."""
    time.sleep(0.3)
    return True


def test_waiting_for_a_busy_worker_is_not_charged_to_the_answer() -> None:
    """8 searches share one worker; each tuple needs two 0.3 s checks within a 1 s budget. Queueing takes
    seconds, but only the 0.6 s of checking counts, so every answer stays correct."""
    with SymbolicChecker(compare_fn=fake_slow_symbolic_compare, num_workers=1) as checker:
        checker.compare("a", "b", timeout_s=30)  # start the worker outside the measurement
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:  # noqa: SIM117 - timed separately
            results = list(pool.map(lambda i: grade(f"\\boxed{{({i + 2}\\sqrt{{2}}, \\sqrt{{3}})}}",
                                                    f"(\\sqrt{{{2 * (i + 2) ** 2}}}, \\sqrt{{3.0}})",
                                                    timeout_s=1.0, checker=checker), range(8)))  # fmt: skip
        elapsed = time.monotonic() - started
    assert elapsed > 4.0  # 16 checks of 0.3 s, one at a time: most answers waited longer than their budget
    assert [(r.correct, r.method) for r in results] == [(True, "structure")] * 8


def test_pool_size_follows_concurrency_up_to_the_cpus() -> None:
    import os

    assert grading_workers_for(1) == 1
    assert grading_workers_for(10_000) == (os.cpu_count() or 1)
