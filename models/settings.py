"""Endpoints, keys, model paths and cache directories, read once from ``.env`` and the environment.

Every other module receives these values as arguments; this is the only place that reads the
environment. ``.env`` (python-dotenv) never overrides a variable that is already set, so a shell
``export`` wins over the file. ``.env.example`` lists every variable with a comment.

Usage::

    from models.settings import load_settings
    settings = load_settings()
    client_url = settings.generator_url
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from dotenv import dotenv_values

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """Resolved configuration; field names mirror the environment variables in lower case."""

    # Generator (any OpenAI-compatible server; vLLM in production).
    generator_url: str = "http://127.0.0.1:8010/v1"
    generator_api_key: str = "EMPTY"
    generator_model: str = ""
    # Hosted APIs.
    openai_api_key: str = ""
    openai_base_url: str = ""
    azure_openai_endpoint: str = ""
    azure_openai_api_key: str = ""
    azure_openai_api_version: str = "2024-10-21"
    azure_openai_deployment: str = ""
    # Retriever servers (our FastAPI apps: GET/POST /search, GET /health).
    bm25_url: str = "http://127.0.0.1:8012"
    repllama_url: str = "http://127.0.0.1:8011"
    rader_url: str = "http://127.0.0.1:8001"
    # Models served or loaded by path.
    rader_model_path: str = ""
    repllama_model_path: str = ""
    # Data and caches.
    bright_dir: str = ""
    bright_revision: str = ""  # empty: models.retrieval.corpus.BRIGHT_REVISION
    bright_cache_dir: str = str(REPO_ROOT / "BRIGHT_cache")
    outputs_mcts_dir: str = str(REPO_ROOT / "outputs_MCTS")
    rader_cache_dir: str = str(Path.home() / ".cache" / "rader")
    server_run_dir: str = str(REPO_ROOT / ".cache" / "servers")
    hf_home: str = ""
    hf_token: str = ""

    @property
    def assets_dir(self) -> Path:
        """Where embedded models and datasets are prepared (converted once, reused)."""
        return Path(self.rader_cache_dir) / "assets"


def _env_name(field_name: str) -> str:
    return field_name.upper()


def load_settings(env_file: str | os.PathLike[str] | None = None) -> Settings:
    """Build :class:`Settings` from the environment, falling back to ``env_file`` then defaults.

    ``env_file`` defaults to ``$RADER_ENV_FILE`` or ``<repo>/.env``; a missing file is fine.
    """
    path = Path(env_file or os.environ.get("RADER_ENV_FILE") or REPO_ROOT / ".env")
    file_values = {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}
    values: dict[str, str] = {}
    for f in fields(Settings):
        name = _env_name(f.name)
        if name in os.environ:
            values[f.name] = os.environ[name]
        elif name in file_values:
            values[f.name] = file_values[name]
    for name, value in values.items():
        if name.endswith("_dir") and value:
            values[name] = _resolve_path(value)
    return Settings(**values)


def _resolve_path(value: str) -> str:
    """Expand ``~`` and make relative paths relative to the repository, not the caller's cwd."""
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (REPO_ROOT / path).resolve())
