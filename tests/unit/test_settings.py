"""Settings come from the environment first, then the .env file, then defaults."""

from __future__ import annotations

from pathlib import Path

from models.settings import REPO_ROOT, Settings, load_settings


def test_defaults_without_env_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("GENERATOR_URL", raising=False)
    settings = load_settings(tmp_path / "missing.env")
    assert settings.generator_url == Settings().generator_url == "http://127.0.0.1:8010/v1"


def test_env_file_values_and_environment_precedence(tmp_path: Path, monkeypatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("GENERATOR_URL=http://10.0.0.5:9000/v1\nBM25_URL='http://127.0.0.1:9012'\nGENERATOR_MODEL=qwen\n")
    monkeypatch.delenv("GENERATOR_URL", raising=False)
    monkeypatch.delenv("BM25_URL", raising=False)
    monkeypatch.setenv("GENERATOR_MODEL", "from-env")
    settings = load_settings(env_file)
    assert settings.generator_url == "http://10.0.0.5:9000/v1"
    assert settings.bm25_url == "http://127.0.0.1:9012"
    assert settings.generator_model == "from-env"


def test_directories_are_resolved(tmp_path: Path, monkeypatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("BRIGHT_CACHE_DIR=./my_cache\nRADER_CACHE_DIR=~/rader_here\n")
    for name in ("BRIGHT_CACHE_DIR", "RADER_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(env_file)
    assert settings.bright_cache_dir == str((REPO_ROOT / "my_cache").resolve())
    assert settings.rader_cache_dir == str(Path("~/rader_here").expanduser())
    assert settings.assets_dir == Path(settings.rader_cache_dir) / "assets"


def test_env_example_lists_every_setting() -> None:
    example = (REPO_ROOT / ".env.example").read_text()
    names = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line and not line.startswith("#")}
    missing = [f.upper() for f in Settings.__dataclass_fields__ if f.upper() not in names]
    assert missing == []
