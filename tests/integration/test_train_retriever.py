"""Retriever training end to end on CPU: LoRA on SmolLM2-135M over a CHAMP-derived Tevatron set, resume,
merge, and the merged model in our encoder, sentence-transformers, the BRIGHT evaluation and vLLM.

The training set comes from the ``champ_mirror`` fixture (models/embedded/champ_training.py): a seeded
60% of the linked problems with their concepts as positives and same-category concepts as negatives; the
rest is held out. Resume and the distributed runs use a tiny random Qwen2 (2 layers, hidden 64) with
SmolLM2's tokenizer (the ``tiny_qwen`` fixture in tests/conftest.py), so they test the plumbing in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from models.embedded.champ_training import write_champ_training_set
from models.io_utils import atomic_write_jsonl, read_jsonl
from models.training.inference_settings import InferenceSettings
from tests.conftest import REPO_ROOT, free_port

PROBE_GROUPS = 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def champ_set(champ_mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """CHAMP split on disk plus a seeded 24-problem training subset and a small held-out mirror."""
    root = tmp_path_factory.mktemp("champ_train")
    split = write_champ_training_set(champ_mirror, root, train_fraction=0.6, seed=13)
    rows = list(read_jsonl(split.train_path))
    subset = [rows[i] for i in sorted(np.random.default_rng(7).choice(len(rows), 24, replace=False))]
    atomic_write_jsonl(root / "subset.jsonl", subset)
    heldout = list(read_jsonl(split.heldout_dir / "examples" / "champ.jsonl"))[:8]
    docs = list(read_jsonl(split.heldout_dir / "documents" / "champ.jsonl"))
    gold = {g for p in heldout for g in p["gold_ids"]}
    small_docs = [d for d in docs if d["id"] in gold] + [d for d in docs if d["id"] not in gold][:16]
    atomic_write_jsonl(root / "small" / "examples" / "champ.jsonl", heldout)
    atomic_write_jsonl(root / "small" / "documents" / "champ.jsonl", small_docs)
    assert not {p["query_id"] for p in subset} & set(split.heldout_ids)  # nothing held out is trained on
    return {"subset": root / "subset.jsonl", "small_mirror": root / "small", "root": root}


def _train_argv(output_dir: Path, model: Path, data: Path, *extra: str) -> list[str]:
    return [
        "--output_dir", str(output_dir), "--model_name_or_path", str(model), "--dataset_path", str(data),
        "--lora", "--pooling", "eos", "--append_eos_token", "--normalize", "--temperature", "0.01",
        "--query_prefix", "query: ", "--passage_prefix", "document: ",
        "--per_device_train_batch_size", "2", "--train_group_size", "3",
        "--query_max_len", "32", "--passage_max_len", "32", "--logging_steps", "1",
        "--use_cpu", "--report_to", "none", "--seed", "42", "--dataloader_num_workers", "0", *extra,
    ]  # fmt: skip


def _log(output_dir: Path) -> list[dict]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "loss" in entry]


@pytest.fixture(scope="module")
def trained(champ_set: dict[str, Path], smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from run_src.train_retriever import main

    out = tmp_path_factory.mktemp("rader_smollm2") / "run"
    argv = _train_argv(
        out, smollm2_dir, champ_set["subset"],
        "--learning_rate", "5e-4", "--max_steps", "8", "--warmup_steps", "2", "--save_steps", "4",
    )  # fmt: skip
    assert main(argv) == 0
    return out


def _probe_loss(encoder: torch.nn.Module, tokenizer, data: Path) -> float:
    """InfoNCE (temperature 0.01) on fixed groups of the training set, eval mode, no dropout."""
    from models.training.arguments import DataArguments, TextArguments
    from models.training.collator import ContrastiveCollator
    from models.training.dataset import TrainDataset, load_train_records
    from models.training.loss import info_nce_loss
    from models.training.model import ContrastiveEncoder

    data_args = DataArguments(dataset_path=str(data), train_group_size=3)
    text_args = TextArguments(query_prefix="query: ", passage_prefix="document: ", query_max_len=32,
                              passage_max_len=32, append_eos_token=True)  # fmt: skip
    dataset = TrainDataset(load_train_records(data_args), data_args, text_args, seed=42)
    batch = ContrastiveCollator(tokenizer, 32, 32, append_eos=True)([dataset[i] for i in range(PROBE_GROUPS)])
    model = ContrastiveEncoder(encoder, "eos", True, 0.01).eval()
    with torch.inference_mode():
        return info_nce_loss(model.encode(batch["query"]), model.encode(batch["passage"]), 0.01)[0].item()


@pytest.mark.slow
def test_lora_training_lowers_the_loss_and_writes_the_artefacts(trained: Path, champ_set, smollm2_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoTokenizer

    from models.training.model import load_backbone

    names = {p.name for p in trained.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "retriever_config.json", "train_config.json",
            "tokenizer.json", "training_args.bin", "_SUCCESS", "checkpoint-4", "checkpoint-8"} <= names  # fmt: skip
    settings = InferenceSettings.load(trained)
    assert (settings.pooling, settings.normalize, settings.append_eos_token) == ("eos", True, True)
    assert (settings.query_prefix, settings.passage_prefix, settings.text_format) == ("query: ", "document: ", "rader")
    assert settings.eos_token == "<|im_end|>" and settings.query_max_len == 32 and settings.hidden_size == 576
    adapter = json.loads((trained / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"], adapter["task_type"]) == (
        16, 64, 0.1, "FEATURE_EXTRACTION")  # fmt: skip
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "down_proj", "up_proj", "gate_proj"}
    config = json.loads((trained / "train_config.json").read_text())
    assert config["settings"]["train_group_size"] == 3 and config["derived"]["records"] == 24

    losses = [entry["loss"] for entry in _log(trained)]
    assert len(losses) == 8
    # Steps 1-2 run at (almost) zero learning rate: the base model's loss. The last steps must be far lower.
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:2]), losses
    tokenizer = AutoTokenizer.from_pretrained(str(trained))
    before = _probe_loss(load_backbone(str(smollm2_dir)), tokenizer, champ_set["subset"])
    after = _probe_loss(PeftModel.from_pretrained(load_backbone(str(smollm2_dir)), str(trained)), tokenizer,
                        champ_set["subset"])  # fmt: skip
    print(f"probe InfoNCE before {before:.3f} after {after:.3f}; step losses {losses}")
    assert after < 0.5 * before


def test_non_empty_output_dir_is_refused(tmp_path: Path, champ_set) -> None:
    from run_src.train_retriever import main

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep")
    assert main(_train_argv(tmp_path / "out", tmp_path / "no-model", champ_set["subset"], "--max_steps", "1")) == 2
    assert (tmp_path / "out" / "notes.txt").read_text() == "keep"


# ------------------------------------------------------------------------------------------------ tiny model


def test_resume_continues_step_count_schedule_and_weights(tiny_qwen: Path, champ_set, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from models.training.trainer import ds_warmup_decay_log_factor
    from run_src.train_retriever import main

    schedule = ["--learning_rate", "1e-3", "--max_steps", "6", "--warmup_steps", "2", "--save_steps", "3",
                "--lr_schedule", "ds_warmup_decay_log"]  # fmt: skip
    full = tmp_path / "full"
    assert main(_train_argv(full, tiny_qwen, champ_set["subset"], *schedule)) == 0
    # A run killed after its step-3 checkpoint: only that checkpoint survives.
    killed = tmp_path / "killed"
    killed.mkdir()
    shutil.copytree(full / "checkpoint-3", killed / "checkpoint-3")
    assert main(_train_argv(killed, tiny_qwen, champ_set["subset"], *schedule)) == 2  # non-empty: refused
    assert main(_train_argv(killed, tiny_qwen, champ_set["subset"], *schedule, "--overwrite_output_dir")) == 0

    resumed_log, full_log = _log(killed), _log(full)
    assert [e["step"] for e in resumed_log] == [1, 2, 3, 4, 5, 6]  # history kept, then steps 4..6
    for got, want in zip(resumed_log[3:], full_log[3:], strict=True):
        assert got["learning_rate"] == pytest.approx(want["learning_rate"], rel=1e-9)
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)
    # HF logs the rate the step ran with: DeepSpeed's log warm-up (W = 2) then linear decay over 6 steps.
    assert [e["learning_rate"] for e in full_log] == pytest.approx(
        [1e-3 * ds_warmup_decay_log_factor(step, 2, 6) for step in range(6)]
    )
    assert [e["learning_rate"] for e in full_log] == pytest.approx([0.0, 0.0, 1e-3, 1e-3, 7.5e-4, 5e-4])
    assert json.loads((killed / "_SUCCESS").read_text())["resumed_from"].endswith("checkpoint-3")
    a, b = load_file(str(full / "adapter_model.safetensors")), load_file(str(killed / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(k.startswith("base_model.model.layers.") for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
    # The directory now holds a run's train_config.json: resuming it with another learning rate is refused,
    # naming the flag; another logging interval (informational) is not.
    again = [*_train_argv(killed, tiny_qwen, champ_set["subset"], *schedule, "--overwrite_output_dir")]
    assert main([*again, "--learning_rate", "2e-3"]) == 2
    assert main([*again, "--logging_steps", "2"]) == 0


def _launch(cmd: list[str], log: Path, timeout_s: int = 900) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO_ROOT)}
    with open(log, "w") as handle:
        done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout_s)
    if done.returncode != 0:
        pytest.fail(f"{cmd[:3]} failed ({done.returncode}):\n{log.read_text()[-4000:]}")


@pytest.mark.slow
def test_deepspeed_zero3_on_cpu_matches_ddp_with_the_emulated_schedule(tiny_qwen: Path, champ_set, tmp_path: Path) -> None:
    """Two CPU processes: DeepSpeed ZeRO-3 (the paper's config, its WarmupDecayLR) and plain DDP with our
    emulation of that schedule must train identically; both gather passages across the two ranks."""
    bin_dir = Path(sys.executable).parent
    common = ["--learning_rate", "1e-3", "--max_steps", "4", "--warmup_steps", "2", "--save_steps", "2"]
    ds_out, ddp_out = tmp_path / "zero3", tmp_path / "ddp"
    _launch(
        [str(bin_dir / "deepspeed"), "--num_gpus", "2", "--master_port", str(free_port()), "--module",
         "run_src.train_retriever", *_train_argv(ds_out, tiny_qwen, champ_set["subset"], *common),
         "--deepspeed", "tevatron_configs/ds_zero3_config.json"],
        tmp_path / "zero3.log",
    )  # fmt: skip
    _launch(
        [str(bin_dir / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()), "-m",
         "run_src.train_retriever", *_train_argv(ddp_out, tiny_qwen, champ_set["subset"], *common),
         "--lr_schedule", "ds_warmup_decay_log", "--optim", "adamw_torch"],
        tmp_path / "ddp.log",
    )  # fmt: skip
    config = json.loads((ds_out / "train_config.json").read_text())
    assert config["derived"]["world_size"] == 2 and config["derived"]["deepspeed_scheduler"]
    assert (ds_out / "checkpoint-2" / "global_step2").is_dir()  # DeepSpeed's own optimizer shards
    ds_losses = [e["loss"] for e in _log(ds_out)]
    ddp_losses = [e["loss"] for e in _log(ddp_out)]
    assert ds_losses == pytest.approx(ddp_losses, rel=1e-4)
    from safetensors.torch import load_file

    a, b = load_file(str(ds_out / "adapter_model.safetensors")), load_file(str(ddp_out / "adapter_model.safetensors"))
    assert all(t.numel() > 0 for t in a.values())  # ZeRO-3 shards were gathered before saving
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-5)


# ------------------------------------------------------------------------------------------------ merge


@pytest.fixture(scope="module")
def merged(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from run_src.merge_lora import main

    out = tmp_path_factory.mktemp("merged") / "rader-smollm2"
    assert main(["--adapter", str(trained), "--output_dir", str(out), "--dtype", "float32"]) == 0
    return out


@pytest.mark.slow
def test_a_merge_rerun_reuses_the_same_merge_and_refuses_another(merged: Path, trained: Path) -> None:
    from run_src.merge_lora import main

    stamp = (merged / "_SUCCESS").stat().st_mtime_ns
    assert main(["--adapter", str(trained), "--output_dir", str(merged), "--dtype", "float32"]) == 0
    assert (merged / "_SUCCESS").stat().st_mtime_ns == stamp  # reused, not merged again
    assert main(["--adapter", str(trained), "--output_dir", str(merged), "--dtype", "bfloat16"]) == 2


TEXTS_Q = ["How many strings of length 5 have strictly increasing digits?", "Find all primes p with p^2 + 2 prime."]
TEXTS_D = ["rule of product: if there are m ways and then n ways, there are mn ways in all.",
           "Fermat's little theorem: a^p is congruent to a modulo a prime p."]  # fmt: skip


@pytest.mark.slow
def test_merged_model_gives_the_adapter_vectors_in_every_loader(merged: Path, trained: Path, smollm2_dir: Path) -> None:
    from peft import PeftModel
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from models.retrieval.encoders import build_encoder
    from models.training.collator import ContrastiveCollator
    from models.training.model import ContrastiveEncoder, load_backbone

    report = json.loads((merged / "merge_report.json").read_text())
    assert report["finite"] and report["min_cosine"] > 0.999
    assert json.loads((merged / "config.json").read_text())["architectures"] == ["LlamaModel"]
    settings = InferenceSettings.load(merged)
    assert settings.merged and settings.dtype == "float32"

    # Reference: the unmerged adapter through the training model's own encode().
    tokenizer = AutoTokenizer.from_pretrained(str(trained))
    collate = ContrastiveCollator(tokenizer, 512, 512, append_eos=True)
    reference = ContrastiveEncoder(PeftModel.from_pretrained(load_backbone(str(smollm2_dir)), str(trained)),
                                   "eos", True, 0.01).eval()  # fmt: skip
    with torch.inference_mode():
        ref_q = reference.encode(collate.encode(["query: " + t for t in TEXTS_Q], 512)).numpy()
        ref_d = reference.encode(collate.encode(["document: " + t for t in TEXTS_D], 512)).numpy()

    with build_encoder(settings.encoder_config(merged)) as ours:  # what evaluate_bright builds
        q, d = ours.encode_queries(TEXTS_Q), ours.encode_documents(TEXTS_D, show_progress=False)
    st = SentenceTransformer(str(merged), device="cpu")
    st_q, st_d = st.encode_query(TEXTS_Q), st.encode_document(TEXTS_D)
    for got in (q, st_q):
        assert np.sum(got * ref_q, axis=1).min() > 0.999
    for got in (d, st_d):
        assert np.sum(got * ref_d, axis=1).min() > 0.999
    # The base model gives other vectors: the comparison above is not vacuous.
    with build_encoder(settings.encoder_config(smollm2_dir)) as base:
        assert np.sum(base.encode_queries(TEXTS_Q) * ref_q, axis=1).max() < 0.99


@pytest.mark.slow
def test_merged_model_runs_in_the_bright_evaluation(merged: Path, champ_set, tmp_path: Path) -> None:
    from run_src.evaluate_bright import main

    argv = ["--task", "champ", "--model", "rader", "--model_path", str(merged), "--bright_dir",
            str(champ_set["small_mirror"]), "--output_dir", str(tmp_path), "--cache_root", str(tmp_path / "cache")]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((tmp_path / merged.name / "original" / "champ" / "results.json").read_text())
    assert 0.0 < results["NDCG@10"] <= 1.0
    assert len(json.loads((tmp_path / merged.name / "original" / "champ" / "per_query.json").read_text())) == 8


@pytest.fixture
def merged_vllm_server(merged: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "SERVER_RUN_DIR": str(tmp_path), "RADER_ENV_FILE": str(tmp_path / "no.env"),
           "EMBEDDING_SERVED_NAME": "rader-smollm2", "EMBEDDING_MAX_MODEL_LEN": "512"}  # fmt: skip
    up = subprocess.run(["bash", str(REPO_ROOT / "servers/up.sh"), "--timeout", "600", f"embedding={merged},{port}"],
                        env=env, capture_output=True, text=True)  # fmt: skip
    if up.returncode != 0:
        pytest.fail(f"servers/up.sh failed ({up.returncode}):\n{up.stderr[-4000:]}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run(["bash", str(REPO_ROOT / "servers/down.sh"), "--run-dir", str(tmp_path)], env=env, check=True)


@pytest.mark.slow
def test_merged_model_in_the_vllm_embedding_server(merged_vllm_server: str, merged: Path) -> None:
    from models.retrieval.encoders import build_encoder

    settings = InferenceSettings.load(merged)
    remote_config = settings.encoder_config(merged, backend="vllm-server", server_url=merged_vllm_server,
                                            served_model_name="rader-smollm2", timeout_s=120)  # fmt: skip
    with build_encoder(settings.encoder_config(merged)) as local, build_encoder(remote_config) as remote:
        remote.check_health()
        for side in ("queries", "documents"):
            texts = TEXTS_Q if side == "queries" else TEXTS_D
            a = local.encode_queries(texts) if side == "queries" else local.encode_documents(texts, show_progress=False)
            b = remote.encode_queries(texts) if side == "queries" else remote.encode_documents(texts, show_progress=False)
            assert np.sum(a * b, axis=1).min() > 0.999, side
