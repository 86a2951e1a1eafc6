"""The retriever server: one FastAPI app for BM25 and dense retrievers alike.

``create_app(retriever, limits)`` builds the app; nothing is loaded at import time. Endpoints:
``GET|HEAD /health``, ``GET /search?query=&k=`` (reference-compatible), ``POST /search`` (batch).

Bad input never reaches a retriever and never gets a 5xx: 422 for a missing, empty, ill-typed
(strictly: ``"3"`` is not an integer in a JSON body), non-finite (``NaN``, ``Infinity``, ``1e309``) or
invalid-Unicode field and an out-of-range ``k``; 413 for an oversized body, query, batch or a batch
whose total length passes the per-request budget; 405 with ``Allow``; 401 without the API key when one
is set. Every refusal has FastAPI's list shape (:class:`models.serving.protocol.ProblemResponse`) and never
echoes the input; the OpenAPI document declares each limit (``maxLength``, ``maxItems``, ``minimum``...) and
every status an operation answers.

Starvation: ``/health`` is answered on the event loop; a search is checked there, then searched *and
serialised* on a worker thread, so a large batch never holds the loop. At most
``limits.max_pending_requests`` searches are admitted at once (running, or queued for the encoder); one
more gets 503 with ``Retry-After`` at once instead of waiting in an unbounded queue. A dense retriever
takes its encoder one encoder batch at a time in arrival order (:mod:`models.retrieval.retrievers`), so a
one-query search waits for one encoder batch of a large request, not for all of it.
``/docs`` and ``/openapi.json`` exist only when ``limits.enable_docs``.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, WithJsonSchema, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.retrieval.retrievers import Hit, Retriever
from models.serving.protocol import (
    BatchSearchRequest,
    BatchSearchResponse,
    HealthResponse,
    JsonInteger,
    LegacySearchResponse,
    ProblemResponse,
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
    # Searches admitted at once, running or queued for the encoder; one more is answered 503 + Retry-After.
    max_pending_requests: int = 64

    def __post_init__(self) -> None:
        small = [name for name in ("max_k", "max_query_chars", "max_batch", "max_request_chars", "max_body_bytes",
                                   "max_pending_requests") if getattr(self, name) < 1]  # fmt: skip
        if small:
            raise ValueError(f"ServerLimits: {', '.join(small)} must be >= 1")


_MESSAGE_CHARS = 200  # error messages are bounded; inputs are never echoed
BUSY_RETRY_AFTER_S = 1  # what a 503 for a full queue tells the client to wait


def _problem(
    status: int, loc: list[str | int], message: str, kind: str = "value_error", headers: dict[str, str] | None = None
) -> JSONResponse:
    """A refusal in FastAPI's validation shape: ``{"detail": [{"loc", "msg", "type"}]}``."""
    body = {"detail": [{"loc": loc, "msg": message[:_MESSAGE_CHARS], "type": kind}]}
    return JSONResponse(body, status_code=status, headers=headers)


