"""Pooling token states into one vector per text, shared by the inference encoders and training.

``eos``/``last`` read the last real token, ``cls`` the first, ``mean`` averages the real tokens, and
``mean_without_instruction`` averages the text's tokens only: the instruction's leading tokens (counted
by :func:`instruction_token_count` as sentence-transformers counts a prompt) are left out of the mean,
though the attention saw them (Instructor as BRIGHT runs it, ``set_pooling_include_prompt(False)``).
Every pooling works for left and right padding.

Usage::

    pooled = pool_hidden_states(hidden, attention_mask, "mean_without_instruction", instruction_tokens=9)
"""

from __future__ import annotations

from typing import Any

POOLINGS = ("eos", "last", "mean", "cls", "mean_without_instruction")
# Poolings that leave the instruction's tokens out; a server that pools on its own cannot.
INSTRUCTION_FREE_POOLINGS = frozenset({"mean_without_instruction"})


def instruction_token_count(tokenizer: Any, instruction: str) -> int:
    """How many leading tokens of ``instruction + text`` are the instruction, as sentence-transformers counts
    a prompt (``Transformer._get_prompt_length``): the instruction tokenised alone with special tokens,
    less a trailing special token (T5's ``</s>``, BERT's ``[SEP]``); leading ones (``[CLS]``, ``<s>``) count."""
    if not instruction:
        return 0
    ids = list(tokenizer(instruction, add_special_tokens=True)["input_ids"])
    if ids and ids[-1] in set(tokenizer.all_special_ids):
        ids = ids[:-1]
    return len(ids)


def pool_hidden_states(hidden: Any, mask: Any, pooling: str, instruction_tokens: int | None = None) -> Any:
    """Pool ``hidden [B, L, d]`` by the attention mask; works for left and right padding.

    ``mean_without_instruction`` needs ``instruction_tokens``: each row's first that many real tokens
    are left out of the mean (the attention itself saw them); the other poolings ignore it.
    """
    import torch

    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if pooling in ("eos", "last"):
        # Index of the last 1 in each mask row (= L-1 for left padding, len-1 for right padding).
        last = mask.shape[1] - 1 - torch.argmax(mask.flip(dims=[1]), dim=1)
        return hidden[rows, last]
    if pooling == "cls":
        return hidden[rows, torch.argmax(mask, dim=1)]  # first real token, whatever the padding
    if pooling in INSTRUCTION_FREE_POOLINGS:
        if instruction_tokens is None:
            raise ValueError(f"pooling={pooling!r} needs the instruction's token count (instruction_tokens)")
        # Real-token rank of each position (1, 2, ... over non-pad tokens, whatever the padding side).
        mask = mask * (mask.cumsum(dim=1) > instruction_tokens).to(mask.dtype)
    elif pooling != "mean":
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {list(POOLINGS)}")
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
