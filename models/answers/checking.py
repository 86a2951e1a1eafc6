"""Decide whether a model's answer equals a gold answer: string, numeric, structural and symbolic
checks under a time limit, plus an optional LLM judge. Knows nothing about MCTS or rewards.

Inputs are raw answers (or, for :func:`grade`, a whole solution whose last ``\\boxed{}`` is the
answer); both sides go through :func:`models.answers.extraction.normalize_answer` first. The checks,
in order, each of which may decide:

1. equal normalised strings (spec mcts.md §10.4);
2. ``yes``/``no`` against ``True``/``False``, and multiple choice (``\\text{(B)}`` ≡ ``(B)`` ≡ ``B``);
3. text answers (``\\text{Sunday}``): compared as lower-cased words, never symbolically, so
   anagrams cannot match as products of symbols;
4. plain numbers (integers, decimals, ``\\frac{a}{b}``, ``a/b``, mixed numbers ``2\\frac{1}{2}``):
   exact rational equality (``1000000`` ≠ ``1000001``); if either side is written as a decimal,
   ``|a - b| <= max(1e-6 * max(|a|, |b|), 1e-9)`` (``math.isclose`` semantics, computed exactly),
   so ``0.3333333`` ≡ ``\\frac13`` but the rounded ``0.333`` is not;
5. structures, compared element by element with the same checks: tuples and intervals keep order
   and bracket shape (``(1,2)`` ≠ ``(2,1)``, ``[0,1)`` ≠ ``[0,1]``), sets and bare comma lists
   ignore order, matrices compare cell by cell, ``\\cup`` pieces ignore order;
6. symbolic equivalence with math-verify (``parse`` + ``verify``) in a worker process that is
   killed when it overruns ``timeout_s``, so a pathological expression cannot hang the caller. A
   decimal against a closed form (``3.14159265`` vs ``\\pi``) uses the tolerance of step 4.

DEVIATION (spec §10.6, §10.7 [FIX-optional]): the reference rewarded string matches only and sent
everything else to the LLM judge; the symbolic step runs before any judge call here. The judge lives in
:mod:`models.answers.judge`.

Symbolic checks run in a pool of worker processes. Each answer has a budget of ``timeout_s`` seconds of
*checking* time: waiting for a free worker, or for a worker restarted after someone else's timeout, is not
charged, so a correct answer is not graded wrong because other searches keep the pool busy.

Usage::

    grade("... so the area is $\\boxed{\\dfrac{1}{2}}$.", "0.5").correct   # True
    is_equivalent("[0,1)", "[0,1]")                                      # False
"""

from __future__ import annotations

