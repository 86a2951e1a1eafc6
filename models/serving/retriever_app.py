"""The retriever server: one FastAPI app for BM25 and dense retrievers alike.

``create_app(retriever, limits)`` builds the app; nothing is loaded at import time. Endpoints:
``GET|HEAD /health``, ``GET /search?query=&k=`` (reference-compatible), ``POST /search`` (batch).

Bad input never reaches a retriever and never gets a 5xx: 422 for a missing, empty, ill-typed
(strictly: ``"3"`` is not an integer in a JSON body), non-finite (``NaN``, ``Infinity``, ``1e309``) or
invalid-Unicode field and an out-of-range ``k``; 413 for an oversized body, query, batch or a batch
whose total length passes the per-request budget; 405 with ``Allow``; 401 without the API key when one
is set. Every 422 has FastAPI's list shape and never echoes the input. ``/health`` is answered on the
event loop and searches in the thread pool, so health checks stay fast while a large batch runs.
``/docs`` and ``/openapi.json`` exist only when ``limits.enable_docs``.
"""

from __future__ import annotations

import hmac
import logging
import os
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.retrieval.retrievers import Hit, Retriever
from models.serving.protocol import (
    BatchSearchRequest,
    BatchSearchResponse,
    HealthResponse,
    LegacySearchResponse,
    QueryResult,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerLimits:
    """Request limits; generous for real use, tight enough that one request cannot exhaust memory."""

    max_k: int = 1000
    max_query_chars: int = 50_000
    max_batch: int = 256
    max_request_chars: int = 1_000_000  # all queries of one request together: bounds one request's work
    max_body_bytes: int = 4_000_000
    api_key: str | None = None  # when set, every request needs "Authorization: Bearer <key>"
    enable_docs: bool = False


_MESSAGE_CHARS = 200  # error messages are bounded; inputs are never echoed


def _problem(status: int, loc: list[str | int], message: str, kind: str = "value_error") -> JSONResponse:
    """A 4xx in FastAPI's validation shape: ``{"detail": [{"loc", "msg", "type"}]}``."""
    return JSONResponse({"detail": [{"loc": loc, "msg": message[:_MESSAGE_CHARS], "type": kind}]}, status_code=status)


class RequestProblem(Exception):
    """Raised by an endpoint for a request it refuses; rendered by :func:`_problem`."""

    def __init__(self, status: int, loc: list[str | int], message: str) -> None:
        super().__init__(message)
        self.status, self.loc, self.message = status, loc, message


def _public_details(details: dict[str, object]) -> dict[str, object]:
    """``describe()`` without filesystem paths: an absolute path becomes its last component."""

    def clean(value: object) -> object:
        if isinstance(value, str) and os.path.isabs(value):
            return os.path.basename(value.rstrip("/")) or value
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return {k: clean(v) for k, v in details.items()}


def create_app(retriever: Retriever, limits: ServerLimits | None = None) -> FastAPI:
    limits = limits or ServerLimits()
    docs = {} if limits.enable_docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title=f"RaDeR retriever server ({retriever.name})", **docs)
    corpus = retriever.corpus
    expected_auth = f"Bearer {limits.api_key}".encode() if limits.api_key else None

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        """Auth first, then the body size (declared, or counted while it streams in)."""
        if expected_auth is not None:
            given = request.headers.get("authorization", "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, expected_auth):
                return _problem(401, ["header", "authorization"], "missing or wrong API key (Authorization: Bearer ...)",
                                "unauthorized")  # fmt: skip
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limits.max_body_bytes):
            return _problem(413, ["body"], f"body larger than {limits.max_body_bytes} bytes", "too_large")
        if request.method == "POST":
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > limits.max_body_bytes:
                    return _problem(413, ["body"], f"body larger than {limits.max_body_bytes} bytes", "too_large")
            request._body = body  # read once; the endpoint parses the same bytes
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        detail = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))[:_MESSAGE_CHARS], "type": e.get("type", "")}
            for e in err.errors()[:20]
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(RequestProblem)
    async def refused(request: Request, err: RequestProblem) -> JSONResponse:
        return _problem(err.status, err.loc, err.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        headers = dict(err.headers or {})
        if err.status_code == 400:  # a body FastAPI could not parse (invalid UTF-8, bad JSON framing)
            return _problem(422, ["body"], f"the body is not valid JSON in UTF-8: {err.detail}", "json_invalid")
        if err.status_code == 405:
            path = request.url.path
            headers["Allow"] = "GET, HEAD" if path == "/health" else "GET, POST" if path == "/search" else "GET"
        return JSONResponse({"detail": str(err.detail)[:_MESSAGE_CHARS]}, status_code=err.status_code, headers=headers)

    def check_k(k: int, loc: list[str | int]) -> None:
        if not 1 <= k <= limits.max_k:
            raise RequestProblem(422, loc, f"k must be between 1 and {limits.max_k}, got {k}")

    def check_query(query: str, loc: list[str | int]) -> None:
        where = "".join(f"[{part}]" if isinstance(part, int) else part for part in loc[1:])  # e.g. queries[1]
        if not query.strip():
            raise RequestProblem(422, loc, f"{where} is empty; send the query text")
        if len(query) > limits.max_query_chars:
            raise RequestProblem(413, loc, f"{where} has {len(query)} characters; the limit is {limits.max_query_chars}")
        try:
            query.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestProblem(422, loc, f"{where} is not valid Unicode (a lone surrogate)") from None

    def texts_of(hits: list[Hit]) -> list[str]:
        return [corpus.text_of(doc_id) for doc_id, _ in hits]

    health_body = HealthResponse(
        status="ok", retriever=retriever.name, corpus=corpus.name, n_docs=len(corpus),
        details=_public_details(retriever.describe()), instance=os.environ.get("SERVER_INSTANCE_ID", ""),
    )  # fmt: skip

    @app.api_route("/health", methods=["GET", "HEAD"], response_model=HealthResponse)
    async def health() -> HealthResponse:
        return health_body

    @app.get("/search", response_model=LegacySearchResponse)
    def search_one(query: str = Query(..., description="query text"), k: int = Query(10)) -> LegacySearchResponse:
        check_k(k, ["query", "k"])
        check_query(query, ["query", "query"])
        hits = retriever.search_batch([query], k)[0]
        ids = [doc_id for doc_id, _ in hits]
        scores = [score for _, score in hits]
        return LegacySearchResponse(results=(texts_of(hits), ids, scores), doc_ids=ids, scores=scores)

    @app.post("/search", response_model=BatchSearchResponse)
    def search_batch(request: BatchSearchRequest) -> BatchSearchResponse:
        check_k(request.k, ["body", "k"])
        if len(request.queries) > limits.max_batch:
            raise RequestProblem(413, ["body", "queries"],
                                 f"queries has {len(request.queries)} entries; the limit is {limits.max_batch}")  # fmt: skip
        for i, query in enumerate(request.queries):
            check_query(query, ["body", "queries", i])
        total = sum(len(q) for q in request.queries)
        if total > limits.max_request_chars:
            raise RequestProblem(413, ["body", "queries"],
                                 f"the queries hold {total} characters; one request may hold {limits.max_request_chars}")  # fmt: skip
        for i, ids in enumerate(request.excluded_ids or ()):
            for doc_id in ids:
                check_query(doc_id or "x", ["body", "excluded_ids", i])  # valid Unicode, bounded length
        excluded = request.excluded_ids
        if excluded is not None and len(excluded) != len(request.queries):
            if len(excluded) != 1:
                raise RequestProblem(
                    422, ["body", "excluded_ids"],
                    f"excluded_ids has {len(excluded)} lists for {len(request.queries)} queries; send one per query",
                )  # fmt: skip
            excluded = excluded * len(request.queries)
        rankings = retriever.search_batch(request.queries, request.k, excluded)
        return BatchSearchResponse(
            results=[
                QueryResult(
                    doc_ids=[doc_id for doc_id, _ in hits],
                    scores=[score for _, score in hits],
                    texts=texts_of(hits) if request.include_texts else [],
                )
                for hits in rankings
            ]
        )

    return app
