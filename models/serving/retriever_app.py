"""The retriever server: one FastAPI app for BM25 and dense retrievers alike.

``create_app(retriever, limits)`` builds the app; nothing is loaded at import time. Endpoints:
``GET /health``, ``GET /search?query=&k=`` (reference-compatible), ``POST /search`` (batch).
Bad input is answered with a 4xx and a message naming the field: 422 for a missing, empty or
ill-typed field or an out-of-range ``k``, 413 for an oversized query or batch. Searches run in
FastAPI's thread pool, so a slow query does not block health checks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI, HTTPException, Query

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


def create_app(retriever: Retriever, limits: ServerLimits | None = None) -> FastAPI:
    limits = limits or ServerLimits()
    app = FastAPI(title=f"RaDeR retriever server ({retriever.name})")
    corpus = retriever.corpus

    def check_k(k: int) -> None:
        if not 1 <= k <= limits.max_k:
            raise HTTPException(422, f"k must be between 1 and {limits.max_k}, got {k}")

    def check_query(query: str, where: str) -> None:
        if not query.strip():
            raise HTTPException(422, f"{where} is empty; send the query text")
        if len(query) > limits.max_query_chars:
            raise HTTPException(
                413, f"{where} has {len(query)} characters; the limit is {limits.max_query_chars}"
            )

    def texts_of(hits: list[Hit]) -> list[str]:
        return [corpus.text_of(doc_id) for doc_id, _ in hits]

    @app.get("/health", response_model=HealthResponse)
    def health() -> HealthResponse:
        return HealthResponse(
            status="ok", retriever=retriever.name, corpus=corpus.name, n_docs=len(corpus), details=retriever.describe()
        )

    @app.get("/search", response_model=LegacySearchResponse)
    def search_one(query: str = Query(..., description="query text"), k: int = Query(10)) -> LegacySearchResponse:
        check_k(k)
        check_query(query, "query")
        hits = retriever.search_batch([query], k)[0]
        ids = [doc_id for doc_id, _ in hits]
        scores = [score for _, score in hits]
        return LegacySearchResponse(results=(texts_of(hits), ids, scores), doc_ids=ids, scores=scores)

    @app.post("/search", response_model=BatchSearchResponse)
    def search_batch(request: BatchSearchRequest) -> BatchSearchResponse:
        check_k(request.k)
        if len(request.queries) > limits.max_batch:
            raise HTTPException(413, f"queries has {len(request.queries)} entries; the limit is {limits.max_batch}")
        for i, query in enumerate(request.queries):
            check_query(query, f"queries[{i}]")
        excluded = request.excluded_ids
        if excluded is not None and len(excluded) != len(request.queries):
            if len(excluded) != 1:
                raise HTTPException(
                    422, f"excluded_ids has {len(excluded)} lists for {len(request.queries)} queries; send one per query"
                )
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
