"""Document-embedding cache (DESIGN.md §3): build once, resume after a kill, refuse a mismatch.

Layout: ``<cache_root>/doc_emb/<model_name>/<corpus_name>/`` holds

* ``embeddings.npy`` float32 ``[n_docs, dim]``, L2-normalised, rows in corpus order;
* ``ids.json`` the corpus doc ids in the same order;
* ``meta.json`` ``encoder.describe(side="document")`` + ``dim`` + corpus name/fingerprint +
  ``n_docs`` + ``created``; ``status`` is ``"building"`` until the arrays are complete.

One cache per distinct corpus: two corpus names with the same documents (BRIGHT's aops and
theoremqa_questions share one corpus) share one cache. The second name's directory is a relative symlink
to the first's, made when it is first asked for, so every path-based reader finds it and nothing is encoded
twice.

A build encodes ``shard_size`` documents at a time into ``part-XXXXX.npy`` (written atomically),
so a killed build resumes at the first missing shard; the parts are concatenated and removed at
the end. ``meta.json`` is written *before* the first shard, so parts are only ever reused by an
encoder with the same settings. A cache (finished or partial) whose settings differ is refused
with the differing keys named — never silently reused.

Usage::

    from models.retrieval.embedding_cache import build_or_load_doc_embeddings
    cached = build_or_load_doc_embeddings(encoder, corpus, "BRIGHT_cache", "rader-smollm2")
    cached.embeddings, cached.ids
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from models.io_utils import atomic_write_json

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_SHARD_SIZE = 1000
# Keys that record how/when a cache was built, or where the model was read from (its identity is
# ``model_fingerprint``); they never make two caches incompatible.
# ``corpus_name`` too: identical corpora under two names share a cache (the fingerprint is what must match).
INFORMATIONAL_KEYS = frozenset({"created", "status", "build", "shard_size", "model", "tokenizer", "corpus_name"})
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_NORM_TOLERANCE = 1e-3
Progress = Callable[[int, int], None]  # (documents encoded so far, documents in all)


class CorpusLike(Protocol):
    """What the cache needs from a corpus (``models.retrieval.corpus.Corpus`` satisfies it)."""

    name: str
    doc_ids: Sequence[str]
    texts: Sequence[str]

    def fingerprint(self) -> str: ...


class DocumentEncoder(Protocol):
    """What the cache needs from an encoder (``models.retrieval.encoders.Encoder`` satisfies it)."""

    @property
    def dim(self) -> int: ...

    def encode_documents(self, texts: Sequence[str], show_progress: bool = True) -> np.ndarray: ...

    def describe(self, side: str = "both") -> dict[str, Any]: ...


@dataclass(frozen=True)
class DocEmbeddings:
    """A finished cache: ``embeddings[i]`` is the vector of ``ids[i]``."""

    ids: list[str]
    embeddings: np.ndarray
    meta: dict[str, Any]
    path: Path


def cache_dir(cache_root: str | os.PathLike[str], model_name: str, corpus_name: str) -> Path:
    """``<cache_root>/doc_emb/<model_name>/<corpus_name>``; names must be plain file names."""
    for label, value in (("model_name", model_name), ("corpus name", corpus_name)):
        if not _SAFE_NAME.match(value):
            raise ValueError(f"{label} {value!r} is not usable as a directory name; use letters, digits and ._+- only")
    return Path(cache_root) / "doc_emb" / model_name / corpus_name


def build_or_load_doc_embeddings(
    encoder: DocumentEncoder,
    corpus: CorpusLike,
    cache_root: str | os.PathLike[str],
    model_name: str,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    show_progress: bool = True,
    mmap: bool = False,
    on_progress: Progress | None = None,
) -> DocEmbeddings:
    """Return the corpus embeddings from the cache, encoding (or finishing) them first if needed.

    ``on_progress(done, total)`` is called after each shard (a server reports it on its health endpoint).

    Raises ``ValueError`` if the directory holds a cache built with other settings or for another
    corpus. ``mmap=True`` memory-maps ``embeddings.npy`` instead of reading it into memory.
    """
    doc_ids, texts = _validated_corpus(corpus)
    directory = cache_dir(cache_root, model_name, corpus.name)
    expected = _expected_meta(encoder, corpus, len(doc_ids))
    _share_identical_corpus(directory, expected)
    shard_size_or_done = _open_build(directory, expected, shard_size, encoder)
    if not isinstance(shard_size_or_done, int):
        return _load(directory, shard_size_or_done, doc_ids, mmap)
    shard_size = shard_size_or_done
    parts = _encode_shards(
        encoder, texts, directory, shard_size, expected["dim"], show_progress, f"{model_name}/{corpus.name}",
        on_progress,
    )  # fmt: skip
    _assemble(directory, parts, len(doc_ids), expected["dim"])
    atomic_write_json(directory / "ids.json", doc_ids, indent=None)
    meta = {
        **expected,
        "status": "complete",
        "shard_size": shard_size,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "build": _build_info(encoder),
    }
    atomic_write_json(directory / "meta.json", meta)  # written last: its "complete" vouches for the two files above
    for part in parts:
        part.unlink(missing_ok=True)
    logger.info("wrote document embeddings %s (%d docs, dim %d)", directory, len(doc_ids), expected["dim"])
    return _load(directory, meta, doc_ids, mmap)


def encode_doc_embedding_parts(
    encoder: DocumentEncoder,
    corpus: CorpusLike,
    cache_root: str | os.PathLike[str],
    model_name: str,
    worker: tuple[int, int],
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    show_progress: bool = True,
    on_progress: Progress | None = None,
) -> int:
    """Encode this worker's parts of a cache (parts ``s`` with ``s % num_workers == index``); return their count.

    Several processes (one per GPU) share one cache directory this way; each part is written atomically
    and a killed worker resumes at its first missing part. Nothing is assembled here: the next
    :func:`build_or_load_doc_embeddings` finds every part on disk and only concatenates them.
    """
    index, num_workers = worker
    if not (num_workers >= 1 and 0 <= index < num_workers):
        raise ValueError(f"worker must be (index, count) with 0 <= index < count, got {worker}")
    doc_ids, texts = _validated_corpus(corpus)
    directory = cache_dir(cache_root, model_name, corpus.name)
    expected = _expected_meta(encoder, corpus, len(doc_ids))
    _share_identical_corpus(directory, expected)
    shard_size_or_done = _open_build(directory, expected, shard_size, encoder)
    if not isinstance(shard_size_or_done, int):
        return 0  # already complete
    parts = _encode_shards(
        encoder, texts, directory, shard_size_or_done, expected["dim"], show_progress,
        f"{model_name}/{corpus.name} [worker {index + 1}/{num_workers}]", on_progress, worker=worker,
    )  # fmt: skip
    return len(parts)


def _share_identical_corpus(directory: Path, expected: dict[str, Any]) -> None:
    """Link ``directory`` to a sibling cache (finished or building) of the same corpus, if there is one.

    Only a directory that does not exist yet is linked; the sibling's settings are then checked like any
    cache's, so a sibling built with other settings is refused by name, never reused.
    """
    if directory.exists() or directory.is_symlink() or not directory.parent.is_dir():
        return
    for sibling in sorted(directory.parent.iterdir()):
        meta_path = sibling / "meta.json"
        if sibling.is_symlink() or not meta_path.is_file():
            continue
        meta = _read_json(meta_path)
        if meta.get("corpus_fingerprint") == expected["corpus_fingerprint"] and meta.get("n_docs") == expected["n_docs"]:
            os.symlink(sibling.name, directory, target_is_directory=True)
            logger.info("corpus %s has the documents of %s: sharing its cache %s", directory.name, sibling.name, sibling)
            return


def _open_build(
    directory: Path, expected: dict[str, Any], shard_size: int, encoder: DocumentEncoder
) -> int | dict[str, Any]:
    """The finished cache's meta, or the shard size a (new or resumed) build must use."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    meta_path = directory / "meta.json"
    if meta_path.is_file():
        existing = _read_json(meta_path)
        _refuse_mismatch(directory, existing, expected)
        if existing.get("status") == "complete":
            logger.info("reusing document embeddings %s (%d docs, dim %d)", directory, expected["n_docs"], expected["dim"])
            return existing
        shard_size = int(existing.get("shard_size", shard_size))  # parts on disk use the original size
        logger.info("resuming partial build in %s (shard size %d)", directory, shard_size)
        return shard_size
    leftovers = sorted(p.name for p in directory.glob("*.npy")) if directory.is_dir() else []
    if leftovers:
        raise ValueError(
            f"{directory} holds {leftovers[:3]} but no meta.json, so its settings are unknown; "
            "delete the directory to rebuild"
        )
    atomic_write_json(meta_path, {**expected, "status": "building", "shard_size": shard_size, "build": _build_info(encoder)})
    return shard_size


