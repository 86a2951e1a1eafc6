"""The one way this project calls a generator LLM: sampling parameters, results, usage counters,
the client interface, its configuration and the factory that picks a backend.

Backends live in :mod:`models.llm.backends` and are built by :func:`models.llm.factory.build_llm_client` (an OpenAI-compatible HTTP server such as vLLM, the
OpenAI API, Azure OpenAI, and in-process transformers) and are imported only when built, so using
an HTTP backend never imports torch. Every client runs its requests on a private event loop in a
daemon thread: the async API works from any caller loop, the sync API from any number of threads,
and all of them share one connection pool, one concurrency bound and one :class:`UsageCounter`.

Usage::

    client = build_llm_client(config_from_settings(load_settings(), "openai-compatible"))
    done = client.chat([{"role": "user", "content": "1+1?"}], SamplingParams(max_tokens=8, n=2))
    done.texts  # two strings
    client.close()
"""

from __future__ import annotations

import abc
import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar, get_args

from models.llm.backends.loop_thread import LoopThread
from models.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")
Message = dict[str, str]
Backend = Literal["openai-compatible", "openai", "azure", "transformers"]
BACKENDS: tuple[str, ...] = get_args(Backend)
OPENAI_BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class SamplingParams:
    """What to sample; the defaults are the OpenAI API's own (temperature 1, top-p 1, top-k off).

    ``top_k=None`` and ``seed=None`` are not sent, so the server default applies. ``stop`` strings
    end a sample and are not part of the returned text.
    """

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            raise TypeError(f"stop must be a sequence of strings such as ({self.stop!r},), not one string")
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None (disabled), got {self.top_k}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop strings must be non-empty strings, got {self.stop!r}")


@dataclass(frozen=True)
class Completion:
    """The ``n`` samples of one request, in the order the server indexed them.

    ``finish_reasons[i]`` is ``"stop"`` (end of sequence or a stop string) or ``"length"``
    (``max_tokens`` reached), as the server reports it. Token counts cover the whole request.
    """

    texts: list[str]
    finish_reasons: list[str | None]
    prompt_tokens: int
    completion_tokens: int
    model: str

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.finish_reasons):
            raise ValueError(f"{len(self.texts)} texts but {len(self.finish_reasons)} finish reasons")


@dataclass
class UsageCounter:
    """Running totals of one client's traffic for the run summary (rStar's call and token counters).

    ``requests`` counts requests sent (each may carry ``n`` samples), ``samples`` the texts
    returned, ``retries`` the extra attempts after transient errors and ``failures`` the requests
    that raised. Updated under a lock, so worker threads and tasks can share one client.
    """

    requests: int = 0
    samples: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_request(self) -> None:
        with self._lock:
            self.requests += 1

    def record_completion(self, completion: Completion) -> None:
        with self._lock:
            self.samples += len(completion.texts)
            self.prompt_tokens += completion.prompt_tokens
            self.completion_tokens += completion.completion_tokens

    def record_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def record_failure(self) -> None:
        with self._lock:
            self.failures += 1

    def as_dict(self) -> dict[str, int]:
        """A consistent snapshot, for logging and ``summary.json`` files."""
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


class RequestsStopped(RuntimeError):
    """The client was told to stop sending (an interrupted run); the request was never sent."""


