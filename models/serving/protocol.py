"""Wire models shared by the retriever servers and :mod:`models.serving.retriever_client`.

``GET /search?query=&k=`` answers the reference shape ``{"results": [texts, doc_ids, scores]}``
(three parallel lists in rank order) so existing clients keep working, and adds the same lists
under names. ``POST /search`` takes a batch and answers one named result per query.

Example batch request and response::

    {"queries": ["pigeonhole principle"], "k": 2}
    {"results": [{"doc_ids": ["C_3", "C_9"], "scores": [7.1, 2.0], "texts": ["...", "..."]}]}
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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


class BatchSearchRequest(BaseModel):
    """``POST /search`` body. ``excluded_ids`` (one list per query, or one list for all) are never returned.

    Strict types: ``k`` must be a JSON integer (not ``"3"``, ``3.0`` or ``true``), ``include_texts`` a boolean.
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    queries: list[str] = Field(min_length=1)
    k: int = 10
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
