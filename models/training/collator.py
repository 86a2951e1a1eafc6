"""Tokenise and pad ``(query, [passages])`` groups into model inputs (training.md §9.2).

Owns only tokenisation and padding. Truncation and EOS come from the same function the inference
encoders use (``models.retrieval.encoders.tokenize_with_eos``): truncate to ``max_len - 1`` with ``add_special_tokens=True``,
then append the EOS id, so the EOS is never cut. Batches are right-padded with the tokenizer's pad id
(its EOS id when it has none) up to the longest sequence rounded up to ``pad_to_multiple_of``. Queries and
passages are padded separately; passages are group-major (query 0's G passages, then query 1's, ...).

The reranker's :class:`RerankerCollator` hands the pairs to the model's own tokenisation
(``PointwiseReranker.encode_pairs``: pair format, truncation, EOS, padding), the contract its inference uses.

Usage::

    collate = ContrastiveCollator(tokenizer, query_max_len=32, passage_max_len=128, append_eos=True)
    batch = collate([("query: ...", ["document: ...", ...]), ...])
    batch["query"]["input_ids"].shape        # [B, Lq]; batch["passage"]["input_ids"].shape == [B*G, Lp]
    pairs = RerankerCollator(reranker.encode_pairs, group_size=G)([("q", [("", "d"), ...]), ...])
    pairs["input_ids"].shape                 # [B*G, L], group-major
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from models.retrieval.encoders import tokenize_with_eos

Group = tuple[str, list[str]]


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its EOS id (Tevatron's fallback, e.g. Llama-3 has no pad token)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an EOS token; set pad_token")
    return int(pad)


def tokenize_texts(tokenizer: Any, texts: Sequence[str], max_len: int, append_eos: bool) -> list[list[int]]:
    """Token ids per text: truncated to ``max_len`` tokens in all, the EOS id last when ``append_eos``."""
    eos_id = tokenizer.eos_token_id if append_eos else None
    if append_eos and eos_id is None:
        raise ValueError(f"--append_eos_token: tokenizer {tokenizer.name_or_path!r} defines no eos_token")
    return tokenize_with_eos(tokenizer, list(texts), max_len, eos_id)


def pad_batch(ids: Sequence[Sequence[int]], pad_id: int, multiple_of: int | None) -> dict[str, torch.Tensor]:
    """Right-pad to the longest row (rounded up to ``multiple_of``); ``attention_mask`` marks real tokens."""
    longest = max((len(row) for row in ids), default=0)
    width = math.ceil(longest / multiple_of) * multiple_of if multiple_of else longest
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


@dataclass
class ContrastiveCollator:
    """``[(query, passages), ...]`` -> ``{"query": {...}, "passage": {...}}`` tensors."""

    tokenizer: Any
    query_max_len: int = 32
    passage_max_len: int = 128
    append_eos: bool = False
    pad_to_multiple_of: int | None = 16

    def encode(self, texts: Sequence[str], max_len: int) -> dict[str, torch.Tensor]:
        ids = tokenize_texts(self.tokenizer, texts, max_len, self.append_eos)
        return pad_batch(ids, pad_token_id(self.tokenizer), self.pad_to_multiple_of)

    def __call__(self, features: Sequence[Group]) -> dict[str, dict[str, torch.Tensor]]:
        queries = [query for query, _ in features]
        sizes = {len(passages) for _, passages in features}
        if len(sizes) != 1:
            raise ValueError(f"every group must have the same number of passages, got sizes {sorted(sizes)}")
        passages = [text for _, group in features for text in group]
        return {"query": self.encode(queries, self.query_max_len), "passage": self.encode(passages, self.passage_max_len)}


PairEncoder = Callable[[Sequence[str], Sequence[str], Sequence[str]], dict[str, torch.Tensor]]


@dataclass
class RerankerCollator:
    """``[(query, [(title, text), ...]), ...]`` -> one ``[B*G, L]`` batch of pairs, group-major."""

    encode_pairs: PairEncoder
    group_size: int

    def __call__(self, features: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> dict[str, torch.Tensor]:
        sizes = sorted({len(group) for _, group in features})
        if sizes != [self.group_size]:
            raise ValueError(f"every group must have {self.group_size} passages, got sizes {sizes}")
        queries = [query for query, group in features for _ in group]
        titles = [title for _, group in features for title, _ in group]
        texts = [text for _, group in features for _, text in group]
        return self.encode_pairs(queries, texts, titles)
