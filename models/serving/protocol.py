"""Wire models shared by the retriever servers and :mod:`models.serving.retriever_client`.

``GET /search?query=&k=`` answers the reference shape ``{"results": [texts, doc_ids, scores]}``
(three parallel lists in rank order) so existing clients keep working, and adds the same lists
under names. ``POST /search`` takes a batch and answers one named result per query.

Example batch request and response::

    {"queries": ["pigeonhole principle"], "k": 2}
    {"results": [{"doc_ids": ["C_3", "C_9"], "scores": [7.1, 2.0], "texts": ["...", "..."]}]}

Every refusal (401, 413, 422, 503) has FastAPI's validation shape, :class:`ProblemResponse`::

    {"detail": [{"loc": ["body", "queries", 1], "msg": "queries[1] is empty; send the query text", "type": "value_error"}]}
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class QueryResult(BaseModel):
    """One query's ranking, best first; ``texts`` is empty when the request set ``include_texts`` false."""

    model_config = ConfigDict(extra="forbid")
    doc_ids: list[str]
    scores: list[float]
    texts: list[str] = Field(default_factory=list)


class LegacySearchResponse(BaseModel):
    """``GET /search``: the reference's positional ``results`` plus named copies."""

    results: tuple[list[str], list[str], list[float]]
    doc_ids: list[str]
    scores: list[float]


def _integral(value: object) -> object:
    """``3.0`` is the integer 3 in JSON (JSON Schema's ``integer`` accepts it); ``3.5``, ``"3"`` and ``true`` stay
    refused by strict validation."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


JsonInteger = Annotated[int, BeforeValidator(_integral)]


class BatchSearchRequest(BaseModel):
    """``POST /search`` body. ``excluded_ids`` (one list per query, or one list for all) are never returned.

    Strict types: ``k`` must be a JSON integer (``3`` or ``3.0``; not ``"3"``, ``3.5`` or ``true``),
    ``include_texts`` a boolean.
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    queries: list[str] = Field(min_length=1)
    k: JsonInteger = 10
    include_texts: bool = True
    excluded_ids: list[list[str]] | None = None


class BatchSearchResponse(BaseModel):
    results: list[QueryResult]


class HealthResponse(BaseModel):
    status: str
    retriever: str
    corpus: str
    n_docs: int
    details: dict[str, object]
    instance: str = ""  # the id servers/up.sh gave this process ($SERVER_INSTANCE_ID), so it knows its own server


class ProblemDetail(BaseModel):
    """One reason a request was refused: where (``["body", "queries", 1]``), what, and a machine-readable kind."""

    loc: list[str | int]
    msg: str
    type: str


class ProblemResponse(BaseModel):
    """The body of every 401, 413, 422 and 503 (the shape FastAPI gives its own 422s)."""

    detail: list[ProblemDetail]
