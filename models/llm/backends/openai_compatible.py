"""LLM client for servers speaking the OpenAI API: vLLM (or any compatible server), OpenAI, Azure OpenAI.

The SDK's own retries are switched off (``max_retries=0``) so that :mod:`.retry` alone decides
what is retried and how often. Every sampling parameter is sent as given: the reference client
accepted ``top_k`` but never sent it, so its effective top-k was the server default. vLLM takes
``top_k`` through ``extra_body``; OpenAI and Azure have no top-k, so asking for one is an error
rather than a silent no-op. Outputs are returned as the server sends them (vLLM already strips
stop strings).

Usage: built by :func:`models.llm.client.build_llm_client` for backends ``openai-compatible``,
``openai`` and ``azure``.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import openai
from openai.types import Completion as TextCompletion
from openai.types import CompletionChoice as TextChoice
from openai.types.chat import ChatCompletion
from openai.types.chat.chat_completion import Choice as ChatChoice

from models.llm.backends.retry import AttemptFailure, RetryPolicy, call_with_retries
from models.llm.client import (
    OPENAI_BASE_URL,
    Completion,
    LLMClient,
    LLMClientConfig,
    Message,
    SamplingParams,
)

HOSTED_BACKENDS = ("openai", "azure")


class MalformedResponseError(Exception):
    """The server answered 2xx with something that breaks the API contract (retried like a 5xx)."""


_BODY_PREVIEW_CHARS = 120


def classify_openai_error(err: Exception) -> AttemptFailure | None:
    """Timeouts, connection errors, HTTP 429 and 5xx and malformed 2xx bodies are transient; other API
    errors are final. A truncated body (an overloaded proxy, a server killed mid-reply) shows up as a JSON
    decoding error, named with the body's first bytes."""
    if isinstance(err, json.JSONDecodeError):
        preview = err.doc[:_BODY_PREVIEW_CHARS]
        return AttemptFailure(transient=True, detail=f"malformed 2xx body ({err.msg} at char {err.pos}): {preview!r}")
    if isinstance(err, openai.APIResponseValidationError):
        return AttemptFailure(transient=True, detail=f"2xx body does not match the API schema: {err.message}")
    if isinstance(err, openai.APITimeoutError):
        return AttemptFailure(transient=True, detail="request timed out")
    if isinstance(err, openai.APIConnectionError):
        return AttemptFailure(transient=True, detail=f"connection error: {err.__cause__ or err}")
    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        return AttemptFailure(transient=status == 429 or status >= 500, detail=err.message, status_code=status)
    if isinstance(err, openai.APIError):
        return AttemptFailure(transient=False, detail=f"{type(err).__name__}: {err.message}")
    if isinstance(err, MalformedResponseError):
        return AttemptFailure(transient=True, detail=f"malformed response: {err}")
    return None


def _check_config(config: LLMClientConfig) -> None:
    if config.backend == "openai-compatible" and not config.base_url:
        raise ValueError("backend 'openai-compatible' needs base_url, e.g. http://127.0.0.1:8010/v1 (GENERATOR_URL)")
    if config.backend == "openai" and not config.api_key:
        raise ValueError("backend 'openai' needs an API key: set OPENAI_API_KEY")
    if config.backend == "azure":
        missing = [
            env
            for env, value in [
                ("AZURE_OPENAI_ENDPOINT", config.base_url),
                ("AZURE_OPENAI_API_KEY", config.api_key),
                ("AZURE_OPENAI_API_VERSION", config.azure_api_version),
            ]
            if not value
        ]
        if missing:
            raise ValueError(f"backend 'azure' needs {', '.join(missing)}")


