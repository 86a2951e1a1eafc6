"""Embedded assets: marker-verified folder preparation and the real SmolLM2 / MiniLM models.

The ``prepare_folder`` tests use a fake builder and run in milliseconds. The SmolLM2 tests
convert the wheel's GGUF into a temporary directory once per module (one to two minutes on two
cores) and compare greedy generations with the GGUF-loaded model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from models.embedded import assets
from models.embedded.assets import MARKER_NAME, marker_problem, prepare_folder

# --------------------------------------------------------------------------- prepare_folder (fast)


class CountingBuilder:
    """Writes two small files; counts calls; optionally sleeps or fails halfway."""

    def __init__(self, sleep_s: float = 0.0, fail: bool = False) -> None:
        self.calls = 0
        self.sleep_s = sleep_s
        self.fail = fail
        self._lock = threading.Lock()

    def __call__(self, out_dir: Path) -> None:
        with self._lock:
            self.calls += 1
        (out_dir / "weights.bin").write_bytes(b"\x00" * 1024)
        time.sleep(self.sleep_s)
        if self.fail:
            raise RuntimeError("killed halfway")
        (out_dir / "sub").mkdir()
        (out_dir / "sub" / "config.json").write_text('{"a": 1}\n', encoding="utf-8")


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF fake weights")
    return path


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_prepare_folder_builds_once_and_records_every_file(tmp_path: Path, source: Path) -> None:
    build = CountingBuilder()
    target = tmp_path / "assets" / "thing"
    assert prepare_folder(target, "thing", source, build) == target
    marker = json.loads((target / MARKER_NAME).read_text(encoding="utf-8"))
    assert set(marker["files"]) == {"weights.bin", "sub/config.json"}
    assert marker["source"]["size"] == source.stat().st_size
    assert marker_problem(target, "thing", source, verify_hashes=True) is None

    before = _mtimes(target)
    prepare_folder(target, "thing", source, build)
    assert build.calls == 1
    assert _mtimes(target) == before
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".thing.tmp-")] == []


def test_failed_build_leaves_no_folder(tmp_path: Path, source: Path) -> None:
    target = tmp_path / "thing"
    with pytest.raises(RuntimeError, match="killed halfway"):
        prepare_folder(target, "thing", source, CountingBuilder(fail=True))
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if "thing.tmp-" in p.name] == []


def test_leftovers_of_a_killed_build_are_removed(tmp_path: Path, source: Path) -> None:
    stale = tmp_path / ".thing.tmp-abc123"
    stale.mkdir()
    (stale / "weights.bin").write_bytes(b"half")
    target = prepare_folder(tmp_path / "thing", "thing", source, CountingBuilder())
    assert not stale.exists()
    assert marker_problem(target, "thing", source) is None


@pytest.mark.parametrize(
    "damage",
    ["delete_marker", "garble_marker", "edit_marker_hash", "extra_file", "change_source", "bump_builder"],
)
def test_damaged_folder_is_rebuilt_with_a_warning(
    tmp_path: Path, source: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    build = CountingBuilder()
    target = prepare_folder(tmp_path / "thing", "thing", source, build)
    marker_path = target / MARKER_NAME
    version = 1
    if damage == "delete_marker":
        marker_path.unlink()
    elif damage == "garble_marker":
        marker_path.write_text("{not json", encoding="utf-8")
    elif damage == "edit_marker_hash":
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
        marker["files"]["weights.bin"]["sha256"] = "0" * 64
        marker_path.write_text(json.dumps(marker), encoding="utf-8")
    elif damage == "extra_file":
        (target / "stray.txt").write_text("x", encoding="utf-8")
    elif damage == "change_source":
        source.write_bytes(b"GGUF other weights")
    elif damage == "bump_builder":
        version = 2
    with caplog.at_level(logging.WARNING, logger="models.embedded.assets"):
        prepare_folder(target, "thing", source, build, builder_version=version)
    assert build.calls == 2
    assert any("rebuilding" in r.getMessage() for r in caplog.records)
    assert marker_problem(target, "thing", source, builder_version=version, verify_hashes=True) is None
    assert not (target / "stray.txt").exists()


def test_content_change_with_preserved_mtime_needs_verify_hashes(tmp_path: Path, source: Path) -> None:
    target = prepare_folder(tmp_path / "thing", "thing", source, CountingBuilder())
    weights = target / "weights.bin"
    stat = weights.stat()
    weights.write_bytes(b"\x01" * 1024)  # same size
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert marker_problem(target, "thing", source) is None  # the cheap check trusts size + mtime
    assert "weights.bin" in (marker_problem(target, "thing", source, verify_hashes=True) or "")


def test_concurrent_callers_build_once(tmp_path: Path, source: Path) -> None:
    build = CountingBuilder(sleep_s=0.5)
    target = tmp_path / "thing"
    errors: list[BaseException] = []

    def call() -> None:
        try:
            prepare_folder(target, "thing", source, build)
        except BaseException as err:  # surfaced below; a thread cannot fail the test itself
            errors.append(err)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert build.calls == 1
    assert marker_problem(target, "thing", source, verify_hashes=True) is None


# --------------------------------------------------------------------------- real models (slow)

PROMPT = [{"role": "user", "content": "What is the sum of the first five positive integers?"}]
NEW_TOKENS = 8


@pytest.fixture(scope="module")
def converted_assets(smollm2_dir: Path) -> Path:
    """The assets dir of the session's conversion (the real converter runs at most once per session)."""
    assert smollm2_dir == assets.smollm2_dir(smollm2_dir.parent.parent)
    return smollm2_dir.parent.parent


