"""Pointwise reranker on real transformers models: SmolLM2-135M as the backbone (whose pad id equals its
EOS id, the seq-cls pitfall of training.md §12.7) and a tiny random Llama seq-cls checkpoint for the
release-format loader.

Checked: the pair string and token contract (§12.2), pooling at the appended EOS whatever the padding,
batch and padding invariance, determinism, save/load round trips (full backbone and LoRA adapter,
merged or not), gradients reaching only LoRA and the head, and loading a seq-cls (+ SEQ_CLS LoRA)
checkpoint with the same scores as transformers' own head where that head is right, and the right
ones where it is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.reranking.pointwise import (
    HEAD_WEIGHTS_NAME,
    RERANKER_CONFIG_NAME,
    LoraSettings,
    PointwiseReranker,
    RerankerFormat,
    format_pair,
)

QUERIES = ["What is the remainder of 3^100 divided by 7?", "A ladder leans against a wall. How high?", "Count strings"]
PASSAGES = [
    "Fermat's little theorem: if p is prime and a is not divisible by p, then a^(p-1) = 1 mod p.",
    "Pythagorean theorem: the square of the hypotenuse equals the sum of the squares of the legs.",
    "Bayes' theorem " * 20,
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def reranker(smollm2_dir: Path) -> PointwiseReranker:
    return PointwiseReranker.from_backbone(str(smollm2_dir), fmt=RerankerFormat(max_len=96), seed=0).eval()


def pairs(n: int = 3) -> tuple[list[str], list[str]]:
    return [QUERIES[i % 3] for i in range(n)], [PASSAGES[(i * 2) % 3] for i in range(n)]


def test_pair_string_and_token_contract(reranker: PointwiseReranker) -> None:
    assert format_pair("q?", "d.", reranker.format) == "query: q? document: d."
    assert format_pair("q?", "d.", reranker.format, title=" T ") == "query: q? document: T d."
    tok = reranker.tokenizer
    assert tok.pad_token_id == tok.eos_token_id == reranker.eos_id  # SmolLM2: the §12.7 trap
    ids = reranker.tokenize_pairs(["q?"], ["d."])[0]
    assert ids == tok("query: q? document: d.", add_special_tokens=True)["input_ids"] + [tok.eos_token_id]
    long_ids = reranker.tokenize_pairs([QUERIES[0]], [PASSAGES[2] * 5])[0]
    assert len(long_ids) == 96 and long_ids[-1] == tok.eos_token_id  # truncated to max_len - 1, then EOS
    batch = reranker.collate([ids, long_ids])
    assert batch["input_ids"].shape == (2, 96) and batch["attention_mask"].sum(dim=1).tolist() == [len(ids), 96]
    assert reranker.collate([ids])["input_ids"].shape[1] % 16 == 0


def test_score_is_the_head_on_the_eos_state(reranker: PointwiseReranker) -> None:
    ids = reranker.tokenize_pairs(QUERIES[:1], PASSAGES[:1])[0]
    with torch.inference_mode():
        hidden = reranker.backbone(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        expected = float(reranker.head(hidden))
    # Padded with pad == EOS ids: a pad-id lookup would read a padding slot; the mask finds the real EOS.
    batch = reranker.collate([ids])
    assert batch["input_ids"].shape[1] > len(ids)
    assert reranker(**batch).item() == pytest.approx(expected, abs=1e-5)
    assert reranker.score_pairs(QUERIES[:1], PASSAGES[:1])[0] == pytest.approx(expected, abs=1e-5)


def test_scores_are_deterministic_and_batch_and_padding_invariant(reranker: PointwiseReranker) -> None:
    queries, passages = pairs(4)
    one = reranker.score_pairs(queries, passages, batch_size=1)
    assert reranker.score_pairs(queries, passages, batch_size=1) == one  # bit-identical on a rerun
    assert reranker.score_pairs(queries, passages, batch_size=4) == pytest.approx(one, abs=1e-4)
    order = [3, 0, 2, 1]
    shuffled = reranker.score_pairs([queries[i] for i in order], [passages[i] for i in order], batch_size=3)
    assert shuffled == pytest.approx([one[i] for i in order], abs=1e-4)
    wide = PointwiseReranker(reranker.backbone, reranker.tokenizer, RerankerFormat(max_len=96, pad_to_multiple_of=64),
                             base_model_name_or_path="same", head=reranker.head)  # fmt: skip
    assert wide.score_pairs(queries, passages, batch_size=4) == pytest.approx(one, abs=1e-4)
    assert len(set(one)) > 1 and not reranker.training


def test_full_round_trip_gives_identical_scores(reranker: PointwiseReranker, tmp_path: Path) -> None:
    queries, passages = pairs(4)
    before = reranker.score_pairs(queries, passages, batch_size=2)
    reranker.save_pretrained(tmp_path / "full")
    config = json.loads((tmp_path / "full" / RERANKER_CONFIG_NAME).read_text())
    assert (config["backbone_format"], config["hidden_size"], config["eos_token"]) == ("full", 576, "<|im_end|>")
    assert config["format"] == {"query_prefix": "query: ", "passage_prefix": "document: ", "separator": " ",
                                "max_len": 96, "append_eos": True, "pad_to_multiple_of": 16}  # fmt: skip
    loaded = PointwiseReranker.from_pretrained(tmp_path / "full")
    assert loaded.format == reranker.format and not loaded.training
    assert loaded.score_pairs(queries, passages, batch_size=2) == before


def test_lora_training_step_save_load_and_merge(smollm2_dir: Path, tmp_path: Path) -> None:
    model = PointwiseReranker.from_backbone(
        str(smollm2_dir), fmt=RerankerFormat(max_len=64), lora=LoraSettings(r=4, target_modules=("q_proj", "v_proj")),
        seed=1,
    )  # fmt: skip
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "head.weight" in trainable and all("lora_" in n for n in trainable - {"head.weight"})
    # One group of 3 (positive first): grads reach the head and the adapter, never the frozen weights.
    model.train()
    logits = model(**model.encode_pairs([QUERIES[0]] * 3, PASSAGES))
    assert logits.shape == (3,) and logits.dtype == torch.float32
    loss = torch.nn.functional.cross_entropy(logits.view(-1, 3), torch.zeros(1, dtype=torch.long))
    loss.backward()
    grads = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    # lora_B starts at zero, so on step one only lora_B (and the head) can move.
    assert "head.weight" in grads and any("lora_B" in n for n in grads) and grads <= trainable
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)  # a trained-looking adapter, so that it changes the scores

    queries, passages = pairs(3)
    before = model.score_pairs(queries, passages, batch_size=3)
    assert model.training  # score_pairs restores the caller's mode
    model.save_pretrained(tmp_path / "lora")
    saved = {p.name for p in (tmp_path / "lora").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", HEAD_WEIGHTS_NAME, RERANKER_CONFIG_NAME} <= saved
    assert "model.safetensors" not in saved  # only the adapter, not a 0.5 GB backbone
    loaded = PointwiseReranker.from_pretrained(tmp_path / "lora")
    assert loaded.is_lora and loaded.score_pairs(queries, passages, batch_size=3) == before
    merged = PointwiseReranker.from_pretrained(tmp_path / "lora", merge_lora=True)
    assert not merged.is_lora and merged.score_pairs(queries, passages, batch_size=3) == pytest.approx(before, abs=1e-4)
    with model.backbone.disable_adapter():
        assert model.score_pairs(queries, passages, batch_size=3) != pytest.approx(before, abs=1e-3)


def test_save_refuses_a_partitioned_head(reranker: PointwiseReranker, tmp_path: Path) -> None:
    state = {**reranker.state_dict(), "head.weight": torch.empty(0)}  # what ZeRO-3 shards look like
    with pytest.raises(ValueError, match="gathered state_dict"):
        reranker.save_pretrained(tmp_path / "bad", state_dict=state)
    with pytest.raises(FileNotFoundError, match="not a saved reranker"):
        PointwiseReranker.from_pretrained(tmp_path)


def tiny_seq_cls(tokenizer_dir: Path, out: Path) -> Path:
    """A random 2-layer Llama with a 1-label seq-cls head, saved with SmolLM2's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=None)  # fmt: skip
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.normal_(0, 1.0)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def hf_logit(model: torch.nn.Module, ids: list[int]) -> float:
    with torch.inference_mode():
        return float(model(input_ids=torch.tensor([ids])).logits[0, 0])