class OpenAICompatibleClient(LLMClient):
    """Chat (``/chat/completions``) and plain completion (``/completions``) over the OpenAI API."""

    def __init__(self, config: LLMClientConfig) -> None:
        _check_config(config)
        sdk: openai.AsyncOpenAI
        if config.backend == "azure":
            sdk = openai.AsyncAzureOpenAI(
                azure_endpoint=config.base_url,
                api_key=config.api_key,
                api_version=config.azure_api_version,
                timeout=config.timeout_s,
                max_retries=0,
            )
        else:
            sdk = openai.AsyncOpenAI(
                base_url=config.base_url or OPENAI_BASE_URL,
                api_key=config.api_key or "EMPTY",
                timeout=config.timeout_s,
                max_retries=0,
            )
        super().__init__(config)
        self._sdk = sdk
        self._url = str(sdk.base_url).rstrip("/")
        # Azure routes by deployment name, which the SDK reads from the `model` argument.
        self._model = (config.azure_deployment or config.model) if config.backend == "azure" else config.model
        self._policy = RetryPolicy(
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
            initial_backoff_s=config.initial_backoff_s,
            max_backoff_s=config.max_backoff_s,
        )

    def check_params(self, params: SamplingParams) -> None:
        """Reject ``top_k`` for OpenAI and Azure, whose APIs have no such parameter."""
        if params.top_k is not None and self.config.backend in HOSTED_BACKENDS:
            raise ValueError(
                f"backend {self.config.backend!r} does not support top_k (the OpenAI API has no top-k); "
                "use top_k=None, or an openai-compatible server such as vLLM"
            )

    async def _chat(self, messages: list[Message], params: SamplingParams) -> Completion:
        # Hosted OpenAI models take max_completion_tokens (max_tokens is deprecated there and
        # refused by reasoning models); vLLM and older servers know max_tokens.
        limit_field = "max_completion_tokens" if self.config.backend in HOSTED_BACKENDS else "max_tokens"

        async def send() -> Completion:
            response = await self._sdk.chat.completions.create(
                model=self._model,
                messages=messages,  # type: ignore[arg-type]
                **{limit_field: params.max_tokens},
                **_sampling_kwargs(params),
            )
            choices = _ordered_choices(response.choices, params.n)
            return _completion(response, [c.message.content or "" for c in choices], choices)

        return await call_with_retries(send, **self._retry_kwargs())

    async def _complete(self, prompt: str, params: SamplingParams) -> Completion:
        async def send() -> Completion:
            response = await self._sdk.completions.create(
                model=self._model, prompt=prompt, max_tokens=params.max_tokens, **_sampling_kwargs(params)
            )
            choices = _ordered_choices(response.choices, params.n)
            return _completion(response, [c.text for c in choices], choices)

        return await call_with_retries(send, **self._retry_kwargs())

    async def _aclose_backend(self) -> None:
        await self._sdk.close()

    def _retry_kwargs(self) -> dict[str, Any]:
        return {
            "policy": self._policy,
            "classify": classify_openai_error,
            "url": self._url,
            "model": self._model,
            "usage": self.usage,
        }


ChoiceT = TypeVar("ChoiceT", ChatChoice, TextChoice)


def _ordered_choices(choices: list[ChoiceT], n: int) -> list[ChoiceT]:
    if len(choices) != n:
        raise MalformedResponseError(f"server returned {len(choices)} choices for n={n}")
    return sorted(choices, key=lambda c: c.index)


def _completion(response: ChatCompletion | TextCompletion, texts: list[str], choices: list[Any]) -> Completion:
    usage = response.usage
    return Completion(
        texts=texts,
        finish_reasons=[c.finish_reason for c in choices],
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        model=response.model,
    )


def _sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    """Request fields shared by chat and completion; unset optional fields are left out."""
    kwargs: dict[str, Any] = {"n": params.n, "temperature": params.temperature, "top_p": params.top_p}
    if params.stop:
        kwargs["stop"] = list(params.stop)
    if params.seed is not None:
        kwargs["seed"] = params.seed
    if params.top_k is not None:
        kwargs["extra_body"] = {"top_k": params.top_k}
    return kwargs
