"""The reranker's grouped cross-entropy (training.md §12.4) through its trainer, against hand computation.

The model is a real :class:`PointwiseReranker` whose backbone is a lookup table (token id -> a fixed 1-d hidden
state) and whose head is the identity, so each pair's logit is a number chosen here. The trainer's
``compute_loss`` must give ``mean_g [logsumexp(logits_g) - logits_g[0]]`` over groups of G, with no in-batch
negatives, whatever ``--per_device_train_batch_size`` says (the reference viewed the logits as
``[batch_size, -1]``, which regroups a short last batch).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from models.reranking.pointwise import PointwiseReranker, RerankerFormat
from models.training.arguments import RerankerDataArguments, RetrieverTrainingArguments
from models.training.collator import RerankerCollator
from models.training.dataset import RerankerTrainDataset, load_train_records
from models.training.reranker_trainer import RerankerTrainer

PAD, JUNK = 0, 1
# Token id -> logit. Passages are single tokens named in SCORE_OF; JUNK precedes some of them so that only the
# last real position may be read.
LOGIT = {PAD: 50.0, JUNK: -50.0, 10: 3.0, 11: 1.0, 12: 0.0, 13: 0.5, 14: 2.0, 15: -1.0, 16: 1.5, 17: 1.4, 18: -2.0}
GROUPS = [[10, 11, 12], [13, 14, 15], [16, 17, 18]]  # positive first in each group


class LookupBackbone(nn.Module):
    """Stand-in backbone: the hidden state at each position is the fixed 1-d value of its token id."""

    def __init__(self) -> None:
        super().__init__()
        weight = torch.zeros(32, 1)
        for token, value in LOGIT.items():
            weight[token, 0] = value
        self.table = nn.Embedding.from_pretrained(weight, freeze=False)
        self.config = SimpleNamespace(hidden_size=1, use_cache=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: object) -> SimpleNamespace:
        return SimpleNamespace(last_hidden_state=self.table(input_ids))


def lookup_reranker() -> PointwiseReranker:
    tokenizer = SimpleNamespace(eos_token_id=None, pad_token_id=PAD)
    head = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        head.weight.fill_(1.0)
    fmt = RerankerFormat(append_eos=False, pad_to_multiple_of=4)
    return PointwiseReranker(LookupBackbone(), tokenizer, fmt, base_model_name_or_path="lookup", head=head)


def hand_grouped_ce(groups: list[list[int]]) -> float:
    total = 0.0
    for group in groups:
        logits = [LOGIT[token] for token in group]
        total += math.log(sum(math.exp(x) for x in logits)) - logits[0]
    return total / len(groups)


def pair_rows(groups: list[list[int]]) -> list[list[int]]:
    """One row per pair, group-major; every other pair has junk before its scored token."""
    return [[JUNK, token] if i % 2 else [token] for i, token in enumerate(t for g in groups for t in g)]


def make_trainer(tmp_path: Path, model: PointwiseReranker, batch_size: int = 2, **kwargs: object) -> RerankerTrainer:
    args = RetrieverTrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", per_device_train_batch_size=batch_size
    )
    return RerankerTrainer(model=model, args=args, group_size=3, **kwargs)


def test_trainer_loss_equals_hand_computed_grouped_ce(tmp_path: Path) -> None:
    model = lookup_reranker().train()
    trainer = make_trainer(tmp_path, model)
    inputs = model.collate(pair_rows(GROUPS[:2]))
    assert inputs["input_ids"].shape == (6, 4)  # padded with PAD, whose logit (50) must never be read
    loss, outputs = trainer.compute_loss(model, inputs, return_outputs=True)
    expected = hand_grouped_ce(GROUPS[:2])
    assert expected == pytest.approx((math.log(1 + math.exp(-2) + math.exp(-3)) + math.log(
        math.exp(0.5) + math.exp(2) + math.exp(-1)) - 0.5) / 2)  # fmt: skip
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert outputs["logits"].tolist() == [[3.0, 1.0, 0.0], [0.5, 2.0, -1.0]]
    # No in-batch negatives: with them each query's softmax would run over all 6 pairs.
    log_z_all = math.log(sum(math.exp(LOGIT[t]) for g in GROUPS[:2] for t in g))
    with_inbatch = (log_z_all - LOGIT[10] + log_z_all - LOGIT[13]) / 2
    assert abs(loss.item() - with_inbatch) > 0.5
    loss.backward()
    grad = model.backbone.table.weight.grad[:, 0]
    assert grad[PAD] == 0 and grad[JUNK] == 0  # padding and earlier tokens never reach the loss
    softmax = torch.softmax(torch.tensor([3.0, 1.0, 0.0]), 0)
    assert grad[10].item() == pytest.approx((softmax[0].item() - 1) / 2, rel=1e-5)  # d mean CE / d positive logit
    assert grad[11].item() == pytest.approx(softmax[1].item() / 2, rel=1e-5)


def test_short_last_batch_is_grouped_by_group_size_not_batch_size(tmp_path: Path) -> None:
    model = lookup_reranker()
    trainer = make_trainer(tmp_path, model, batch_size=3)
    # 2 groups of G = 3 with a configured batch size of 3 (the last batch of an epoch).
    loss = trainer.compute_loss(model, model.collate(pair_rows(GROUPS[:2])))
    assert loss.item() == pytest.approx(hand_grouped_ce(GROUPS[:2]), rel=1e-6)
    # The reference's view(batch_size, -1) would have made 3 "groups" of 2 with targets at 0: another number.
    flat = [LOGIT[t] for g in GROUPS[:2] for t in g]
    reference_bug = sum(math.log(math.exp(a) + math.exp(b)) - a for a, b in zip(flat[::2], flat[1::2], strict=True)) / 3
    assert abs(loss.item() - reference_bug) > 0.1

    # Through the trainer's own data loader: 3 groups at batch size 2 leave a last batch of one group.
    trainer = make_trainer(
        tmp_path,
        model,
        batch_size=2,
        train_dataset=[(f"q{i}", [("", str(t)) for t in g]) for i, g in enumerate(GROUPS)],
        data_collator=RerankerCollator(lambda qs, texts, titles: model.collate([[int(t)] for t in texts]), 3),
    )
    batches = list(trainer.get_train_dataloader())
    assert [b["input_ids"].shape[0] for b in batches] == [6, 3]
    losses = sorted(trainer.compute_loss(model, b).item() for b in batches)
    seen = {tuple(sorted(int(t) for t in b["input_ids"][:, 0].tolist())) for b in batches}
    alone = next(g for g in GROUPS if tuple(sorted(g)) in seen)  # which group the sampler left for last
    pair = [g for g in GROUPS if g is not alone]
    assert losses == pytest.approx(sorted([hand_grouped_ce([alone]), hand_grouped_ce(pair)]), rel=1e-6)


def test_groups_of_the_wrong_size_are_refused(tmp_path: Path) -> None:
    model = lookup_reranker()
    trainer = make_trainer(tmp_path, model)
    with pytest.raises(ValueError, match="groups of 3"):
        trainer.compute_loss(model, model.collate([[10], [11], [12], [13]]))
    collate = RerankerCollator(lambda qs, texts, titles: model.collate([[int(t)] for t in texts]), 3)
    with pytest.raises(ValueError, match="every group must have 3 passages"):
        collate([("q", [("", "10"), ("", "11"), ("", "12")]), ("q", [("", "13"), ("", "14")])])
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        RerankerTrainer(model=model, args=trainer.args, group_size=1)
    with pytest.raises(ValueError, match="--train_group_size 1"):
        RerankerDataArguments(dataset_path="x.jsonl", train_group_size=1)


def test_reranker_groups_keep_raw_texts_and_honour_no_shuffle(tmp_path: Path) -> None:
    record = {
        "query_id": "q1",
        "query": "What is 2+2?",
        "positive_passages": [{"docid": "p0", "title": "Sum", "text": "two and two"}, {"docid": "p1", "text": "four"}],
        "negative_passages": [{"docid": f"n{i}", "title": "", "text": f"neg {i}"} for i in range(5)],
    }
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(record) + "\n")
    fixed = RerankerDataArguments(dataset_path=str(path), train_group_size=3, positive_passage_no_shuffle=True,
                                  negative_passage_no_shuffle=True)  # fmt: skip
    dataset = RerankerTrainDataset(load_train_records(fixed), fixed, seed=42)
    assert dataset[0] == ("What is 2+2?", [("Sum", "two and two"), ("", "neg 0"), ("", "neg 1")])
    sampled = RerankerDataArguments(dataset_path=str(path), train_group_size=3)
    query, group = RerankerTrainDataset(load_train_records(sampled), sampled, seed=42)[0]
    # Tevatron's rotation: positive (hash(0 + 42) + epoch 0) % 2 = p0; a missing title reads as empty.
    assert query == "What is 2+2?" and group[0] == ("Sum", "two and two") and len(set(group)) == 3
