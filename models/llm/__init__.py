"""Generator LLMs: ``client`` (the interface, sampling parameters, usage counters, the factory),
``backends/`` (OpenAI-compatible servers such as vLLM, OpenAI, Azure, in-process transformers) and
``prompt_templates`` (templates loaded from ``prompts/`` with placeholder checks and versions)."""
