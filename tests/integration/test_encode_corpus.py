"""``run_src.encode_corpus`` and ``scripts/01_doc_embeddings.sh`` on the CHAMP corpus (89 concepts) with
all-MiniLM-L6-v2: a clean build, a reuse that touches nothing, a build killed after its first shard that
a rerun finishes with the same vectors, and the shell script end to end."""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.retrieval.corpus import load_corpus
from run_src import encode_corpus
from tests.conftest import REPO_ROOT, free_port

CACHE_FILES = ("embeddings.npy", "ids.json", "meta.json", "encode_config.json")
REAL_BUILD_ENCODER = encode_corpus.build_encoder  # before any test patches it


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Two cores are shared with other test workers."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _argv(model: Path, cache_root: Path, *extra: str) -> list[str]:
    return [
        "--model_path",
        str(model),
        "--split",
        "champ",
        "--source",
        "hf",
        "--text_format",
        "plain",
        "--pooling",
        "mean",
        "--cache_root",
        str(cache_root),
        "--encode_batch_size",
        "16",
        "--quiet",
        *extra,
    ]


def _cache(cache_root: Path, model: Path) -> Path:
    """The cache directory the one naming rule gives MiniLM with plain text and mean pooling."""
    from models.retrieval.encoder_flags import EncoderFlags, doc_cache_name

    name = doc_cache_name(EncoderFlags(model_path=str(model), pooling="mean", text_format="plain").encoder_config())
    assert name.startswith(f"{model.name}-plain-")
    return cache_root / "doc_emb" / name / "champ"


def _snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    return {name: ((directory / name).stat().st_mtime_ns, (directory / name).read_bytes()) for name in CACHE_FILES}


class SimulatedKill(BaseException):
    """Stands in for SIGKILL: a BaseException, so no ``except Exception`` on the way up can absorb it."""


class FaultInjectingEncoder:
    """Delegates to a real encoder and dies on document-encoding call ``fail_on_call`` (1-based)."""

    def __init__(self, inner: Any, fail_on_call: int | None) -> None:
        self._inner = inner
        self._fail_on_call = fail_on_call
        self.calls = 0

    def encode_documents(self, texts: Sequence[str], show_progress: bool = True) -> np.ndarray:
        self.calls += 1
        if self._fail_on_call is not None and self.calls >= self._fail_on_call:
            raise SimulatedKill(f"simulated kill on encode call {self.calls}")
        return self._inner.encode_documents(texts, show_progress=show_progress)

    def __getattr__(self, name: str) -> Any:  # dim, describe, config, close, ...
        return getattr(self._inner, name)

    def __enter__(self) -> FaultInjectingEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.close()


def _wrap_encoder(monkeypatch: pytest.MonkeyPatch, fail_on_call: int | None) -> list[FaultInjectingEncoder]:
    """Make ``encode_corpus`` build its real encoder inside a :class:`FaultInjectingEncoder`."""
    built: list[FaultInjectingEncoder] = []

    def build(config: Any) -> FaultInjectingEncoder:
        built.append(FaultInjectingEncoder(REAL_BUILD_ENCODER(config), fail_on_call))
        return built[-1]

    monkeypatch.setattr(encode_corpus, "build_encoder", build)
    return built


