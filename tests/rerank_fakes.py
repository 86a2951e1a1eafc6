"""A fake generator that plays an LLM reranker: its reply depends on the document in the prompt.

:class:`ScriptedRerankFake` is a :class:`tests.fakes.FakeGeneratorServer` whose replies come from
``script(document)``, the document read back from a request: a chat request with the
``prompts/rerank_relevance.txt`` layout (``--rerank_style ours``) or a plain completion with one of the
``prompts/rerank_published_*.txt`` layouts (``--rerank_style published``). A script that returns
``None`` makes that request fail with HTTP 500. Requests that carry no document (a health probe) get
``"OK"``.

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
# (start, end) around the document in the published-style prompts: the StackExchange markers, then the
# labelled layouts of the split-specific prompts, which all close with "Rate the ...".
PUBLISHED_LAYOUTS = (("<start_document>\n", "\n<end_document>"), ("\nDocument:\n", "\n\nRate the "),
                     ("\nPassage:\n", "\n\nRate the "))  # fmt: skip


def document_of(prompt: str) -> str | None:
    """The document text of an ours-style (chat) rerank prompt, or ``None`` for any other request."""
    if DOCUMENT_START not in prompt:
        return None
    return prompt.split(DOCUMENT_START, 1)[1].rsplit(DOCUMENT_END, 1)[0]


def published_document_of(prompt: str) -> str | None:
    """The document text of a published-style (completion) rerank prompt, or ``None``."""
    for start, end in PUBLISHED_LAYOUTS:
        if start in prompt and end in prompt:
            return prompt.split(start, 1)[1].rsplit(end, 1)[0]
    return None


def request_document(body: dict[str, Any]) -> str | None:
    """The document of a chat or completion request body, or ``None``."""
    if "messages" in body:
        return document_of(body["messages"][-1]["content"])
    return published_document_of(str(body.get("prompt", "")))


class ScriptedRerankFake(FakeGeneratorServer):
    """Fake generator replying ``script(document)`` to each rerank request (``None``: HTTP 500)."""

    def __init__(self, script: Callable[[str], str | None]) -> None:
        super().__init__("ok")
        self.script = script

    def rerank_requests(self) -> list[dict[str, Any]]:
        """Bodies of the requests that carried a document (the probe excluded)."""
        return [r.body for r in self.requests if request_document(r.body) is not None]

    async def _respond(self, path: str, body: dict[str, Any], attempt: int, request: Any) -> Any:
        document = request_document(body)
        reply = "OK" if document is None else self.script(document)
        if reply is None:
            return JSONResponse({"error": {"message": "scripted failure", "code": 500}}, status_code=500)
        if "messages" not in body:
            return {
                "id": "scripted-1",
                "object": "text_completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "text": reply, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        return {
            "id": "scripted-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
