"""Backends behind :class:`models.llm.client.LLMClient`, plus the event-loop thread and retry loop they share.

Import a backend module only through :func:`models.llm.client.build_llm_client`, which loads the
one it needs (the transformers backend imports torch; the HTTP backends do not).
"""