def test_sequence_classification_checkpoints_and_the_pad_token_pitfall(smollm2_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    path = tiny_seq_cls(smollm2_dir, tmp_path / "seqcls")
    ours = PointwiseReranker.from_sequence_classification(str(path), dtype="float32", device="cpu")
    assert ours.format.max_len is None  # RaDeR's rerank.py scored whole pairs
    hf = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).eval()
    ids = [ours.tokenize_pairs([q], [p])[0] for q, p in zip(QUERIES, PASSAGES, strict=True)]
    expected = [hf_logit(hf, seq) for seq in ids]  # unpadded, one at a time: HF reads the last token
    assert ours.score_pairs(QUERIES, PASSAGES, batch_size=3) == pytest.approx(expected, abs=1e-5)

    # The pitfall: pin pad id = EOS id (what SmolLM2/gte-Qwen2 pad with) and batch: HF's head skips the EOS.
    hf.config.pad_token_id = ours.tokenizer.pad_token_id
    batch = ours.collate(ids)
    with torch.inference_mode():
        hf_batched = hf(**batch).logits[:, 0].tolist()
    assert hf_batched != pytest.approx(expected, abs=1e-3)

    # A SEQ_CLS LoRA adapter with a trained `score` (modules_to_save): the released RaDeR reranker format.
    peft_model = get_peft_model(
        AutoModelForSequenceClassification.from_pretrained(path, num_labels=1),
        LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.normal_(0, 0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = peft_model.merge_and_unload().eval()
    from_adapter = PointwiseReranker.from_pretrained(tmp_path / "adapter", base_model_name_or_path=str(path))
    assert from_adapter.score_pairs(QUERIES, PASSAGES, batch_size=2) == pytest.approx(
        [hf_logit(merged, seq) for seq in ids], abs=1e-5
    )


# ---------------------------------------------------------------------------------------------- inference length


@pytest.fixture(scope="module")
def long_context_reranker(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved reranker on a random 2-layer Qwen2 with 4,096 positions, trained (saved) with max_len 512."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

    out = tmp_path_factory.mktemp("long_context")
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir))
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)  # fmt: skip
    torch.manual_seed(0)
    Qwen2Model(config).save_pretrained(str(out / "backbone"))
    tokenizer.save_pretrained(str(out / "backbone"))
    model = PointwiseReranker.from_backbone(str(out / "backbone"), fmt=RerankerFormat(max_len=512), seed=0)
    return model.save_pretrained(out / "reranker")


