"""The contrastive losses and the cross-device gather, as plain functions on tensors.

* :func:`info_nce_loss` - retriever (training.md §9.5): every query is scored against every passage of
  the (gathered) micro-batch; its own positive sits at ``i * G``; mean cross-entropy of
  ``scores / temperature``. With ``W > 1`` processes the loss is multiplied by ``W`` to undo the
  gradient averaging of DDP/DeepSpeed, so the update is the gradient of the mean over all ``W*B``
  queries. No in-batch masking of false negatives (Tevatron has none).
* :func:`grouped_ce_loss` - pointwise reranker (§12.4): each query's ``G`` scores form one softmax with the
  positive at 0; no in-batch negatives, no gather.

Usage::

    loss = info_nce_loss(q_reps, p_reps, temperature=0.01)
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def distributed_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks in rank order; only the local slot carries gradient.

    Every rank must pass the same shape (HF's distributed sampler pads the last batch to make it so).
    """
    rank, world = distributed_world()
    if world == 1:
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(gathered, tensor.contiguous())
    gathered[rank] = tensor
    return torch.cat(gathered, dim=0)


def similarity_scores(q_reps: torch.Tensor, p_reps: torch.Tensor) -> torch.Tensor:
    """Dot products ``Q Pᵀ`` (cosine when both sides are normalised)."""
    return q_reps @ p_reps.transpose(0, 1)


def info_nce_loss(
    q_reps: torch.Tensor, p_reps: torch.Tensor, temperature: float, gather: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE over in-batch and hard negatives; returns ``(loss, scores)`` with ``scores`` unscaled.

    ``q_reps`` is ``[B, d]``, ``p_reps`` is ``[B*G, d]`` group-major (positive first in each group).
    With ``gather`` and ``W > 1`` processes both are gathered across ranks first.
    """
    _, world = distributed_world()
    if gather and world > 1:
        q_reps, p_reps = gather_with_grad(q_reps), gather_with_grad(p_reps)
    n_queries, n_passages = q_reps.shape[0], p_reps.shape[0]
    if n_queries == 0 or n_passages % n_queries:
        raise ValueError(f"{n_passages} passages do not split into groups for {n_queries} queries")
    group_size = n_passages // n_queries
    scores = similarity_scores(q_reps, p_reps)
    target = torch.arange(n_queries, device=scores.device, dtype=torch.long) * group_size
    loss = F.cross_entropy(scores / temperature, target)
    if gather and world > 1:
        loss = loss * world
    return loss, scores


def grouped_ce_loss(logits: torch.Tensor, group_size: int) -> torch.Tensor:
    """Cross-entropy over each query's ``group_size`` scores with the positive at index 0.

    ``logits`` is ``[B*G]`` or ``[B*G, 1]``. The groups come from the tensor's own length, never from a
    configured batch size, so a smaller last batch is still grouped correctly (spec §12.4 [BUG]).
    """
    flat = logits.reshape(-1)
    if flat.numel() % group_size:
        raise ValueError(f"{flat.numel()} scores do not split into groups of {group_size}")
    grouped = flat.view(-1, group_size)
    target = torch.zeros(grouped.shape[0], dtype=torch.long, device=grouped.device)
    return F.cross_entropy(grouped, target)
