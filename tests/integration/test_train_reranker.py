"""Reranker training end to end on CPU: ``python -m run_src.train_reranker`` on a CHAMP-derived Tevatron set.

The training set is a seeded 24-problem subset of the CHAMP split of models/embedded/champ_training.py
(problem -> linked concepts positive, same-category concepts negative). The plumbing runs on the tiny random
Qwen2 of tests/conftest.py (seconds per run): the full-backbone run must learn (probe loss and top-1 accuracy
on fixed training groups), its output directory must give the trained model's scores through
``PointwiseReranker.from_pretrained`` and through the ``rerank`` stage, and a LoRA run killed after a
checkpoint must resume to the uninterrupted run's steps, learning rates, losses and weights. The slow tests
train LoRA under DeepSpeed ZeRO-3 in two CPU processes (gathered weights saved, same as DDP) and on
SmolLM2-135M, the embedded default's backbone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.embedded.champ_training import write_champ_training_set
from models.io_utils import atomic_write_jsonl, read_jsonl
from models.reranking.pointwise import HEAD_WEIGHTS_NAME, RERANKER_CONFIG_NAME, PointwiseReranker, RerankerFormat
from tests.conftest import REPO_ROOT, free_port

GROUP = 4
MAX_LEN = 160  # CHAMP pairs are ~75 tokens (90th percentile ~150) with SmolLM2's tokenizer


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def champ_subset(champ_mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 seeded training problems of the CHAMP split (positives linked concepts, 8 negatives each)."""
    root = tmp_path_factory.mktemp("champ_rerank")
    split = write_champ_training_set(champ_mirror, root, train_fraction=0.6, seed=13)
    rows = list(read_jsonl(split.train_path))
    subset = [rows[i] for i in sorted(np.random.default_rng(7).choice(len(rows), 24, replace=False))]
    return atomic_write_jsonl(root / "subset.jsonl", subset)


def _argv(output_dir: Path, model: Path, data: Path, *extra: str) -> list[str]:
    return [
        "--output_dir", str(output_dir), "--model_name_or_path", str(model), "--dataset_path", str(data),
        "--query_prefix", "query: ", "--passage_prefix", "document: ", "--append_eos_token",
        "--per_device_train_batch_size", "4", "--train_group_size", str(GROUP), "--rerank_max_len", str(MAX_LEN),
        "--logging_steps", "1", "--use_cpu", "--report_to", "none", "--seed", "42", "--dataloader_num_workers", "0",
        *extra,
    ]  # fmt: skip


def _log(output_dir: Path) -> list[dict]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "loss" in entry]


@pytest.fixture(scope="module")
def trained(tiny_qwen: Path, champ_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """Full-backbone training of the tiny Qwen2: 30 steps of 4 groups (5 epochs over 24 problems)."""
    from run_src.train_reranker import run

    out = tmp_path_factory.mktemp("reranker_tiny") / "run"
    argv = _argv(out, tiny_qwen, champ_subset, "--learning_rate", "3e-3", "--max_steps", "30", "--warmup_steps", "2",
                 "--save_steps", "15")  # fmt: skip
    result = run(argv)
    assert result.exit_code == 0
    return out, result.trainer


def _probe(model: PointwiseReranker, data: Path, group_size: int = GROUP) -> tuple[float, float]:
    """Grouped CE and top-1 accuracy on every training problem's epoch-0 group, eval mode."""
    from models.training.arguments import RerankerDataArguments
    from models.training.dataset import RerankerTrainDataset, load_train_records
    from models.training.loss import grouped_ce_loss

    args = RerankerDataArguments(dataset_path=str(data), train_group_size=group_size)
    dataset = RerankerTrainDataset(load_train_records(args), args, seed=42)
    groups = [dataset[i] for i in range(len(dataset))]
    queries = [query for query, group in groups for _ in group]
    texts = [text for _, group in groups for _, text in group]
    scores = torch.tensor(model.score_pairs(queries, texts, batch_size=32)).view(-1, group_size)
    return grouped_ce_loss(scores, group_size).item(), (scores.argmax(dim=1) == 0).float().mean().item()


def test_training_learns_and_writes_the_artefacts(trained, tiny_qwen: Path, champ_subset: Path) -> None:
    out, _ = trained
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", HEAD_WEIGHTS_NAME, RERANKER_CONFIG_NAME, "tokenizer.json",
            "train_config.json", "training_args.bin", "trainer_state.json", "_SUCCESS", "checkpoint-15",
            "checkpoint-30"} <= names  # fmt: skip
    saved = json.loads((out / RERANKER_CONFIG_NAME).read_text())
    assert saved["backbone_format"] == "full" and saved["eos_token"] == "<|im_end|>"
    assert saved["format"] == {"query_prefix": "query: ", "passage_prefix": "document: ", "separator": " ",
                               "max_len": MAX_LEN, "append_eos": True, "pad_to_multiple_of": 16}  # fmt: skip
    config = json.loads((out / "train_config.json").read_text())
    assert config["settings"]["train_group_size"] == GROUP and config["derived"]["records"] == 24
    assert config["settings"]["lora_r"] == 8 and config["settings"]["rerank_max_len"] == MAX_LEN
    assert config["derived"]["reranker"]["format"] == saved["format"]
    success = json.loads((out / "_SUCCESS").read_text())
    assert success["global_step"] == 30 and success["resumed_from"] is None

    losses = [entry["loss"] for entry in _log(out)]
    assert len(losses) == 30 and abs(losses[0] - np.log(GROUP)) < 0.3  # a new head starts near chance
    # The model at step 0: same backbone, head drawn with --seed.
    before = _probe(PointwiseReranker.from_backbone(str(tiny_qwen), fmt=RerankerFormat(max_len=MAX_LEN), seed=42),
                    champ_subset)  # fmt: skip
    after = _probe(PointwiseReranker.from_pretrained(out), champ_subset)
    print(f"probe grouped CE / top-1: before {before}, after {after}; step losses {np.round(losses, 3).tolist()}")
    assert after[0] < 0.8 * before[0]
    assert after[1] >= before[1] + 0.25 and after[1] >= 0.5  # chance is 1/4