class LLMServiceError(RuntimeError):
    """An LLM request failed for good: retries are spent, or the server rejected the request.

    Carries the endpoint, model, number of attempts and last HTTP status (``None`` for timeouts and
    connection errors) so a long run can record the failure next to the item and go on. All
    arguments are positional so the error pickles across worker processes.
    """

    def __init__(self, message: str, url: str, model: str, attempts: int, status_code: int | None = None) -> None:
        super().__init__(message, url, model, attempts, status_code)
        self.message = message
        self.url = url
        self.model = model
        self.attempts = attempts
        self.status_code = status_code

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class LLMClientConfig:
    """Which backend to build and how it behaves under failure and load.

    Attributes:
        backend: ``openai-compatible`` (vLLM or any server with the OpenAI API), ``openai``,
            ``azure`` or ``transformers`` (in-process).
        model: served model name; the deployment for ``azure`` when ``azure_deployment`` is empty;
            a local checkpoint directory for ``transformers``.
        base_url: API root such as ``http://127.0.0.1:8010/v1``; the Azure endpoint for ``azure``;
            empty means the official URL for ``openai``.
        api_key: bearer key (never printed in ``repr``).
        timeout_s: limit on each HTTP attempt; a request takes at most about
            ``(max_retries + 1) * timeout_s`` plus the backoff sleeps.
        max_retries: extra attempts after timeouts, connection errors, HTTP 429 and 5xx.
        initial_backoff_s, max_backoff_s: first sleep before a retry, doubled each time, capped.
        max_concurrency: requests in flight at once from this client.
        azure_api_version, azure_deployment: Azure OpenAI only.
        device, dtype: ``transformers`` only (``float32``, ``bfloat16``, ``float16`` or ``auto``).
    """

    backend: Backend
    model: str
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    timeout_s: float = 600.0
    max_retries: int = 5
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    max_concurrency: int = 32
    azure_api_version: str = ""
    azure_deployment: str = ""
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {self.backend!r}")
        if not self.model and not (self.backend == "azure" and self.azure_deployment):
            raise ValueError(
                f"backend {self.backend!r} needs a model: pass model=... (a served model name, or a checkpoint "
                "directory for transformers; GENERATOR_MODEL is the default for openai-compatible and transformers)"
            )
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError(
                f"need 0 <= initial_backoff_s <= max_backoff_s, got {self.initial_backoff_s} and {self.max_backoff_s}"
            )
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")


def config_from_settings(
    settings: Settings, backend: Backend, model: str | None = None, **overrides: Any
) -> LLMClientConfig:
    """Fill a config's endpoint, key and model from :class:`Settings` for ``backend``.

    ``model`` defaults to ``GENERATOR_MODEL`` (``openai-compatible``, ``transformers``) or
    ``AZURE_OPENAI_DEPLOYMENT`` (``azure``); ``overrides`` set any other config field.
    """
    if backend == "openai-compatible":
        base: dict[str, str] = {"base_url": settings.generator_url, "api_key": settings.generator_api_key}
        default_model = settings.generator_model
    elif backend == "openai":
        base = {"base_url": settings.openai_base_url or OPENAI_BASE_URL, "api_key": settings.openai_api_key}
        default_model = ""
    elif backend == "azure":
        base = {
            "base_url": settings.azure_openai_endpoint,
            "api_key": settings.azure_openai_api_key,
            "azure_api_version": settings.azure_openai_api_version,
            "azure_deployment": settings.azure_openai_deployment,
        }
        default_model = settings.azure_openai_deployment
    elif backend == "transformers":
        base = {}
        default_model = settings.generator_model
    else:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    return LLMClientConfig(backend=backend, model=model or default_model, **{**base, **overrides})


def _check_messages(messages: Sequence[Message]) -> None:
    if not messages:
        raise ValueError("messages is empty; a chat request needs at least one message")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or "content" not in message:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {message!r}")


