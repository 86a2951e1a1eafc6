"""Build the :class:`~models.llm.client.LLMClient` for a configured backend.

Only the chosen backend's dependencies are imported: the transformers backend loads torch, so it is
imported when asked for; the HTTP backends (vLLM, OpenAI, Azure) never touch torch.

Usage::

    from models.llm.factory import build_llm_client
    client = build_llm_client(config_from_settings(load_settings(), "openai-compatible"))
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from models.llm.backends.openai_compatible import OpenAICompatibleClient
from models.llm.client import LLMClient, LLMClientConfig

logger = logging.getLogger(__name__)


def build_llm_client(config: LLMClientConfig) -> LLMClient:
    """Build the client for ``config.backend``; only that backend's dependencies are imported."""
    logger.info("LLM client: %s", {k: v for k, v in asdict(config).items() if k != "api_key"})
    if config.backend == "transformers":
        from models.llm.backends.transformers_local import TransformersClient

        return TransformersClient(config)
    return OpenAICompatibleClient(config)