def test_saved_directory_scores_like_the_trained_model(trained) -> None:
    out, trainer = trained
    in_memory = trainer.model
    queries = ["How many ways to seat 5 people at a round table?", "Find the remainder of 2^100 mod 7."] * 2
    passages = ["Circular permutations: n objects in a circle in (n-1)! ways.", "Fermat's little theorem.",
                "Fermat's little theorem.", "Circular permutations: n objects in a circle in (n-1)! ways."]  # fmt: skip
    expected = in_memory.score_pairs(queries, passages)
    for directory in (out, out / "checkpoint-30"):
        loaded = PointwiseReranker.from_pretrained(directory)
        assert loaded.score_pairs(queries, passages) == pytest.approx(expected, abs=1e-5)
    initial = PointwiseReranker.from_pretrained(out / "checkpoint-15").score_pairs(queries, passages)
    assert max(abs(a - b) for a, b in zip(initial, expected, strict=True)) > 1e-3  # the comparison has teeth


def test_rerank_stage_uses_the_trained_directory(trained, champ_mirror: Path, tmp_path: Path) -> None:
    from models.retrieval.corpus import load_corpus, load_examples
    from run_src import rerank

    out, trainer = trained
    examples = [e for e in load_examples(str(champ_mirror), "champ") if e.gold_ids][:2]
    corpus = load_corpus(str(champ_mirror), "champ")
    others = [d for d in corpus.doc_ids if all(d not in e.gold_ids for e in examples)][:4]
    first = {e.query_id: {d: 10.0 - i for i, d in enumerate([e.gold_ids[0], *others])} for e in examples}
    (tmp_path / "first.json").write_text(json.dumps(first))
    argv = ["--task", "champ", "--bright_dir", str(champ_mirror), "--first_stage", str(tmp_path / "first.json"),
            "--first_stage_model", "hand", "--output_dir", str(tmp_path / "out"), "--top_k", "5",
            "--reranker", "pointwise", "--model", str(out), "--reranker_name", "tiny"]  # fmt: skip
    assert rerank.main(argv) == 0
    run_dir = tmp_path / "out" / "hand+tiny" / "original" / "champ"
    scores = json.loads((run_dir / "rerank_scores.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["derived"]["reranker"]["backbone_format"] == "full"
    for example in examples:
        doc_ids = list(first[example.query_id])
        expected = trainer.model.score_pairs([example.query] * 5, [corpus.text_of(d) for d in doc_ids])
        assert [scores[example.query_id][d] for d in doc_ids] == pytest.approx(expected, abs=1e-4)


# ------------------------------------------------------------------------------------------------ resume, errors


def test_lora_resume_continues_step_count_schedule_and_weights(tiny_qwen: Path, champ_subset: Path,
                                                               tmp_path: Path) -> None:  # fmt: skip
    from safetensors.torch import load_file

    from models.training.trainer import ds_warmup_decay_log_factor
    from run_src.train_reranker import run

    schedule = ["--lora", "--learning_rate", "1e-3", "--max_steps", "6", "--warmup_steps", "2", "--save_steps", "3",
                "--lr_schedule", "ds_warmup_decay_log", "--per_device_train_batch_size", "2",
                "--rerank_max_len", "96", "--gradient_checkpointing"]  # fmt: skip
    full = tmp_path / "full"
    uninterrupted = run(_argv(full, tiny_qwen, champ_subset, *schedule))
    assert uninterrupted.exit_code == 0
    # A run killed after its step-3 checkpoint: only that checkpoint survives.
    killed = tmp_path / "killed"
    killed.mkdir()
    shutil.copytree(full / "checkpoint-3", killed / "checkpoint-3")
    before = sorted(str(p.relative_to(killed)) for p in killed.rglob("*"))
    assert run(_argv(killed, tiny_qwen, champ_subset, *schedule)).exit_code == 2  # non-empty: refused, untouched
    assert sorted(str(p.relative_to(killed)) for p in killed.rglob("*")) == before
    resumed = run(_argv(killed, tiny_qwen, champ_subset, *schedule, "--overwrite_output_dir"))
    assert resumed.exit_code == 0

    resumed_log, full_log = _log(killed), _log(full)
    assert [e["step"] for e in resumed_log] == [1, 2, 3, 4, 5, 6]  # history kept, then steps 4..6
    for got, want in zip(resumed_log[3:], full_log[3:], strict=True):
        assert got["learning_rate"] == pytest.approx(want["learning_rate"], rel=1e-9)
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)
    assert [e["learning_rate"] for e in full_log] == pytest.approx(
        [1e-3 * ds_warmup_decay_log_factor(step, 2, 6) for step in range(6)]
    )
    assert json.loads((killed / "_SUCCESS").read_text())["resumed_from"].endswith("checkpoint-3")
    adapter = json.loads((full / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (8, 64, 0.1)
    for name in ("adapter_model.safetensors", HEAD_WEIGHTS_NAME):
        a, b = load_file(str(full / name)), load_file(str(killed / name))
        assert a.keys() == b.keys() and all(t.numel() > 0 for t in a.values())
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
    lora_weights = load_file(str(full / "adapter_model.safetensors"))
    assert all(k.startswith("base_model.model.layers.") for k in lora_weights)
    # LoRA B starts at zero: non-zero B means gradients reached the adapter through gradient checkpointing.
    assert all(t.abs().max() > 0 for k, t in lora_weights.items() if "lora_B" in k)

    # The LoRA directory on its base model scores like the trained model in memory.
    queries, passages = ["query one", "query two"], ["a passage about primes", "a passage about circles"]
    expected = resumed.trainer.model.score_pairs(queries, passages)
    assert PointwiseReranker.from_pretrained(killed).score_pairs(queries, passages) == pytest.approx(expected, abs=1e-5)
    assert PointwiseReranker.from_pretrained(killed, merge_lora=True).score_pairs(queries, passages) == pytest.approx(
        expected, abs=1e-4
    )

    # Partitioned (ZeRO-3, not gathered) weights are refused instead of saved.
    trainer = resumed.trainer
    with pytest.raises(RuntimeError, match="stage3_gather_16bit_weights_on_model_save"):
        trainer._save(str(tmp_path / "bad0"), state_dict={})
    state = trainer.model.state_dict()
    with pytest.raises(ValueError, match="head weight has shape"):
        trainer._save(str(tmp_path / "bad1"), state_dict={**state, "head.weight": torch.empty(0)})
    empty_lora = {k: (torch.empty(0) if "lora_" in k else v) for k, v in state.items()}
    with pytest.raises(RuntimeError, match="saved tensors are empty"):
        trainer._save(str(tmp_path / "bad2"), state_dict=empty_lora)


def test_bad_input_is_refused_before_any_work(tiny_qwen: Path, champ_subset: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from run_src.train_reranker import main

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep")
    assert main(_argv(tmp_path / "out", tiny_qwen, champ_subset, "--max_steps", "1")) == 2
    assert (tmp_path / "out" / "notes.txt").read_text() == "keep"
    assert "--overwrite_output_dir" in capsys.readouterr().err

    cases = [
        (["--dataset_path", str(tmp_path / "missing.jsonl")], "missing.jsonl does not exist"),
        (["--train_group_size", "1"], "--train_group_size 1"),
        (["--rerank_max_len", "1"], "--rerank_max_len"),
        (["--model_name_or_path", str(tmp_path / "no-model")], "no-model"),
    ]
    for extra, message in cases:
        out = tmp_path / f"new-{len(message)}"
        assert main([*_argv(out, tiny_qwen, champ_subset, "--max_steps", "1"), *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
        assert not out.exists()


# ------------------------------------------------------------------------------------------------ distributed


def _launch(cmd: list[str], log: Path, timeout_s: int = 900) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO_ROOT)}
    with open(log, "w") as handle:
        done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout_s)
    if done.returncode != 0:
        pytest.fail(f"{cmd[:3]} failed ({done.returncode}):\n{log.read_text()[-4000:]}")


@pytest.mark.slow
def test_deepspeed_zero3_saves_gathered_weights_equal_to_ddp(tiny_qwen: Path, champ_subset: Path,
                                                             tmp_path: Path) -> None:  # fmt: skip
    """Two CPU processes: DeepSpeed ZeRO-3 (the paper's config) and plain DDP with the emulated schedule must
    train the same LoRA reranker, and the ZeRO-3 run must save whole (gathered) adapter and head tensors."""
    from safetensors.torch import load_file

    bin_dir = Path(sys.executable).parent
    common = ["--lora", "--learning_rate", "1e-3", "--max_steps", "4", "--warmup_steps", "2", "--save_steps", "2",
              "--per_device_train_batch_size", "2", "--train_group_size", "3", "--rerank_max_len", "96"]  # fmt: skip
    ds_out, ddp_out = tmp_path / "zero3", tmp_path / "ddp"
    _launch(
        [str(bin_dir / "deepspeed"), "--num_gpus", "2", "--master_port", str(free_port()), "--module",
         "run_src.train_reranker", *_argv(ds_out, tiny_qwen, champ_subset, *common),
         "--deepspeed", "tevatron_configs/ds_zero3_config.json"],
        tmp_path / "zero3.log",
    )  # fmt: skip
    _launch(
        [str(bin_dir / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()), "-m",
         "run_src.train_reranker", *_argv(ddp_out, tiny_qwen, champ_subset, *common),
         "--lr_schedule", "ds_warmup_decay_log", "--optim", "adamw_torch"],
        tmp_path / "ddp.log",
    )  # fmt: skip
    config = json.loads((ds_out / "train_config.json").read_text())
    assert config["derived"]["world_size"] == 2 and config["derived"]["deepspeed_scheduler"]
    assert (ds_out / "checkpoint-2" / "global_step2").is_dir()  # DeepSpeed's own optimizer shards
    assert [e["loss"] for e in _log(ds_out)] == pytest.approx([e["loss"] for e in _log(ddp_out)], rel=1e-4)
    for name in ("adapter_model.safetensors", HEAD_WEIGHTS_NAME):
        for directory in (ds_out, ds_out / "checkpoint-2"):
            assert all(t.numel() > 0 for t in load_file(str(directory / name)).values()), directory / name
        a, b = load_file(str(ds_out / name)), load_file(str(ddp_out / name))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-5)
    head = load_file(str(ds_out / HEAD_WEIGHTS_NAME))["weight"]
    assert head.shape == (1, 64)  # the tiny Qwen2's hidden size: one output, not two


# ------------------------------------------------------------------------------------------------ SmolLM2


@pytest.mark.slow
def test_lora_on_smollm2_raises_top1_accuracy(smollm2_dir: Path, champ_subset: Path, tmp_path: Path) -> None:
    """The embedded default's backbone: LoRA r8 + head, a few steps on CPU, measured on the training groups."""
    from run_src.train_reranker import run

    rows = list(read_jsonl(champ_subset))[:12]
    data = atomic_write_jsonl(tmp_path / "train12.jsonl", rows)
    out = tmp_path / "smollm2"
    argv = _argv(out, smollm2_dir, data, "--lora", "--learning_rate", "1e-3", "--max_steps", "6",
                 "--warmup_steps", "1", "--save_steps", "6", "--per_device_train_batch_size", "2",
                 "--rerank_max_len", "128")  # fmt: skip
    result = run(argv)
    assert result.exit_code == 0
    before = _probe(PointwiseReranker.from_backbone(str(smollm2_dir), fmt=RerankerFormat(max_len=128), seed=42), data)
    after = _probe(result.trainer.model, data)
    print(f"SmolLM2 LoRA reranker on 12 CHAMP groups: grouped CE / top-1 before {before}, after {after}")
    assert after[1] > before[1] and after[0] < before[0]