def load_doc_embeddings(directory: str | os.PathLike[str], mmap: bool = False) -> DocEmbeddings:
    """Open a finished cache without an encoder (servers, evaluation); checks it is complete."""
    path = Path(directory)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no embedding cache at {path} (meta.json missing); build it first")
    meta = _read_json(meta_path)
    if meta.get("status") != "complete":
        raise ValueError(f"embedding cache {path} is unfinished; rerun the build to resume it")
    return _load(path, meta, None, mmap)


# --- steps ---------------------------------------------------------------------------------------


def _validated_corpus(corpus: CorpusLike) -> tuple[list[str], list[str]]:
    doc_ids, texts = list(corpus.doc_ids), list(corpus.texts)
    if len(doc_ids) != len(texts):
        raise ValueError(f"corpus {corpus.name!r} has {len(doc_ids)} doc ids but {len(texts)} texts")
    if len(set(doc_ids)) != len(doc_ids):
        raise ValueError(f"corpus {corpus.name!r} has duplicate doc ids; ids must be unique")
    if not all(isinstance(i, str) for i in doc_ids):
        raise ValueError(f"corpus {corpus.name!r} doc ids must be strings")
    return doc_ids, texts


def _expected_meta(encoder: DocumentEncoder, corpus: CorpusLike, n_docs: int) -> dict[str, Any]:
    settings = dict(encoder.describe(side="document"))
    if settings.get("normalize") is False:
        raise ValueError("the embedding cache stores L2-normalised vectors; build the encoder with normalize=True")
    clash = sorted(set(settings) & {"format_version", "dim", "corpus_name", "corpus_fingerprint", "n_docs"})
    if clash:
        raise ValueError(f"encoder.describe() must not use the cache's own keys {clash}")
    return {
        "format_version": FORMAT_VERSION,
        **settings,
        "dim": int(encoder.dim),
        "corpus_name": corpus.name,
        "corpus_fingerprint": corpus.fingerprint(),
        "n_docs": n_docs,
    }