import atexit
import cmath
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from models.answers.extraction import (
    AnswerStructure,
    choice_letter,
    extract_boxed,
    free_letters,
    is_closed_form_number,
    normalize_answer,
    parse_number,
    parse_structure,
    unwrap_text,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
NUMERIC_REL_TOL = 1e-6
NUMERIC_ABS_TOL = 1e-9

CompareFn = Callable[[str, str], bool]


@dataclass(frozen=True)
class GradeResult:
    """The verdict on one prediction and how it was reached.

    ``method`` names the check that decided: ``exact``, ``bool``, ``choice``, ``text``, ``numeric``,
    ``structure``, ``variables`` (different free variables), ``symbolic``, ``no_match`` (every check
    said no), ``timeout`` (the symbolic check ran out of time: counted as wrong), ``no_answer``
    (nothing to grade) or ``llm_judge`` (set by callers that consult the judge).
    """

    correct: bool
    extracted: str | None
    normalized_prediction: str
    normalized_gold: str
    method: str


# --------------------------------------------------------------------------------------------
# Symbolic comparison in killable worker processes
# --------------------------------------------------------------------------------------------


def _float_tolerance_verdict(a: Any, b: Any) -> bool | None:
    """Decide closed-form numbers when either side holds a float literal; ``None`` when not applicable."""
    from sympy import Expr, Float

    if not (isinstance(a, Expr) and isinstance(b, Expr)) or a.free_symbols or b.free_symbols:
        return None
    if not (a.has(Float) or b.has(Float)):
        return None
    try:
        value_a, value_b = complex(a.evalf(30)), complex(b.evalf(30))
    except (TypeError, ValueError):
        return None
    return cmath.isclose(value_a, value_b, rel_tol=NUMERIC_REL_TOL, abs_tol=NUMERIC_ABS_TOL)


def symbolic_equal(prediction: str, gold: str) -> bool:
    """math-verify equivalence of two normalised LaTeX answers (runs inside a worker process).

    math-verify's own ``signal.alarm`` timeouts are off (they only work on a main thread); the
    :class:`SymbolicChecker` that calls this enforces the limit by killing the process.
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    gold_parsed = parse(f"${gold}$", extraction_config=configs, parsing_timeout=None)
    prediction_parsed = parse(f"${prediction}$", extraction_config=configs, parsing_timeout=None)
    if not gold_parsed or not prediction_parsed:
        return False
    verdict = _float_tolerance_verdict(gold_parsed[0], prediction_parsed[0])
    if verdict is not None:
        return verdict
    return bool(verify(gold_parsed, prediction_parsed, timeout_seconds=None))


# The worker is a plain subprocess, not a multiprocessing "spawn" child: spawn re-imports the
# caller's __main__, which breaks scripts without an ``if __name__ == "__main__"`` guard.
_WORKER_BOOTSTRAP = (
    "import sys\n"
    "from multiprocessing.connection import Connection\n"
    "requests = Connection(int(sys.argv[1]), writable=False)\n"
    "replies = Connection(int(sys.argv[2]), readable=False)\n"
    "sys.path[:0] = requests.recv()\n"
    "from models.answers.checking import serve_worker\n"
    "serve_worker(requests, replies)\n"
)


def serve_worker(requests: Connection, replies: Connection) -> None:
    """Worker-process loop: receive the compare function, then answer ``(prediction, gold)`` requests
    with ``(ok, result_or_error)`` until the parent closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    compare_fn: CompareFn = requests.recv()
    import math_verify  # noqa: F401  - pay the import once, before the first timed request

    replies.send(("ready", None))
    while True:
        try:
            prediction, gold = requests.recv()
        except (EOFError, OSError):
            return
        try:
            replies.send((True, bool(compare_fn(prediction, gold))))
        except Exception as err:  # a parse failure of one answer must not end the worker
            replies.send((False, f"{type(err).__name__}: {err}"))


class _Worker:
    """One lazily started worker process; killed and restarted after a timeout or crash."""

    def __init__(self, compare_fn: CompareFn, start_timeout_s: float) -> None:
        self._compare_fn = compare_fn
        self._start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._requests: Connection | None = None
        self._replies: Connection | None = None

    def _start(self) -> None:
        from multiprocessing.connection import Connection

        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_BOOTSTRAP, str(request_read), str(reply_write)],
                pass_fds=(request_read, reply_write), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            )
        finally:
            os.close(request_read)
            os.close(reply_write)
        self._requests = Connection(request_write, readable=False)
        self._replies = Connection(reply_read, writable=False)
        self._requests.send(list(sys.path))
        self._requests.send(self._compare_fn)
        if not self._replies.poll(self._start_timeout_s):
            self.stop()
            raise RuntimeError(f"symbolic answer-check worker did not start within {self._start_timeout_s:.0f} s")
        try:
            self._replies.recv()
        except EOFError as err:
            self.stop()
            raise RuntimeError("symbolic answer-check worker exited during start-up (see its stderr)") from err

    def compare(self, prediction: str, gold: str, timeout_s: float) -> tuple[bool | None, float]:
        """``(verdict, seconds spent checking)``; the verdict is ``None`` when it did not come in ``timeout_s``.

        A (re)start of the process happens before the clock starts: it is not the answer's fault.
        """
        if self._process is None or self._process.poll() is not None:
            self.stop()
            self._start()
        assert self._requests is not None and self._replies is not None
        try:
            self._requests.send((prediction, gold))
        except OSError:  # the worker died since the liveness check: start a fresh one, once
            self.stop()
            self._start()
            assert self._requests is not None and self._replies is not None
            self._requests.send((prediction, gold))
        started = time.monotonic()
        if not self._replies.poll(max(timeout_s, 0.0)):
            logger.warning("symbolic check timed out after %.1f s: %r vs %r", timeout_s, prediction[:80], gold[:80])
            self.stop()
            return None, time.monotonic() - started
        try:
            ok, value = self._replies.recv()
        except EOFError:
            logger.warning("symbolic worker died comparing %r vs %r; counting as not equal", prediction[:80], gold[:80])
            self.stop()
            return False, time.monotonic() - started
        elapsed = time.monotonic() - started
        if not ok:
            logger.debug("symbolic check failed (%s): %r vs %r", value, prediction[:80], gold[:80])
            return False, elapsed
        return bool(value), elapsed

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
        for conn in (self._requests, self._replies):
            if conn is not None:
                conn.close()
        self._process, self._requests, self._replies = None, None, None


