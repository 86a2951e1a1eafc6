"""The retriever client treats a truncated 2xx body as transient: retried with backoff, then named."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.responses import Response

from models.serving.retriever_client import RetrieverClient, RetrieverServiceError
from tests.local_server import ThreadedAppServer

GOOD = '{"results": [["text a"], ["a"], [1.5]], "doc_ids": ["a"], "scores": [1.5]}'


def _truncating_app(bad_replies: int) -> tuple[FastAPI, list[int]]:
    """Answers /search with a 200 cut half-way for the first ``bad_replies`` requests."""
    app, seen = FastAPI(), []

    @app.get("/search")
    def search() -> Response:
        seen.append(1)
        body = GOOD if len(seen) > bad_replies else GOOD[: len(GOOD) // 2]
        return Response(body, status_code=200, media_type="application/json")

    return app, seen


def test_truncated_bodies_are_retried_then_reported_with_their_first_bytes() -> None:
    app, seen = _truncating_app(bad_replies=2)
    with ThreadedAppServer(app) as server:
        result = RetrieverClient(server.url, max_retries=3, initial_backoff_s=0.01).search("q", k=1)
    assert result.doc_ids == ["a"] and len(seen) == 3
    app, seen = _truncating_app(bad_replies=100)
    with ThreadedAppServer(app) as server, pytest.raises(RetrieverServiceError) as caught:
        RetrieverClient(server.url, max_retries=2, initial_backoff_s=0.01).search("q", k=1)
    assert len(seen) == 3 and caught.value.attempts == 3
    assert "malformed 2xx body" in str(caught.value) and "'{\"results\"" in str(caught.value)
