"""Resumable, concurrent LLM calls for query synthesis, with an append-only completion cache.

Every request is identified by a hash of everything that determines its answer (model, messages, sampling
parameters including the per-request seed). A finished completion is appended to the cache JSONL the moment
it arrives, so a killed run loses at most the requests in flight; on restart, requests whose key is in the
cache are not sent again. A request that fails after the client's retries is reported and not cached, so
the next run tries it again. A torn last line (the process died mid-write) is skipped with a warning.

Per-request seeds are derived from the run seed and the sample id, so a sample gets the same seed whatever
else is in the run and in whichever order requests finish.

Usage::

    cache = CompletionCache(out_dir / "cache" / "completions.jsonl")
    outcome = generate_all(client, requests, cache)
    outcome.completions["MATH:17:4:20113:llmq"]["text"]
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from models.io_utils import append_jsonl
from models.llm.client import LLMClient, LLMServiceError, SamplingParams

logger = logging.getLogger(__name__)

CACHE_SCHEMA_VERSION = 1
Message = dict[str, str]


def request_seed(base_seed: int, sample_id: str) -> int:
    """A 31-bit seed that depends only on the run seed and the sample id."""
    digest = hashlib.sha256(f"{base_seed}:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class GenerationRequest:
    """One chat request for one sample (``n`` = 1: every sample has its own seed)."""

    sample_id: str
    kind: str  # "llmq" or "lexical"
    model: str
    messages: list[Message]
    params: SamplingParams
    prompt: dict[str, str]  # {"name", "version"} of the prompt file

    @property
    def request_key(self) -> str:
        payload = {"model": self.model, "messages": self.messages, "params": asdict(self.params)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def params_dict(self) -> dict[str, Any]:
        params = asdict(self.params)
        params["stop"] = list(params["stop"])
        return params


class CompletionCache:
    """Append-only JSONL of finished completions, keyed by :attr:`GenerationRequest.request_key`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, dict[str, Any]]:
        """All cached completions; malformed lines (a torn write) are skipped and counted in the log."""
        if not self.path.is_file():
            return {}
        found: dict[str, dict[str, Any]] = {}
        skipped = 0
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    skipped += 1
                    continue
                if isinstance(record, dict) and isinstance(record.get("request_key"), str):
                    found[record["request_key"]] = record
                else:
                    skipped += 1
        if skipped:
            logger.warning(
                "%s: skipped %d unreadable lines (a killed run's last write); redoing them", self.path, skipped
            )
        return found

    def close_torn_line(self) -> None:
        """A killed writer can leave a last line without its newline; close it so the next record stands alone."""
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, "rb") as handle:
                handle.seek(-1, 2)
                last = handle.read(1)
            if last != b"\n":
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write("\n")

    def append(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path, record)


@dataclass
class GenerationOutcome:
    """Completions by sample id (cached and new), failures by sample id, and counts for the summary."""

    completions: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    cached: int = 0
    generated: int = 0


def _cache_record(request: GenerationRequest, text: str, finish_reason: str | None, completion: Any) -> dict[str, Any]:
    return {
        "schema_version": CACHE_SCHEMA_VERSION,
        "request_key": request.request_key,
        "sample_id": request.sample_id,
        "kind": request.kind,
        "model": request.model,
        "served_model": completion.model,
        "prompt": request.prompt,
        "params": request.params_dict(),
        "text": text,
        "finish_reason": finish_reason,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
    }


async def _generate(
    client: LLMClient, requests: Sequence[GenerationRequest], cache: CompletionCache, quiet: bool
) -> GenerationOutcome:
    outcome = GenerationOutcome()
    cached = cache.load()
    todo: list[GenerationRequest] = []
    for request in requests:
        hit = cached.get(request.request_key)
        if hit is not None:
            outcome.completions[request.sample_id] = hit
            outcome.cached += 1
        else:
            todo.append(request)
    logger.info("LLM requests: %d in total, %d from the cache, %d to send", len(requests), outcome.cached, len(todo))
    if not todo:
        return outcome
    cache.close_torn_line()
    # Bound what is handed to the client at once; the client bounds what is in flight on the wire.
    gate = asyncio.Semaphore(2 * client.config.max_concurrency)
    progress = tqdm(total=len(todo), desc="LLM queries", unit="req", disable=quiet)

    async def one(request: GenerationRequest) -> None:
        async with gate:
            try:
                completion = await client.achat(request.messages, request.params)
            except LLMServiceError as err:  # one failed request must not end the run
                outcome.failures[request.sample_id] = str(err)
                logger.warning("LLM request for %s failed: %s", request.sample_id, err)
                progress.update(1)
                return
        text = completion.texts[0] if completion.texts else ""
        reason = completion.finish_reasons[0] if completion.finish_reasons else None
        record = _cache_record(request, text, reason, completion)
        cache.append(record)
        outcome.completions[request.sample_id] = record
        outcome.generated += 1
        progress.update(1)

    try:
        await asyncio.gather(*(one(request) for request in todo))
    finally:
        progress.close()
    return outcome


def generate_all(
    client: LLMClient, requests: Sequence[GenerationRequest], cache: CompletionCache, quiet: bool = False
) -> GenerationOutcome:
    """Answer every request (from the cache or the LLM); blocking."""
    ids = [request.sample_id for request in requests]
    if len(set(ids)) != len(ids):
        raise ValueError("generation requests must have unique sample ids")
    return asyncio.run(_generate(client, requests, cache, quiet))