@pytest.fixture(scope="module")
def clean_build(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One uninterrupted build, shared by the tests below: (cache root, stdout)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("clean")
    out = io.StringIO()
    try:
        with redirect_stdout(out):
            assert encode_corpus.main(_argv(minilm_dir, root)) == 0
    finally:
        torch.set_num_threads(before)
    return root, out.getvalue()


def test_build_then_reuse(
    minilm_dir: Path,
    champ_mirror: Path,
    clean_build: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, stdout = clean_build
    directory = _cache(root, minilm_dir)
    embeddings = np.load(directory / "embeddings.npy")
    assert embeddings.shape == (89, 384) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert json.loads((directory / "ids.json").read_text()) == load_corpus(champ_mirror, "champ").doc_ids
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["n_docs"] == 89 and meta["pooling"] == "mean"
    recorded = json.loads((directory / "encode_config.json").read_text())
    assert recorded["settings"]["pooling"] == "mean" and recorded["settings"]["split"] == "champ"
    derived = recorded["derived"]
    assert derived["n_docs"] == 89 and derived["dim"] == 384 and derived["corpus_name"] == "champ"
    assert not list(directory.glob("part-*.npy"))
    assert "champ: built 89 docs, dim 384" in stdout

    before = _snapshot(directory)
    built = _wrap_encoder(monkeypatch, fail_on_call=None)
    start = time.perf_counter()
    assert encode_corpus.main(_argv(minilm_dir, root)) == 0
    assert time.perf_counter() - start < 30  # loading the model is all it does
    assert built[0].calls == 0  # nothing encoded
    assert _snapshot(directory) == before
    assert "champ: reused 89 docs" in capsys.readouterr().out


def test_caches_are_content_addressed(minilm_dir: Path, clean_build: tuple[Path, str],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A determining setting (the document length) gets a cache of its own beside the first; an informational
    one (the batch size, compiling) reuses it."""
    root, _ = clean_build
    first = _cache(root, minilm_dir)
    before = _snapshot(first)
    assert encode_corpus.main(_argv(minilm_dir, root, "--encode_batch_size", "4", "--encoder_compile")) == 0
    assert "champ: reused 89 docs" in capsys.readouterr().out and _snapshot(first) == before
    assert encode_corpus.main(_argv(minilm_dir, root, "--doc_max_len", "32")) == 0
    caches = sorted(p.parent.parent.name for p in (root / "doc_emb").glob("*/champ/meta.json"))
    assert len(caches) == 2 and first.parent.name in caches and _snapshot(first) == before


def test_killed_build_resumes_to_the_clean_result(
    minilm_dir: Path,
    clean_build: tuple[Path, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    killed_root = tmp_path / "killed"
    _wrap_encoder(monkeypatch, fail_on_call=2)  # the first 30-document shard is written, then the kill
    with pytest.raises(SimulatedKill):
        encode_corpus.main(_argv(minilm_dir, killed_root, "--shard_size", "30"))
    directory = _cache(killed_root, minilm_dir)
    assert sorted(p.name for p in directory.glob("part-*.npy")) == ["part-00000.npy"]
    assert json.loads((directory / "meta.json").read_text())["status"] == "building"
    assert not (directory / "embeddings.npy").exists() and not (directory / "encode_config.json").exists()

    # The rerun keeps the finished shard (2 of 3 shards left to encode), even with another --shard_size.
    built = _wrap_encoder(monkeypatch, fail_on_call=None)
    assert encode_corpus.main(_argv(minilm_dir, killed_root, "--shard_size", "1000")) == 0
    assert built[0].calls == 2
    assert "champ: resumed 89 docs" in capsys.readouterr().out
    assert not list(directory.glob("part-*.npy"))
    assert json.loads((directory / "encode_config.json").read_text())["derived"]["cache_shard_size"] == 30

    clean = _cache(clean_build[0], minilm_dir)
    # Shards change which texts share a padded batch, so equality is up to float rounding.
    np.testing.assert_allclose(np.load(directory / "embeddings.npy"), np.load(clean / "embeddings.npy"), atol=1e-5)
    assert (directory / "ids.json").read_bytes() == (clean / "ids.json").read_bytes()


def test_two_workers_one_killed_and_resumed_give_the_one_process_cache(
    minilm_dir: Path, clean_build: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "workers"
    shards = ("--shard_size", "20")  # 5 parts: worker 0 holds 0, 2, 4; worker 1 holds 1, 3
    _wrap_encoder(monkeypatch, fail_on_call=2)
    with pytest.raises(SimulatedKill):
        encode_corpus.main(_argv(minilm_dir, root, *shards, "--worker", "0/2"))
    directory = _cache(root, minilm_dir)
    assert sorted(p.name for p in directory.glob("part-*.npy")) == ["part-00000.npy"]
    built = _wrap_encoder(monkeypatch, fail_on_call=None)
    assert encode_corpus.main(_argv(minilm_dir, root, *shards, "--worker", "1/2")) == 0
    assert encode_corpus.main(_argv(minilm_dir, root, *shards, "--worker", "0/2")) == 0  # resumes at part 2
    assert [b.calls for b in built] == [2, 2]
    assert not (directory / "embeddings.npy").exists()  # workers never assemble
    assert encode_corpus.main(_argv(minilm_dir, root, *shards)) == 0
    assert built[-1].calls == 0  # every part was on disk: only concatenated
    clean = _cache(clean_build[0], minilm_dir)
    np.testing.assert_allclose(np.load(directory / "embeddings.npy"), np.load(clean / "embeddings.npy"), atol=1e-5)
    assert (directory / "ids.json").read_bytes() == (clean / "ids.json").read_bytes()
    assert not list(directory.glob("part-*.npy"))


def test_shell_script_end_to_end(minilm_dir: Path, champ_mirror: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RADER_ENV_FILE": str(tmp_path / "no.env"),
        "BRIGHT_CACHE_DIR": str(tmp_path / "cache"),
        "TEXT_FORMAT": "plain",
        "POOLING": "mean",
        "BATCH_SIZE": "16",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "ENCODE_GPUS": "0,1",  # two workers (on CPU here), then the assembling run
        "SHARD_SIZE": "30",
    }
    env.pop("BRIGHT_DIR", None)
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts/01_doc_embeddings.sh"), str(minilm_dir), "champ"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "worker 1/2 on GPU 1" in done.stderr and done.stdout.count("this worker's parts encoded") == 2
    assert "champ: resumed 89 docs, dim 384" in done.stdout
    directory = _cache(tmp_path / "cache", minilm_dir)
    assert np.load(directory / "embeddings.npy").shape == (89, 384)
    assert json.loads((directory / "encode_config.json").read_text())["settings"]["text_format"] == "plain"


def test_stage_6_and_the_dense_server_reuse_the_cache_stage_1_wrote(
    minilm_dir: Path, champ_mirror: Path, tmp_path: Path
) -> None:
    """One cache-naming rule: scripts/01 writes it, scripts/06 and a retriever server read it, nothing re-encodes
    (stage 1 compiled its encoder, which does not name the cache)."""
    env = {
        **os.environ,
        "RADER_ENV_FILE": str(tmp_path / "no.env"),
        "BRIGHT_DIR": str(champ_mirror),
        "BRIGHT_CACHE_DIR": str(tmp_path / "cache"),
        "TEXT_FORMAT": "plain",
        "POOLING": "mean",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "SERVER_RUN_DIR": str(tmp_path / "servers"),
    }
    stage1 = subprocess.run(["bash", str(REPO_ROOT / "scripts/01_doc_embeddings.sh"), str(minilm_dir), "champ"],
                            env={**env, "ENCODER_COMPILE": "1"}, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert stage1.returncode == 0, stage1.stderr[-3000:]
    assert "torch.compile (dynamic shapes)" in stage1.stderr
    directory = _cache(tmp_path / "cache", minilm_dir)
    assert json.loads((directory / "encode_config.json").read_text())["settings"]["encoder_compile"] is True
    stamp = (directory / "embeddings.npy").stat().st_mtime_ns

    eval_env = {**env, "TASKS": "champ", "QUERY_TYPES": "original", "OUTPUT_DIR": str(tmp_path / "bright")}
    stage6 = subprocess.run(["bash", str(REPO_ROOT / "scripts/06_eval.sh"), "minilm"], env=eval_env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert stage6.returncode == 0, stage6.stderr[-3000:]
    assert f"reusing document embeddings {directory} (89 docs" in stage6.stderr
    assert "doc embeddings" not in stage6.stderr  # no encoding progress bar: 0 documents encoded
    assert (directory / "embeddings.npy").stat().st_mtime_ns == stamp
    assert (tmp_path / "bright" / "minilm" / "original" / "champ" / "results.json").is_file()

    port = free_port()
    spec = f"rader={minilm_dir},{port},--text_format,plain,--pooling,mean"  # no --encode_missing: the cache must exist
    up = subprocess.run(["bash", str(REPO_ROOT / "servers/up.sh"), "--timeout", "300", spec], env={**env, "RADER_CORPUS": "champ"},
                        capture_output=True, text=True)  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        log = (tmp_path / "servers" / "rader.log").read_text()
        assert f"serving the stage-1 cache {directory}" in log and "doc embeddings" not in log
        assert (directory / "embeddings.npy").stat().st_mtime_ns == stamp
    finally:
        subprocess.run(["bash", str(REPO_ROOT / "servers/down.sh"), "--run-dir", str(tmp_path / "servers")], env=env)


def test_corpora_with_the_same_documents_share_one_cache(minilm_dir: Path, tmp_path: Path) -> None:
    """BRIGHT's aops and theoremqa_questions are one corpus: the second split encodes nothing and links."""
    mirror = tmp_path / "mirror" / "documents"
    mirror.mkdir(parents=True)
    rows = [{"id": f"d{i}", "content": f"Document {i} about lemma {i * 7 % 11}."} for i in range(12)]
    for split, docs in (("aops", rows), ("theoremqa_questions", rows), ("theoremqa_theorems", rows[:-1])):
        (mirror / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in docs))
    cache_root = tmp_path / "cache"
    argv = [*_argv(minilm_dir, cache_root, "--source", str(tmp_path / "mirror")), "--split", "aops",
            "--split", "theoremqa_questions", "--split", "theoremqa_theorems"]  # fmt: skip
    argv.remove("champ")
    argv.remove("--split")  # the fixture's champ split; ours follow
    out = io.StringIO()
    with redirect_stdout(out):
        assert encode_corpus.main(argv) == 0
    model_root = _cache(cache_root, minilm_dir).parent
    assert (model_root / "theoremqa_questions").is_symlink()
    assert os.readlink(model_root / "theoremqa_questions") == "aops"
    assert not (model_root / "theoremqa_theorems").is_symlink()  # one document fewer: a corpus of its own
    lines = out.getvalue().splitlines()
    assert any(line.startswith("theoremqa_questions: shared 12 docs") for line in lines), lines
    assert any(line.startswith("theoremqa_theorems: built 11 docs") for line in lines), lines
    before = _snapshot(model_root / "aops")
    with redirect_stdout(io.StringIO()):
        assert encode_corpus.main(argv) == 0  # a rerun reuses all three, the shared record included
    assert _snapshot(model_root / "aops") == before
