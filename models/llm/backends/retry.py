"""Bounded retries with exponential backoff and a hard per-attempt deadline, for HTTP backends.

The reference client retried every exception forever (its backoff even fell back to 1 s after
120 s). Here a transient failure (timeout, connection error, HTTP 429 or 5xx, as decided by the
backend's ``classify`` function) is retried at most ``max_retries`` times, sleeping
``initial_backoff_s * 2**k`` capped at ``max_backoff_s``; anything else fails at once. Either way
the caller gets :class:`~models.llm.client.LLMServiceError` naming the URL, model, attempts and
last error.

Usage::

    result = await call_with_retries(send, policy=policy, classify=classify_openai_error,
                                     url=url, model=model, usage=client.usage)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from models.llm.client import LLMServiceError, UsageCounter

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How long one attempt may take and how often and how patiently to try again."""

    timeout_s: float
    max_retries: int
    initial_backoff_s: float
    max_backoff_s: float

    def backoff_s(self, retry_number: int) -> float:
        """Sleep before retry ``retry_number`` (1 for the first retry): doubling, capped."""
        return min(self.initial_backoff_s * 2 ** (retry_number - 1), self.max_backoff_s)


@dataclass(frozen=True)
class AttemptFailure:
    """A backend's verdict on one failed attempt."""

    transient: bool
    detail: str
    status_code: int | None = None


Classifier = Callable[[Exception], "AttemptFailure | None"]


async def call_with_retries(
    send: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    classify: Classifier,
    url: str,
    model: str,
    usage: UsageCounter,
) -> T:
    """Await ``send()`` until it succeeds, a failure is not transient, or retries run out.

    ``classify`` maps an exception to an :class:`AttemptFailure`, or to ``None`` to let it
    propagate unchanged (a programming error, not a service failure). Each attempt is also cut
    off after ``policy.timeout_s`` here, so no attempt can hang, whatever the transport does.
    """
    total = policy.max_retries + 1
    attempt = 0
    while True:
        attempt += 1
        cause: Exception
        try:
            async with asyncio.timeout(policy.timeout_s):
                return await send()
        except TimeoutError as err:
            cause = err
            failure = AttemptFailure(transient=True, detail=f"no response within timeout_s={policy.timeout_s}")
        except Exception as err:  # the backend's classifier decides what is a service error
            verdict = classify(err)
            if verdict is None:
                raise
            cause, failure = err, verdict
        if not failure.transient or attempt == total:
            hint = "" if not failure.transient else "; check that the server is up, or raise timeout_s/max_retries"
            raise LLMServiceError(
                f"LLM request to {url} (model {model!r}) failed after {attempt} attempt(s); "
                f"last error: {failure.detail}{hint}",
                url,
                model,
                attempt,
                failure.status_code,
            ) from cause
        delay_s = policy.backoff_s(attempt)
        usage.record_retry()
        logger.warning(
            "LLM request to %s (model %r) failed, attempt %d/%d: %s; retrying in %.2f s",
            url,
            model,
            attempt,
            total,
            failure.detail,
            delay_s,
        )
        await asyncio.sleep(delay_s)
