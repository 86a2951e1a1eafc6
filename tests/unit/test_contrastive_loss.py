"""The retriever's InfoNCE (training.md §9.5) and the reranker's grouped CE (§12.4) against hand computation.

The loss goes through the trainer's own ``compute_loss`` with a lookup table as the "encoder", so pooling
(last real token of right-padded rows), normalisation, temperature 0.01, the group layout (positive at
``i * G``) and in-batch negatives are all checked against plain Python arithmetic. The cross-device gather
runs in two real gloo processes and must give the single-process gradient. The emulated DeepSpeed schedule
is compared with DeepSpeed's own ``WarmupDecayLR``.
"""

from __future__ import annotations

import math
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from models.training.arguments import RetrieverTrainingArguments
from models.training.loss import grouped_ce_loss, info_nce_loss
from models.training.model import ContrastiveEncoder
from models.training.trainer import ContrastiveTrainer, ds_warmup_decay_log_factor

# Token id -> fixed 3-d "embedding". Ids 1..2 are queries, 10..15 passages, 0 is padding/junk.
# Positives only slightly ahead of some negatives, so that the loss is O(1) even at temperature 0.01.
TABLE = {
    0: [9.0, 9.0, 9.0],
    1: [1.0, 0.0, 0.0],
    2: [0.0, 1.0, 0.5],
    10: [1.0, 0.1, 0.0],  # q1 positive
    11: [1.0, 0.12, 0.03],  # q1 hard negatives
    12: [1.0, 0.0, 0.2],
    13: [0.05, 1.0, 0.5],  # q2 positive
    14: [0.0, 1.0, 0.6],  # q2 hard negatives
    15: [-1.0, 0.2, 0.0],
}
GROUP = 3


class LookupEncoder(nn.Module):
    """Stand-in backbone whose hidden state at each position is the fixed vector of its token id."""

    def __init__(self) -> None:
        super().__init__()
        weight = torch.zeros(16, 3)
        for token, vector in TABLE.items():
            weight[token] = torch.tensor(vector)
        self.table = nn.Embedding.from_pretrained(weight, freeze=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, use_cache: bool = False):
        return SimpleNamespace(last_hidden_state=self.table(input_ids))


def _batch(rows: list[list[int]], width: int = 4) -> dict[str, torch.Tensor]:
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _hand_loss(queries: list[int], passages: list[int], temperature: float, normalize: bool) -> float:
    def vec(token: int) -> list[float]:
        v = TABLE[token]
        norm = math.sqrt(sum(x * x for x in v)) if normalize else 1.0
        return [x / norm for x in v]

    total = 0.0
    for i, q in enumerate(queries):
        logits = [sum(a * b for a, b in zip(vec(q), vec(p), strict=True)) / temperature for p in passages]
        top = max(logits)
        log_z = top + math.log(sum(math.exp(s - top) for s in logits))
        total += log_z - logits[i * GROUP]  # the positive is the first passage of query i's group
    return total / len(queries)


@pytest.mark.parametrize(("temperature", "normalize"), [(0.01, True), (1.0, True), (0.5, False)])
def test_trainer_loss_equals_hand_computed_infonce(tmp_path: Path, temperature: float, normalize: bool) -> None:
    model = ContrastiveEncoder(LookupEncoder(), pooling="eos", normalize=normalize, temperature=temperature)
    args = RetrieverTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = ContrastiveTrainer(model=model, args=args)
    # Junk id 0 before the real last token: only the last real position may be pooled.
    inputs = {
        "query": _batch([[0, 1], [2]]),
        "passage": _batch([[10], [0, 0, 11], [12], [13], [0, 14], [15]]),
    }
    model.train()
    loss, outputs = trainer.compute_loss(model, inputs, return_outputs=True)
    expected = _hand_loss([1, 2], [10, 11, 12, 13, 14, 15], temperature, normalize)
    assert expected > 0.05  # a loss that actually tests something
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert outputs.scores.shape == (2, 6)  # each query against all 6 passages: 2 own negatives + 3 in-batch
    loss.backward()
    assert model.encoder.table.weight.grad[0].abs().sum() == 0  # padding/junk never contributes


