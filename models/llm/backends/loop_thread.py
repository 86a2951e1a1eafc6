"""A private asyncio event loop running in a daemon thread, fed coroutines from any thread.

Why: an ``openai.AsyncOpenAI`` client's connection pool belongs to the loop that first used it,
so a sync wrapper built on ``asyncio.run`` breaks on its second call, and clients shared by worker
threads would each need their own loop. Running every request of one LLM client on one loop keeps
one pool and one concurrency bound, whoever calls.

Usage::

    runner = LoopThread("llm-client")
    result = runner.run_sync(some_coroutine())      # from plain threads
    result = await runner.run_async(some_coroutine())  # from any other event loop
    runner.stop()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """Owns one event loop and the daemon thread that runs it until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()
        self._stop_lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def closed(self) -> bool:
        return self._loop.is_closed()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; raise ``RuntimeError`` once stopped."""
        if self._loop.is_closed():
            coro.close()
            raise RuntimeError("this LLM client is closed; build a new one with build_llm_client()")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` from another loop; cancelling the caller cancels it on this loop too."""
        return await asyncio.wrap_future(self.submit(coro))

    def run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Block the calling thread until ``coro`` finishes on this loop."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking LLM call was made from the client's own event loop; await it instead")
        return self.submit(coro).result()

    def stop(self) -> None:
        """Cancel what is still running, wait for worker threads, then close the loop (idempotent)."""
        with self._stop_lock:
            if self._loop.is_closed():
                return
            asyncio.run_coroutine_threadsafe(self._drain(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    async def _drain(self) -> None:
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._loop.shutdown_default_executor()
