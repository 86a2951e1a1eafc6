"""Reusable components of the RaDeR reproduction: settings, LLM clients, embedded assets,
retrievers, server apps and models. Nothing here does work at import time."""
