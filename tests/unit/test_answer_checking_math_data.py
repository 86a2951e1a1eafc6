"""Answer checking on 1,000 real MATH training problems: every solution must match its own boxed
answer, and (almost) never another problem's.

The data lives outside the repository (``<repo>/../shared/data/math/math_train_1000.json``, records
with ``problem, level, type, solution``); the tests skip with a reason when it is absent.

Cross matches are split in two: pairs whose gold strings are identical up to whitespace are true
matches (many MATH answers are small integers, so a random pairing repeats about 0.7 % of
answers); every other match is counted as a false match for the bound, even where it is a
legitimate equivalence such as ``40`` vs ``40\\%`` (percent signs are dropped, as in MATH grading).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from models.answers.checking import GradeResult, SymbolicChecker, grade
from models.answers.extraction import gold_answer_from_solution

REPO_ROOT = Path(__file__).resolve().parents[2]
MATH_DATA = REPO_ROOT.parent / "shared" / "data" / "math" / "math_train_1000.json"
SEED = 20240611
NUM_THREADS = 2  # the grading is CPU-bound in the worker processes; two keep a loaded 2-core box busy
TIMEOUT_S = 30.0  # generous: a verdict must not depend on machine load (the limit has its own tests)


@dataclass(frozen=True)
class Problem:
    solution: str
    gold: str


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    if not MATH_DATA.is_file():
        pytest.skip(f"shared MATH data not found at {MATH_DATA}")
    records = json.loads(MATH_DATA.read_text(encoding="utf-8"))
    return [Problem(r["solution"], gold_answer_from_solution(r["solution"])) for r in records]


@pytest.fixture(scope="module")
def checker() -> Iterator[SymbolicChecker]:
    with SymbolicChecker(num_workers=NUM_THREADS) as shared:
        yield shared


def _grade_all(pairs: list[tuple[str, str]], checker: SymbolicChecker) -> list[GradeResult]:
    with ThreadPoolExecutor(max_workers=NUM_THREADS) as pool:
        return list(pool.map(lambda pair: grade(pair[0], pair[1], timeout_s=TIMEOUT_S, checker=checker), pairs))


def sattolo_derangement(n: int, rng: random.Random) -> list[int]:
    """A uniformly random cyclic permutation (Sattolo's algorithm), hence with no fixed point."""
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)
        order[i], order[j] = order[j], order[i]
    return order


def test_every_solution_matches_its_own_boxed_answer(problems: list[Problem], checker: SymbolicChecker) -> None:
    results = _grade_all([(p.solution, p.gold) for p in problems], checker)
    misses = [(p.gold, r) for p, r in zip(problems, results, strict=True) if not r.correct]
    rate = 1 - len(misses) / len(problems)
    print(f"self-match: {len(problems) - len(misses)}/{len(problems)}")
    assert rate >= 0.995, f"self-match {rate:.3%}; misses: {misses[:10]}"


def test_solutions_rarely_match_another_problems_answer(problems: list[Problem], checker: SymbolicChecker) -> None:
    order = sattolo_derangement(len(problems), random.Random(SEED))
    assert all(i != j for i, j in enumerate(order))
    pairs = [(problems[i].solution, problems[j].gold) for i, j in enumerate(order)]
    results = _grade_all(pairs, checker)
    matched = [(problems[i].gold, problems[j].gold, r.method)
               for (i, j), r in zip(enumerate(order), results, strict=True) if r.correct]
    identical = [m for m in matched if re.sub(r"\s", "", m[0]) == re.sub(r"\s", "", m[1])]
    false_matches = [m for m in matched if m not in identical]
    print(f"cross-match: {len(matched)}/{len(problems)} ({len(identical)} identical gold strings); "
          f"false matches {len(false_matches)}/{len(problems)}: {false_matches}")
    assert len(false_matches) / len(problems) <= 0.01, f"false matches: {false_matches}"
    timeouts = [(problems[i].gold, problems[j].gold) for (i, j), r in zip(enumerate(order), results, strict=True)
                if r.method == "timeout"]
    assert not timeouts, f"comparisons of real MATH answers should not time out: {timeouts}"