def lengths_reaching_the_backbone(
    model: PointwiseReranker,
) -> tuple[list[list[int]], torch.utils.hooks.RemovableHandle]:
    """Per forward pass, the real (unpadded) token count of each row the backbone receives."""
    seen: list[list[int]] = []

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        seen.append(kwargs["attention_mask"].sum(dim=1).tolist())

    return seen, model.backbone.register_forward_pre_hook(hook, with_kwargs=True)


def test_a_2000_token_pair_reaches_the_model_whole_when_asked(long_context_reranker: Path) -> None:
    from models.reranking.pointwise import backbone_max_positions

    model = PointwiseReranker.from_pretrained(long_context_reranker, device="cpu")
    assert model.format.max_len == 512  # the training limit saved with the model
    assert backbone_max_positions(long_context_reranker) == model.max_positions == 4096  # what rerank.py defaults to
    passage = " ".join(f"lemma {i} holds." for i in range(500))
    whole = model.tokenizer(format_pair(QUERIES[0], passage, model.format))["input_ids"]
    assert 2000 <= len(whole) + 1 < 4096  # + the EOS id

    seen, handle = lengths_reaching_the_backbone(model)
    try:
        model.score_pairs([QUERIES[0]], [passage])
        assert seen == [[512]]  # cut at the training limit
        model.with_max_len(model.max_positions)
        long_score = model.score_pairs([QUERIES[0]], [passage])[0]
        assert seen[-1] == [len(whole) + 1]  # nothing cut: every token and the EOS
        # Batched by length, longest first, scores back in input order and equal to one-by-one scoring.
        queries, passages = [QUERIES[1], QUERIES[0], QUERIES[2]], [PASSAGES[1], passage, PASSAGES[2]]
        seen.clear()
        batched = model.score_pairs(queries, passages, batch_size=1)
    finally:
        handle.remove()
    widths = [row[0] for row in seen]
    assert widths == sorted(widths, reverse=True) and widths[0] == len(whole) + 1
    assert batched[1] == pytest.approx(long_score, abs=1e-5)
    one_by_one = [model.score_pairs([q], [p])[0] for q, p in zip(queries, passages, strict=True)]
    assert batched == pytest.approx(one_by_one, abs=1e-5)
    with pytest.raises(ValueError, match="max_len"):
        model.with_max_len(1)