def test_temperature_001_is_sharp_and_group_layout_matters() -> None:
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64), dim=-1)
    p = torch.tensor([[1.0, 0.05], [1.0, 0.08], [0.05, 1.0], [0.1, 1.0]], dtype=torch.float64)
    p = torch.nn.functional.normalize(p, dim=-1)
    loss, scores = info_nce_loss(q, p, temperature=0.01)
    # By hand: query 0's logits are 100*cos, target index 0; query 1's target index 2.
    logits = scores / 0.01
    expected = (
        torch.logsumexp(logits[0], 0) - logits[0, 0] + torch.logsumexp(logits[1], 0) - logits[1, 2]
    ).item() / 2
    assert 0.1 < loss.item() == pytest.approx(expected, rel=1e-9)
    swapped, _ = info_nce_loss(q, p[[1, 0, 3, 2]], temperature=0.01)  # positives no longer first
    assert swapped.item() > loss.item() + 0.2
    with pytest.raises(ValueError, match="do not split into groups"):
        info_nce_loss(q, p[:3], temperature=0.01)


def test_grouped_ce_has_no_in_batch_negatives_and_groups_by_length() -> None:
    logits = torch.tensor([3.0, 1.0, 0.0, 0.5, 2.0, -1.0])  # two queries, G = 3, positive first
    expected = sum(
        math.log(sum(math.exp(x) for x in group)) - group[0] for group in ([3.0, 1.0, 0.0], [0.5, 2.0, -1.0])
    ) / 2
    assert grouped_ce_loss(logits, 3).item() == pytest.approx(expected, rel=1e-6)
    assert grouped_ce_loss(logits[:3].unsqueeze(-1), 3).item() == pytest.approx(math.log(1 + math.exp(-2) + math.exp(-3)))
    with pytest.raises(ValueError, match="groups of 3"):
        grouped_ce_loss(logits[:4], 3)


# ------------------------------------------------------------------------------------------------ W = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _shared_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x_q = torch.randn(4, 5, generator=generator)  # 4 queries in all, 2 per rank
    x_p = torch.randn(4 * GROUP, 5, generator=generator)
    weight = torch.randn(5, 3, generator=generator)
    return x_q, x_p, weight


def _rank_worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        x_q, x_p, weight = _shared_data()
        w = weight.clone().requires_grad_(True)  # the shared "model parameter"
        q = torch.nn.functional.normalize(x_q[2 * rank : 2 * rank + 2] @ w, dim=-1)
        p = torch.nn.functional.normalize(x_p[2 * rank * GROUP : (2 * rank + 2) * GROUP] @ w, dim=-1)
        loss, scores = info_nce_loss(q, p, temperature=0.05)
        loss.backward()
        dist.all_reduce(w.grad)
        w.grad /= 2  # what DDP / DeepSpeed do to gradients
        torch.save({"loss": loss.detach(), "grad": w.grad, "scores": scores.detach()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_cross_device_gather_gives_the_single_process_gradient(tmp_path: Path) -> None:
    mp.spawn(_rank_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    x_q, x_p, weight = _shared_data()
    w = weight.clone().requires_grad_(True)
    q = torch.nn.functional.normalize(x_q @ w, dim=-1)
    p = torch.nn.functional.normalize(x_p @ w, dim=-1)
    full, full_scores = info_nce_loss(q, p, temperature=0.05)  # all 4 queries on one process
    full.backward()
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        # Every rank scores its 2 queries' rows... of the gathered [4, 12] matrix and returns loss * W.
        assert result["scores"].shape == (4, 4 * GROUP)
        torch.testing.assert_close(result["scores"], full_scores.detach())
        assert result["loss"].item() == pytest.approx(2 * full.item(), rel=1e-5)
        torch.testing.assert_close(result["grad"], w.grad, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ schedule


def test_emulated_schedule_matches_deepspeed_warmup_decay_lr() -> None:
    from deepspeed.runtime.lr_schedules import WarmupDecayLR

    for warmup, total in ((28, 60), (1, 10), (5, 5), (3, 12)):
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-4)
        ds = WarmupDecayLR(optimizer, total_num_steps=total, warmup_max_lr=1e-4, warmup_num_steps=warmup)
        for step in range(total + 2):
            lr_used = optimizer.param_groups[0]["lr"]  # what optimizer step `step` runs with
            assert lr_used == pytest.approx(1e-4 * ds_warmup_decay_log_factor(step, warmup, total), abs=1e-12)
            ds.step()
    assert ds_warmup_decay_log_factor(0, 28, 674) == 0.0 and ds_warmup_decay_log_factor(1, 28, 674) == 0.0
    assert ds_warmup_decay_log_factor(29, 28, 674) == pytest.approx(1.0)