@pytest.mark.slow
def test_converted_folder_is_servable(converted_assets: Path) -> None:
    folder = assets.smollm2_dir(converted_assets)
    assert (
        marker_problem(
            folder,
            assets.SMOLLM2_DIR_NAME,
            assets.smollm2_gguf_path(),
            assets.SMOLLM2_CONVERTER_VERSION,
            verify_hashes=True,
        )
        is None
    )
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config
    assert config["dtype"] == config["torch_dtype"] == "float32"
    assert config["tie_word_embeddings"] is True
    for name in ("model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (folder / name).is_file(), name

    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
        keys = set(weights.keys())
        assert "lm_head.weight" not in keys  # tied to the embeddings, as vLLM expects
        assert str(weights.get_tensor("model.embed_tokens.weight").dtype) == "torch.float32"


@pytest.mark.slow
def test_converted_model_generates_like_the_gguf(converted_assets: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = assets.smollm2_dir(converted_assets)
    gguf = assets.smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token is not None
    assert tokenizer.chat_template
    inputs = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    prompt_len = inputs["input_ids"].shape[1]

    def greedy(model: torch.nn.Module) -> list[int]:
        with torch.no_grad():
            out = model.generate(
                **inputs,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        return out[0, prompt_len:].tolist()

    converted = AutoModelForCausalLM.from_pretrained(folder)
    assert converted.dtype == torch.float32
    got = greedy(converted)
    del converted
    reference = greedy(AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name))
    assert len(got) == NEW_TOKENS
    assert got == reference
    assert tokenizer.decode(got).strip()


@pytest.mark.slow
def test_second_prepare_is_fast_and_writes_nothing(converted_assets: Path) -> None:
    folder = assets.smollm2_dir(converted_assets)
    before = _mtimes(folder)
    started = time.monotonic()
    assert assets.prepare_smollm2(converted_assets) == folder
    assert time.monotonic() - started < 5.0
    assert _mtimes(folder) == before


@pytest.mark.slow
def test_corrupt_marker_rebuilds_the_real_folder(
    converted_assets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A copy keeps the module's folder intact; the "conversion" copies the pristine files so the
    # test checks prepare_smollm2's rebuild path without paying for a second real conversion.
    pristine = assets.smollm2_dir(converted_assets)
    copy_assets = tmp_path / "assets"
    folder = assets.smollm2_dir(copy_assets)
    shutil.copytree(pristine, folder)
    assert assets.prepare_smollm2(copy_assets) == folder  # copy2 keeps mtimes: still valid

    marker_path = folder / MARKER_NAME
    marker = json.loads(marker_path.read_text(encoding="utf-8"))
    marker["files"]["config.json"]["sha256"] = "0" * 64
    marker_path.write_text(json.dumps(marker), encoding="utf-8")

    calls: list[Path] = []

    def fake_convert(gguf_path: Path, out_dir: Path) -> None:
        calls.append(gguf_path)
        for path in pristine.iterdir():
            if path.name != MARKER_NAME:
                shutil.copy2(path, out_dir / path.name)

    monkeypatch.setattr(assets, "convert_smollm2_gguf", fake_convert)
    with caplog.at_level(logging.WARNING, logger="models.embedded.assets"):
        assets.prepare_smollm2(copy_assets)
    assert calls == [assets.smollm2_gguf_path()]
    assert any("rebuilding" in r.getMessage() and "modified" in r.getMessage() for r in caplog.records)
    assert (
        marker_problem(
            folder,
            assets.SMOLLM2_DIR_NAME,
            assets.smollm2_gguf_path(),
            assets.SMOLLM2_CONVERTER_VERSION,
            verify_hashes=True,
        )
        is None
    )


def test_minilm_folder_embeds_to_384_dims() -> None:
    from sentence_transformers import SentenceTransformer

    path = assets.minilm_path()
    assert (path / "modules.json").is_file()
    model = SentenceTransformer(str(path), device="cpu")
    embedding = model.encode("Fermat's little theorem: a^p ≡ a mod p.")
    assert embedding.shape == (384,)
