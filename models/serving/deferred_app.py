"""An ASGI app that answers while the real retriever is still being built (a corpus being encoded).

A dense server started with ``--encode_missing`` may spend hours encoding its corpus. Meanwhile this app
answers ``GET /health`` with ``503 {"status": "loading", "done": n, "total": N}`` and every other path with
503, so ``servers/up.sh`` sees a live server making progress and keeps waiting instead of giving up on it;
once the build finishes, every request goes to the real app. A failed build ends the process, so the
launcher sees it exit.

Usage::

    deferred = DeferredApp(name="rader")
    threading.Thread(target=lambda: deferred.ready(create_app(build(deferred.progress)))).start()
    uvicorn.run(deferred, ...)
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

logger = logging.getLogger(__name__)


class DeferredApp:
    """Forwards to the real app once :meth:`ready` hands it over; until then, reports progress."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._app: Any = None
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {
            "status": "loading", "retriever": name, "done": 0, "total": 0,
            "instance": os.environ.get("SERVER_INSTANCE_ID", ""),
        }  # fmt: skip

    def progress(self, done: int, total: int) -> None:
        with self._lock:
            self._state.update(done=done, total=total)

    def ready(self, app: Any) -> None:
        self._app = app
        logger.info("%s: ready", self.name)

    def failed(self, error: BaseException) -> None:
        """The build failed: say why and end the process (the launcher sees it die)."""
        logger.error("%s: building the retriever failed: %s", self.name, error)
        os._exit(1)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self._app is not None:
            await self._app(scope, receive, send)
            return
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        with self._lock:
            state = dict(self._state)
        if scope["path"] != "/health":
            state = {"detail": f"the {self.name} retriever is still loading; poll /health"}
        body = json.dumps(state).encode()
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"retry-after", b"10")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})