class RequestProblem(Exception):
    """Raised by an endpoint for a request it refuses; rendered by :func:`_problem`."""

    def __init__(
        self, status: int, loc: list[str | int], message: str, kind: str = "value_error",
        headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.loc, self.message, self.kind, self.headers = status, loc, message, kind, headers


# A query needs one character outside this set. It is Python's str.isspace() and JSON Schema's (ECMA-262) \s
# together, spelled out, so the pattern the OpenAPI document publishes and the server's own check are one
# regular expression in both dialects (the two \s differ on \x1c-\x1f, \x85 and \ufeff).
NOT_BLANK = r"[^\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
_NOT_BLANK = re.compile(NOT_BLANK)


def _text_schema(limits: ServerLimits) -> dict[str, Any]:
    """What the server accepts as a query: some non-blank text within the length limit."""
    return {"type": "string", "minLength": 1, "maxLength": limits.max_query_chars, "pattern": NOT_BLANK}


def _request_model(limits: ServerLimits) -> type[BatchSearchRequest]:
    """:class:`BatchSearchRequest` whose JSON schema states this server's limits.

    Only the published schema changes: the endpoint checks the limits itself, so a query past the length
    limit gets 413 and an empty one a message saying so, not pydantic's generic wording.
    """
    id_lists = {"type": "array", "minItems": 1,  # [] would be no list for any query: refused, like a wrong count
                "items": {"type": "array", "items": {"type": "string", "maxLength": limits.max_query_chars}}}  # fmt: skip
    return create_model(
        "BatchSearchRequest",
        __base__=BatchSearchRequest,
        __doc__=BatchSearchRequest.__doc__,
        queries=(
            list[Annotated[str, WithJsonSchema(_text_schema(limits))]],
            Field(min_length=1, json_schema_extra={"maxItems": limits.max_batch}),
        ),
        k=(JsonInteger, Field(10, json_schema_extra={"minimum": 1, "maximum": limits.max_k})),
        excluded_ids=(Annotated[list[list[str]], WithJsonSchema(id_lists)] | None, None),
    )


def _documented(statuses: tuple[int, ...], limits: ServerLimits) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the refusals an operation can answer (422 FastAPI documents itself)."""
    why = {
        401: "missing or wrong API key",
        413: "a query, batch, body or the request's total length is past its limit",
        503: f"{limits.max_pending_requests} searches are running or queued; retry after the Retry-After seconds",
    }
    codes = [code for code in statuses if code != 401 or limits.api_key]
    documented: dict[int | str, dict[str, Any]] = {code: {"model": ProblemResponse, "description": why[code]} for code in codes}
    if 503 in documented:
        documented[503]["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
    return documented


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
        return _problem(err.status, err.loc, err.message, err.kind, err.headers)

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

    def check_text(text: str, loc: list[str | int]) -> None:
        """Bounded length (413) and valid Unicode (422); ``loc`` names the field in messages."""
        where = "".join(f"[{part}]" if isinstance(part, int) else part for part in loc[1:])  # e.g. queries[1]
        if len(text) > limits.max_query_chars:
            raise RequestProblem(413, loc, f"{where} has {len(text)} characters; the limit is {limits.max_query_chars}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestProblem(422, loc, f"{where} is not valid Unicode (a lone surrogate)") from None

    def check_query(query: str, loc: list[str | int]) -> None:
        check_text(query, loc)
        if not _NOT_BLANK.search(query):
            where = "".join(f"[{part}]" if isinstance(part, int) else part for part in loc[1:])
            raise RequestProblem(422, loc, f"{where} is empty; send the query text")

    def texts_of(hits: list[Hit]) -> list[str]:
        return [corpus.text_of(doc_id) for doc_id, _ in hits]

    # Searches admitted now (running or queued); only the event loop touches it, so it needs no lock.
    admitted = 0
    # One worker thread per admitted search: a queued search waits for the encoder, never for a thread.
    workers = anyio.CapacityLimiter(limits.max_pending_requests)

    async def off_the_loop(work: Callable[[], BaseModel]) -> Response:
        """Run ``work`` (search and build the response) and serialise it on a worker thread, or refuse with
        503 when ``max_pending_requests`` searches are already admitted."""
        nonlocal admitted
        if admitted >= limits.max_pending_requests:
            raise RequestProblem(
                503, ["server"], f"{limits.max_pending_requests} searches are already running or queued; "
                f"retry in {BUSY_RETRY_AFTER_S} s", "busy", {"Retry-After": str(BUSY_RETRY_AFTER_S)},
            )  # fmt: skip
        admitted += 1
        try:
            # Not abandoned on cancel: a client that hangs up keeps its slot until the thread is done.
            body = await anyio.to_thread.run_sync(lambda: work().model_dump_json().encode(), limiter=workers)
        finally:
            admitted -= 1
        return Response(body, media_type="application/json")

    health_body = HealthResponse(
        status="ok", retriever=retriever.name, corpus=corpus.name, n_docs=len(corpus),
        details=_public_details(retriever.describe()), instance=os.environ.get("SERVER_INSTANCE_ID", ""),
    )  # fmt: skip

    async def health() -> HealthResponse:
        return health_body

    for method in ("GET", "HEAD"):  # two routes, so each has its own OpenAPI operation id
        app.add_api_route("/health", health, methods=[method], response_model=HealthResponse,
                          operation_id=f"health_{method.lower()}", responses=_documented((401,), limits))  # fmt: skip

    text = _text_schema(limits)
    request_model = _request_model(limits)

    @app.get("/search", response_model=LegacySearchResponse, responses=_documented((401, 413, 503), limits))
    async def search_one(
        query: str = Query(..., description="query text", json_schema_extra=text),
        k: int = Query(10, json_schema_extra={"minimum": 1, "maximum": limits.max_k}),
    ) -> Response:
        check_k(k, ["query", "k"])
        check_query(query, ["query", "query"])

        def work() -> LegacySearchResponse:
            hits = retriever.search_batch([query], k)[0]
            ids = [doc_id for doc_id, _ in hits]
            scores = [score for _, score in hits]
            return LegacySearchResponse(results=(texts_of(hits), ids, scores), doc_ids=ids, scores=scores)

        return await off_the_loop(work)

    async def search_batch(request: BatchSearchRequest) -> Response:
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
                check_text(doc_id, ["body", "excluded_ids", i])
        excluded = request.excluded_ids
        if excluded is not None and len(excluded) != len(request.queries):
            if len(excluded) != 1:
                raise RequestProblem(
                    422, ["body", "excluded_ids"],
                    f"excluded_ids has {len(excluded)} lists for {len(request.queries)} queries; send one per query",
                )  # fmt: skip
            excluded = excluded * len(request.queries)

        def work() -> BatchSearchResponse:
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

        return await off_the_loop(work)

    # The per-server request model (same validation, its schema states the limits); set as an object, since
    # this module's postponed annotations would leave FastAPI a name it cannot resolve.
    search_batch.__annotations__["request"] = request_model
    documented = _documented((401, 413, 503), limits)
    app.post("/search", response_model=BatchSearchResponse, responses=documented)(search_batch)
    return app
