"""A fake generator that plays an LLM reranker: its reply depends on the document in the prompt.

:class:`ScriptedRerankFake` is a :class:`tests.fakes.FakeGeneratorServer` whose chat replies come from
``script(document)``, the document read back from a ``prompts/rerank_relevance.txt`` request; a script
that returns ``None`` makes that request fail with HTTP 500. Requests that carry no document (a health
probe) get ``"OK"``.

Usage::

    with ScriptedRerankFake(lambda doc: "Relevance score: 5" if "Pythagorean" in doc else "no") as server:
        client = build_llm_client(LLMClientConfig("openai-compatible", "m", base_url=server.base_url))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse

from tests.fakes import FakeGeneratorServer

DOCUMENT_START = "Document:\n"
DOCUMENT_END = "\n\nHow relevant"


def document_of(prompt: str) -> str | None:
    """The document text of a rerank prompt, or ``None`` for any other request."""
    if DOCUMENT_START not in prompt:
        return None
    return prompt.split(DOCUMENT_START, 1)[1].rsplit(DOCUMENT_END, 1)[0]


class ScriptedRerankFake(FakeGeneratorServer):
    """Fake generator replying ``script(document)`` to each rerank request (``None``: HTTP 500)."""

    def __init__(self, script: Callable[[str], str | None]) -> None:
        super().__init__("ok")
        self.script = script

    def rerank_requests(self) -> list[dict[str, Any]]:
        """Bodies of the requests that carried a document (the probe excluded)."""
        return [r.body for r in self.requests if document_of(r.body["messages"][-1]["content"]) is not None]

    async def _respond(self, path: str, body: dict[str, Any], attempt: int, request: Any) -> Any:
        document = document_of(body["messages"][-1]["content"])
        reply = "OK" if document is None else self.script(document)
        if reply is None:
            return JSONResponse({"error": {"message": "scripted failure", "code": 500}}, status_code=500)
        return {
            "id": "scripted-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