class LLMClient(abc.ABC):
    """Chat and plain completion against one model, with bounded concurrency and usage counters.

    Subclasses implement :meth:`_chat` and :meth:`_complete` (one request, any retries inside) and
    may override :meth:`check_params` and :meth:`_aclose_backend`. The public methods validate
    inputs in the caller's thread, then run the request on the client's own event loop.
    """

    def __init__(self, config: LLMClientConfig) -> None:
        self.config = config
        self.usage = UsageCounter()
        self._semaphore = asyncio.Semaphore(config.max_concurrency)
        self._runner = LoopThread(name=f"llm-client-{config.backend}")
        self._stopped = False
        self._in_flight: set[asyncio.Task[Any]] = set()

    @abc.abstractmethod
    async def _chat(self, messages: list[Message], params: SamplingParams) -> Completion:
        """Send one chat request and return its samples."""

    @abc.abstractmethod
    async def _complete(self, prompt: str, params: SamplingParams) -> Completion:
        """Send one plain (non-chat) completion request and return its samples."""

    def check_params(self, params: SamplingParams) -> None:
        """Raise ``ValueError`` for parameters this backend cannot honour (default: accept all)."""
        return None

    async def _aclose_backend(self) -> None:
        """Release backend resources; runs on the client's loop."""
        return None

    async def achat(self, messages: list[Message], params: SamplingParams | None = None) -> Completion:
        """Sample ``params.n`` assistant replies to ``messages`` (the server applies the chat template)."""
        params = self._checked(params)
        _check_messages(messages)
        return await self._runner.run_async(self._bounded(self._chat, messages, params))

    async def acomplete(self, prompt: str, params: SamplingParams | None = None) -> Completion:
        """Sample ``params.n`` raw continuations of ``prompt`` (no chat template)."""
        params = self._checked(params)
        return await self._runner.run_async(self._bounded(self._complete, prompt, params))

    async def agather_chat(
        self, conversations: Sequence[list[Message]], params: SamplingParams | None = None
    ) -> list[Completion]:
        """Run many chat requests concurrently (within ``max_concurrency``); results keep input order.

        The first failure is raised and the requests still running are cancelled.
        """
        params = self._checked(params)
        for messages in conversations:
            _check_messages(messages)
        return await self._runner.run_async(self._gather_chats(list(conversations), params))

    def chat(self, messages: list[Message], params: SamplingParams | None = None) -> Completion:
        """Blocking :meth:`achat`; safe to call from many threads at once."""
        params = self._checked(params)
        _check_messages(messages)
        return self._runner.run_sync(self._bounded(self._chat, messages, params))

    def complete(self, prompt: str, params: SamplingParams | None = None) -> Completion:
        """Blocking :meth:`acomplete`; safe to call from many threads at once."""
        params = self._checked(params)
        return self._runner.run_sync(self._bounded(self._complete, prompt, params))

    async def aclose(self) -> None:
        """Close connections and stop the client's loop; later calls raise ``RuntimeError``."""
        if not self._runner.closed:
            await self._runner.run_async(self._aclose_backend())
            await asyncio.to_thread(self._runner.stop)

    def close(self) -> None:
        """Blocking :meth:`aclose`."""
        if not self._runner.closed:
            self._runner.run_sync(self._aclose_backend())
            self._runner.stop()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _checked(self, params: SamplingParams | None) -> SamplingParams:
        params = params or SamplingParams()
        self.check_params(params)
        return params

    def stop_requests(self, cancel_in_flight: bool = False) -> None:
        """Refuse every later request with :class:`RequestsStopped` (an interrupted run must stop talking
        to the server at once); with ``cancel_in_flight`` also cancel the requests being sent now."""
        self._stopped = True
        if cancel_in_flight and not self._runner.closed:
            for task in list(self._in_flight):
                self._runner.loop.call_soon_threadsafe(task.cancel)

    async def _bounded(
        self, send: Callable[[T, SamplingParams], Awaitable[Completion]], request: T, params: SamplingParams
    ) -> Completion:
        """Send one request within the concurrency bound and count it."""
        task = asyncio.current_task()
        async with self._semaphore:
            if self._stopped:
                raise RequestsStopped(f"requests to {self.config.base_url or self.config.backend} were stopped")
            self.usage.record_request()
            if task is not None:
                self._in_flight.add(task)
            try:
                completion = await send(request, params)
            except Exception:
                self.usage.record_failure()
                raise
            finally:
                self._in_flight.discard(task)  # type: ignore[arg-type]
        self.usage.record_completion(completion)
        return completion

    async def _gather_chats(self, conversations: list[list[Message]], params: SamplingParams) -> list[Completion]:
        tasks = [asyncio.ensure_future(self._bounded(self._chat, messages, params)) for messages in conversations]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()  # no-op for finished tasks; stops the rest after a failure
