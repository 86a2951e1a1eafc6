"""Client for the retriever servers (:mod:`models.serving.retriever_app`).

Timeouts on every request, bounded retries with capped exponential backoff on connection errors,
timeouts, 429 and 5xx (waiting at least the ``Retry-After`` a busy server sends with its 503), and a
:class:`RetrieverServiceError` naming the URL and the last status when retries are spent or the server
rejects the request (any other 4xx is not retried).

Usage::

    client = RetrieverClient("http://127.0.0.1:8012")
    result = client.search("pigeonhole principle", k=5)      # QueryResult(doc_ids, scores, texts)
    results = client.search_batch(["q1", "q2"], k=10)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import httpx

from models.serving.protocol import BatchSearchResponse, HealthResponse, QueryResult

logger = logging.getLogger(__name__)


class RetrieverServiceError(RuntimeError):
    """A retriever request failed for good; ``status_code`` is None for timeouts and connection errors."""

    def __init__(self, message: str, url: str, attempts: int, status_code: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.attempts = attempts
        self.status_code = status_code


class RetrieverClient:
    def __init__(
        self,
        base_url: str,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 15.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self._http = httpx.Client(timeout=timeout_s)

    def health(self) -> HealthResponse:
        return HealthResponse.model_validate(self._request("GET", "/health"))

    def search(self, query: str, k: int = 10) -> QueryResult:
        """One query through ``GET /search`` (the reference-compatible form)."""
        body = self._request("GET", "/search", params={"query": query, "k": k})
        texts, doc_ids, scores = body["results"]
        return QueryResult(doc_ids=doc_ids, scores=scores, texts=texts)

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        excluded_ids: Sequence[Sequence[str]] | None = None,
        include_texts: bool = True,
    ) -> list[QueryResult]:
        payload: dict[str, Any] = {"queries": list(queries), "k": k, "include_texts": include_texts}
        if excluded_ids is not None:
            payload["excluded_ids"] = [list(ids) for ids in excluded_ids]
        return BatchSearchResponse.model_validate(self._request("POST", "/search", json=payload)).results

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RetrieverClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = self.base_url + path
        delay = self.initial_backoff_s
        last: str = ""
        status: int | None = None
        for attempt in range(1, self.max_retries + 2):
            asked_s = 0.0  # what the server's Retry-After asks for
            try:
                response = self._http.request(method, url, **kwargs)
            except (httpx.TimeoutException, httpx.TransportError) as err:
                last, status = f"{type(err).__name__}: {err}", None
            else:
                asked_s = _retry_after_s(response)
                if response.is_success:
                    try:
                        return response.json()
                    except ValueError as err:  # a truncated or garbled 2xx body: transient, like a 5xx
                        last, status = f"malformed 2xx body ({err}): {response.text[:120]!r}", response.status_code
                else:
                    status = response.status_code
                    last = f"HTTP {status}: {response.text[:500]}"
                    if status < 500 and status != 429:
                        raise RetrieverServiceError(f"{method} {url} rejected: {last}", url, attempt, status)
            if attempt <= self.max_retries:
                wait_s = max(delay, min(asked_s, self.max_backoff_s))
                logger.warning(
                    "%s %s failed (%s); retry %d/%d in %.1fs", method, url, last, attempt, self.max_retries, wait_s
                )
                time.sleep(wait_s)
                delay = min(delay * 2, self.max_backoff_s)
        raise RetrieverServiceError(
            f"{method} {url} failed after {self.max_retries + 1} attempts; last error: {last}. "
            "Is the server up (servers/up.sh) and the URL right?",
            url, self.max_retries + 1, status,
        )


def _retry_after_s(response: httpx.Response) -> float:
    """Seconds from a ``Retry-After: N`` header (the retriever servers send N with a 503); 0 when absent or a date."""
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else 0.0
