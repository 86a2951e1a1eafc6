"""A short fingerprint of a model checkpoint: what tells two checkpoints apart without hashing gigabytes.

Two RaDeR checkpoints trained from the same base share their architecture, config and tokenizer, and
differ in (nearly) every weight; two copies of one checkpoint in different folders are the same model.
So the fingerprint covers the config and tokenizer files in full and, for each weight file, its size and
16 chunks of 64 KiB spread evenly over it (the safetensors header included). A Hub id that is not a local
directory stands for itself (``hub:<id>``): its weights are not on disk to look at; a directory without
model files is named by its path (``dir:<path>``).

Usage::

    model_fingerprint("outputs/models/rader-merged")   # "2f6c0a9e41d7b3c8"
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
WHOLE_FILES = (
    "config.json",
    "adapter_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
)
CHUNKS = 16
CHUNK_BYTES = 64 * 1024


def model_fingerprint(name_or_path: str) -> str:
    """16 hex digits identifying the checkpoint at ``name_or_path`` (see the module docstring)."""
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        return "hub:" + name_or_path.strip("/")
    resolved = path.resolve()
    files = tuple(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(resolved.iterdir()) if _counts(p)
    )
    return _fingerprint(str(resolved), files)


def _counts(path: Path) -> bool:
    return path.is_file() and (path.name in WHOLE_FILES or path.suffix in WEIGHT_SUFFIXES)


@lru_cache(maxsize=64)
def _fingerprint(directory: str, files: tuple[tuple[str, int, int], ...]) -> str:
    """Cached on the directory's file names, sizes and modification times, so a stage asks only once."""
    digest = hashlib.sha256()
    root = Path(directory)
    for name, size, _ in files:
        digest.update(f"{name}\0{size}\0".encode())
        path = root / name
        with open(path, "rb") as handle:
            if name in WHOLE_FILES:
                digest.update(handle.read())
                continue
            for i in range(CHUNKS):
                handle.seek(max(0, (size - CHUNK_BYTES) * i // max(CHUNKS - 1, 1)))
                digest.update(handle.read(CHUNK_BYTES))
    if not files:  # not a checkpoint (loading it will say so); the folder itself is all there is to name
        return "dir:" + directory
    return digest.hexdigest()[:16]