def _refuse_mismatch(directory: Path, existing: dict[str, Any], expected: dict[str, Any]) -> None:
    keys = (set(existing) | set(expected)) - INFORMATIONAL_KEYS
    differing = sorted(k for k in keys if existing.get(k) != expected.get(k))
    if differing:
        details = "; ".join(f"{k}: cached {existing.get(k)!r} vs now {expected.get(k)!r}" for k in differing)
        raise ValueError(
            f"embedding cache {directory} was built with other settings ({', '.join(differing)}): {details}. "
            f"Pick another model_name (a new cache directory) or delete {directory} to rebuild"
        )


def _encode_shards(
    encoder: DocumentEncoder,
    texts: list[str],
    directory: Path,
    shard_size: int,
    dim: int,
    show_progress: bool,
    label: str,
    on_progress: Progress | None = None,
    worker: tuple[int, int] = (0, 1),
) -> list[Path]:
    """Encode every missing ``part-XXXXX.npy`` of this worker; finished parts from a killed run are kept.

    Returns this worker's parts (all parts for the default single worker).
    """
    n_shards = -(-len(texts) // shard_size)
    index, num_workers = worker
    parts = [directory / f"part-{s:05d}.npy" for s in range(n_shards)]
    mine = [s for s in range(n_shards) if s % num_workers == index]
    done = {s for s in mine if _part_ok(parts[s], _rows(s, shard_size, len(texts)), dim)}
    done_rows = sum(_rows(s, shard_size, len(texts)) for s in done)
    total_rows = sum(_rows(s, shard_size, len(texts)) for s in mine)
    if done:
        logger.info("%s: %d of %d shards already encoded", label, len(done), len(mine))
    with tqdm(
        total=total_rows, initial=done_rows, desc=f"doc embeddings {label}", unit="doc", disable=not show_progress
    ) as bar:
        for s in mine:
            if s in done:
                continue
            start = s * shard_size
            chunk = texts[start : start + shard_size]
            vectors = np.asarray(encoder.encode_documents(chunk, show_progress=False), dtype=np.float32)
            _check_vectors(vectors, len(chunk), dim, start)
            _atomic_save_npy(parts[s], vectors)
            bar.update(len(chunk))
            if on_progress is not None:
                on_progress(bar.n, total_rows)
    return [parts[s] for s in mine]


def _rows(shard: int, shard_size: int, n: int) -> int:
    return min(shard_size, n - shard * shard_size)


def _part_ok(path: Path, rows: int, dim: int) -> bool:
    if not path.is_file():
        return False
    try:
        part = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        logger.warning("re-encoding unreadable shard %s: %s", path.name, err)
        return False
    if part.shape != (rows, dim) or part.dtype != np.float32:
        logger.warning("re-encoding shard %s: shape %s, expected (%d, %d)", path.name, part.shape, rows, dim)
        return False
    return True


def _check_vectors(vectors: np.ndarray, rows: int, dim: int, start: int) -> None:
    if vectors.shape != (rows, dim):
        raise ValueError(
            f"encoder returned shape {vectors.shape} for documents {start}..{start + rows - 1}, expected ({rows}, {dim})"
        )
    norms = np.linalg.norm(vectors, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (np.abs(norms - 1.0) > _NORM_TOLERANCE))
    if bad.size:
        raise ValueError(
            f"documents {(bad + start).tolist()[:10]} got non-unit or non-finite vectors (norms {norms[bad][:3]}); "
            "the cache stores L2-normalised embeddings"
        )


def _assemble(directory: Path, parts: list[Path], n_docs: int, dim: int) -> None:
    """Concatenate the parts into ``embeddings.npy`` through a memory map (no 2x RAM), atomically."""
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".embeddings.npy.", suffix=".tmp")
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp_name, mode="w+", dtype=np.float32, shape=(n_docs, dim))
        row = 0
        for part in parts:
            block = np.load(part)
            out[row : row + len(block)] = block
            row += len(block)
        assert row == n_docs, (row, n_docs)
        out.flush()
        del out
        with open(tmp_name, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_name, directory / "embeddings.npy")
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _load(directory: Path, meta: dict[str, Any], doc_ids: list[str] | None, mmap: bool) -> DocEmbeddings:
    emb_path, ids_path = directory / "embeddings.npy", directory / "ids.json"
    for path in (emb_path, ids_path):
        if not path.is_file():
            raise ValueError(
                f"embedding cache {directory} is marked complete but {path.name} is missing; delete it to rebuild"
            )
    embeddings = np.load(emb_path, mmap_mode="r" if mmap else None)
    ids = _read_json(ids_path)
    shape = (meta["n_docs"], meta["dim"])
    if embeddings.shape != shape or len(ids) != meta["n_docs"] or embeddings.dtype != np.float32:
        raise ValueError(
            f"embedding cache {directory} is corrupt: embeddings {embeddings.shape} {embeddings.dtype}, "
            f"{len(ids)} ids, meta says {shape}; delete it to rebuild"
        )
    if doc_ids is not None and ids != doc_ids:
        raise ValueError(
            f"embedding cache {directory} ids.json does not match the corpus doc ids; delete it to rebuild"
        )
    for stray in directory.glob("part-*.npy"):  # a kill between meta.json and the clean-up
        stray.unlink(missing_ok=True)
    return DocEmbeddings(ids=ids, embeddings=embeddings, meta=meta, path=directory)


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, array)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err.msg}); delete the cache directory to rebuild") from err


def _build_info(encoder: DocumentEncoder) -> dict[str, Any]:
    """How the vectors were computed (backend, dtype, batch size): recorded, never compared."""
    config = getattr(encoder, "config", None)
    info: dict[str, Any] = {"encoder_class": type(encoder).__name__}
    for name in ("backend", "dtype", "device", "batch_size", "padding_side", "server_url"):
        if config is not None and hasattr(config, name):
            info[name] = getattr(config, name)
    return info
