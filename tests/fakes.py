"""Fake services for tests: an OpenAI-compatible generator server on 127.0.0.1 that misbehaves on purpose.

:class:`FakeGeneratorServer` answers every ``POST`` path (``/v1/chat/completions``,
``/v1/completions``, Azure's ``/openai/deployments/<name>/...``) according to its mode, records
each request it receives (path, query, headers, JSON body) and the largest number of requests it
held at once.

Modes:

* ``ok``: a valid response with ``n`` choices and usage, after ``delay_s``;
* ``stall``: never answers (sleeps until the client hangs up, at most ``stall_s``);
* ``error500`` / ``rate_limit``: always HTTP 500 / 429;
* ``flaky``: HTTP 500 for the first ``flaky_failures`` requests, then as ``ok``;
* ``bad_request``: always HTTP 400 with an OpenAI-style error message.

Usage::

    with FakeGeneratorServer("flaky") as server:
        client = build_llm_client(LLMClientConfig("openai-compatible", "m", base_url=server.base_url))
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

FakeMode = Literal["ok", "stall", "error500", "rate_limit", "flaky", "bad_request", "truncated_flaky", "truncated", "chaos"]
BAD_REQUEST_MESSAGE = "This model's maximum context length is 8 tokens (fake)."


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake server received it."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "fake_error", "code": status}}, status_code=status)


def _reply(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """A valid chat or text completion whose ``i``-th text names ``i`` and echoes the input."""
    n = int(body.get("n", 1))
    if path.endswith("chat/completions"):
        echo = body["messages"][-1]["content"]
        choices = [
            {"index": i, "message": {"role": "assistant", "content": f"reply {i} to: {echo}"}, "finish_reason": "stop"}
            for i in range(n)
        ]
        kind = "chat.completion"
    else:
        echo = body["prompt"]
        choices = [{"index": i, "text": f"continuation {i} of: {echo}", "finish_reason": "length"} for i in range(n)]
        kind = "text_completion"
    prompt_tokens = len(str(echo).split())
    return {
        "id": "fake-1",
        "object": kind,
        "created": 0,
        "model": body.get("model", "fake-model"),
        # The API lists choices in any order; reversed here so clients must sort by index.
        "choices": choices[::-1],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 5 * n, "total_tokens": prompt_tokens + 5 * n},
    }


class FakeGeneratorServer:
    """A uvicorn server in a daemon thread, bound to a free port on 127.0.0.1."""

    def __init__(
        self, mode: FakeMode = "ok", *, delay_s: float = 0.0, stall_s: float = 30.0, flaky_failures: int = 2
    ) -> None:
        self.mode = mode
        self.delay_s = delay_s
        self.stall_s = stall_s
        self.flaky_failures = flaky_failures
        self.requests: list[RecordedRequest] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(self._build_app(), log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def attempts(self) -> int:
        """Requests received so far (every retry is one more)."""
        with self._lock:
            return len(self.requests)

    def start(self) -> FakeGeneratorServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"FakeGeneratorServer on port {self.port} did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> FakeGeneratorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _build_app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/{path:path}")
        async def handle(path: str, request: Request) -> Any:
            body = await request.json()
            with self._lock:
                self.requests.append(
                    RecordedRequest("/" + path, dict(request.query_params), dict(request.headers), body)
                )
                attempt = len(self.requests)
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
            try:
                return await self._respond("/" + path, body, attempt, request)
            finally:
                with self._lock:
                    self._in_flight -= 1

        return app

    async def _respond(self, path: str, body: dict[str, Any], attempt: int, request: Request) -> Any:
        if self.mode == "chaos":  # of every 20 requests: two 500s, one hang, one truncated 200 (10/5/5 %)
            fault = attempt % 20
            if fault in (3, 11):
                return _error(500, f"fake internal error on attempt {attempt}")
            if fault == 7:
                while not await request.is_disconnected():
                    await asyncio.sleep(0.02)
                return _error(504, "fake hang ended")
            if fault == 15:
                whole = json.dumps(_reply(path, body))
                return Response(whole[: len(whole) // 2], status_code=200, media_type="application/json")
            return _reply(path, body)
        if self.mode == "stall":
            deadline = time.monotonic() + self.stall_s
            while time.monotonic() < deadline and not await request.is_disconnected():
                await asyncio.sleep(0.02)
            return _error(504, "fake stall ended")
        if self.mode == "error500" or (self.mode == "flaky" and attempt <= self.flaky_failures):
            return _error(500, f"fake internal error on attempt {attempt}")
        if self.mode == "rate_limit":
            return _error(429, "fake rate limit")
        if self.mode == "bad_request":
            return _error(400, BAD_REQUEST_MESSAGE)
        await asyncio.sleep(self.delay_s)
        if self.mode == "truncated" or (self.mode == "truncated_flaky" and attempt <= self.flaky_failures):
            whole = json.dumps(_reply(path, body))  # a 200 whose body stops half-way
            return Response(whole[: len(whole) // 2], status_code=200, media_type="application/json")
        return _reply(path, body)