class SymbolicChecker:
    """A pool of worker processes for symbolic comparisons, safe to share between threads.

    A Python thread cannot be stopped, and sympy can spend minutes (or one uninterruptible C call)
    on an expression such as ``10^{10^{10}}``, so each comparison runs in a process that is killed
    when it overruns; the next comparison starts a fresh one. ``timeout_s`` covers the comparison
    itself, not the one-off worker start (bounded by ``start_timeout_s``) or waiting for a free worker,
    so callers can share a pool smaller than their concurrency without answers timing out in the queue
    (size it with :func:`grading_workers_for`).
    """

    def __init__(
        self, compare_fn: CompareFn = symbolic_equal, num_workers: int = 1, start_timeout_s: float = 120.0
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers = [_Worker(compare_fn, start_timeout_s) for _ in range(num_workers)]
        for worker in self._workers:
            self._idle.put(worker)

    @property
    def num_workers(self) -> int:
        return len(self._workers)

    def check(self, prediction: str, gold: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[bool | None, float]:
        """``(verdict or None on timeout, seconds of checking)``; waiting for a free worker is not counted."""
        worker = self._idle.get()
        try:
            return worker.compare(prediction, gold, timeout_s)
        finally:
            self._idle.put(worker)

    def compare(self, prediction: str, gold: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool | None:
        """Symbolic verdict, or ``None`` on timeout."""
        return self.check(prediction, gold, timeout_s)[0]

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()

    def __enter__(self) -> SymbolicChecker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_default_checker: SymbolicChecker | None = None
_default_lock = threading.Lock()


def grading_workers_for(concurrency: int) -> int:
    """Worker processes for ``concurrency`` grading threads: one each, but no more than the CPUs can run
    (more processes than cores only make every check slower)."""
    return max(1, min(concurrency, os.cpu_count() or 1))


def default_checker() -> SymbolicChecker:
    """The process-wide one-worker checker used when callers pass none (closed at exit)."""
    global _default_checker
    with _default_lock:
        if _default_checker is None:
            _default_checker = SymbolicChecker()
            atexit.register(_default_checker.close)
        return _default_checker


# --------------------------------------------------------------------------------------------
# Cheap checks on normalised strings
# --------------------------------------------------------------------------------------------

_BOOL_WORDS = {"yes": True, "true": True, "no": False, "false": False}
_WORDS = re.compile(r"[A-Za-z][A-Za-z '.,-]*[A-Za-z.]")


def _numbers_equal(a: tuple[Fraction, bool], b: tuple[Fraction, bool]) -> bool:
    if a[0] == b[0]:
        return True
    if not (a[1] or b[1]):
        return False  # two exact numbers: no tolerance, so 1000000 ≠ 1000001
    # math.isclose in exact arithmetic: floats would overflow on 1e300-sized fractions.
    tolerance = max(Fraction(str(NUMERIC_REL_TOL)) * max(abs(a[0]), abs(b[0])), Fraction(str(NUMERIC_ABS_TOL)))
    return abs(a[0] - b[0]) <= tolerance


# --------------------------------------------------------------------------------------------
# The comparison cascade
# --------------------------------------------------------------------------------------------


class _Comparison:
    """One call's checking budget and checker, so the items of a structure spend one budget in total."""

    def __init__(self, budget_s: float, checker: SymbolicChecker | None) -> None:
        self.budget_s = budget_s
        self.checker = checker

    def compare(self, prediction: str, gold: str) -> tuple[bool, str]:
        """``(equal, method)`` for two normalised answers."""
        if prediction == gold:
            return True, "exact"
        if not prediction or not gold:
            return False, "no_match"
        verdict = self._compare_words(prediction, gold)
        if verdict is not None:
            return verdict
        number_prediction, number_gold = parse_number(prediction), parse_number(gold)
        if number_prediction is not None and number_gold is not None:
            return _numbers_equal(number_prediction, number_gold), "numeric"
        structure_prediction, structure_gold = parse_structure(prediction), parse_structure(gold)
        if structure_prediction is not None and structure_gold is not None:
            return self._compare_structures(structure_prediction, structure_gold)
        if (structure_prediction is not None and is_closed_form_number(gold)) or (
            structure_gold is not None and is_closed_form_number(prediction)
        ):
            return False, "structure"  # a tuple, interval, set or matrix is never a number
        letters_prediction, letters_gold = free_letters(prediction), free_letters(gold)
        if letters_prediction is not None and letters_gold is not None and letters_prediction != letters_gold:
            return False, "variables"
        return self._symbolic(prediction, gold)

    def _compare_words(self, prediction: str, gold: str) -> tuple[bool, str] | None:
        """Booleans, choice letters and text answers; ``None`` when neither side is one."""
        unwrapped_prediction, unwrapped_gold = unwrap_text(prediction), unwrap_text(gold)
        bool_prediction = _BOOL_WORDS.get(unwrapped_prediction.lower())
        bool_gold = _BOOL_WORDS.get(unwrapped_gold.lower())
        if bool_prediction is not None and bool_gold is not None:
            return bool_prediction == bool_gold, "bool"
        # A choice on either side ("(B)", "B)", "\text{B}") makes a bare letter on the other a choice too.
        if choice_letter(unwrapped_gold, allow_bare=unwrapped_gold != gold) or choice_letter(
            unwrapped_prediction, allow_bare=unwrapped_prediction != prediction
        ):
            gold_letter = choice_letter(unwrapped_gold, allow_bare=True)
            prediction_letter = choice_letter(unwrapped_prediction, allow_bare=True)
            if gold_letter is not None and prediction_letter is not None:
                return prediction_letter == gold_letter, "choice"
        was_wrapped = (unwrapped_prediction, unwrapped_gold) != (prediction, gold)
        if not was_wrapped and not (_WORDS.fullmatch(prediction) and _WORDS.fullmatch(gold)):
            return None
        if _WORDS.fullmatch(unwrapped_prediction) or _WORDS.fullmatch(unwrapped_gold):
            return _squash(unwrapped_prediction) == _squash(unwrapped_gold), "text"
        # "\text{5}" vs "5": compare what the wrapper held.
        return self.compare(normalize_answer(unwrapped_prediction), normalize_answer(unwrapped_gold))

    def _compare_structures(self, prediction: AnswerStructure, gold: AnswerStructure) -> tuple[bool, str]:
        if (prediction.kind, prediction.shape, len(prediction.items)) != (gold.kind, gold.shape, len(gold.items)):
            return False, "structure"
        methods: set[str] = set()
        if prediction.kind in ("ordered", "matrix"):
            for item_prediction, item_gold in zip(prediction.items, gold.items, strict=True):
                equal, method = self.compare(normalize_answer(item_prediction), normalize_answer(item_gold))
                if not equal:
                    return False, "timeout" if method == "timeout" else "structure"
            return True, "structure"
        unmatched = [normalize_answer(item) for item in gold.items]
        for item_prediction in prediction.items:
            normalized = normalize_answer(item_prediction)
            for index, item_gold in enumerate(unmatched):
                equal, method = self.compare(normalized, item_gold)
                methods.add(method)
                if equal:
                    del unmatched[index]
                    break
            else:
                return False, "timeout" if "timeout" in methods else "structure"
        return True, "structure"

    def _symbolic(self, prediction: str, gold: str) -> tuple[bool, str]:
        if self.budget_s <= 0:
            return False, "timeout"
        checker = self.checker or default_checker()
        verdict, spent_s = checker.check(prediction, gold, self.budget_s)
        self.budget_s -= spent_s
        if verdict is None:
            return False, "timeout"
        return verdict, "symbolic" if verdict else "no_match"


def _squash(text: str) -> str:
    return re.sub(r"[\s.]", "", text).lower()


def _compare_raw(
    prediction: str | None, gold: str | None, timeout_s: float, checker: SymbolicChecker | None
) -> tuple[bool, str, str, str]:
    normalized_prediction, normalized_gold = normalize_answer(prediction), normalize_answer(gold)
    if prediction is None or gold is None:
        if prediction is None and gold is None:
            logger.warning("comparing two missing answers; counting them as equal (spec §10.4)")
        return prediction is None and gold is None, "no_answer", normalized_prediction, normalized_gold
    comparison = _Comparison(timeout_s, checker)
    try:
        equal, method = comparison.compare(normalized_prediction, normalized_gold)
    except RecursionError:  # structures nested hundreds deep: not a real answer
        logger.warning("answers nested too deeply to compare: %r vs %r", prediction[:80], gold[:80])
        equal, method = False, "no_match"
    return equal, method, normalized_prediction, normalized_gold


def is_equivalent(
    prediction: str | None,
    gold: str | None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    checker: SymbolicChecker | None = None,
) -> bool:
    """Are two answers (box contents, not whole solutions) mathematically the same?

    ``timeout_s`` bounds the time spent in symbolic checks (a timeout counts as not equal). Both ``None`` →
    ``True`` with a warning and one ``None`` → ``False``, as in the reference (§10.4).
    """
    return _compare_raw(prediction, gold, timeout_s, checker)[0]


def grade(
    prediction_text: str | None,
    gold_answer: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    require_boxed: bool = False,
    checker: SymbolicChecker | None = None,
) -> GradeResult:
    """Grade a solution (or a bare answer) against a gold answer.

    The answer is the last ``\\boxed{}`` of ``prediction_text``; without one, the stripped text
    itself, unless ``require_boxed`` (the reward's format gate, §10.5) makes that ``no_answer``.
    """
    extracted = extract_boxed(prediction_text)
    if extracted is None and not require_boxed and prediction_text and prediction_text.strip():
        extracted = prediction_text.strip()
    if extracted is None:
        return GradeResult(False, None, "", normalize_answer(gold_answer), "no_answer")
    correct, method, normalized_prediction, normalized_gold = _compare_raw(extracted, gold_answer, timeout_s, checker)
    return GradeResult(correct, extracted, normalized_prediction, normalized_gold, method)
