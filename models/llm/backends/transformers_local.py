"""LLM client that generates in-process with a local Hugging Face checkpoint (no server, no hub).

Meant for tests and CPU demos. One model serves one request at a time: ``generate`` runs in a
worker thread (``asyncio.to_thread``, so the client's loop stays responsive) under a lock. The
sampling semantics follow vLLM's so the two backends are interchangeable:

* ``temperature == 0`` is greedy decoding, and the ``n`` samples are copies of the one answer;
* ``top_k=None`` means no top-k filter (transformers would otherwise apply its default of 50);
* stop strings end generation early (transformers' stop-string criterion), the text is cut before
  the first stop string and the finish reason is ``"stop"``;
* ``seed`` seeds torch's global generator right before ``generate`` (``generate`` takes no
  ``torch.Generator``); the lock makes a given seed reproduce the same samples.

Token counts are real: prompt tokens once per request, completion tokens summed over samples up to
(not including) the end-of-sequence token.

Usage: built by :func:`models.llm.client.build_llm_client` for backend ``transformers``, with
``model`` set to the checkpoint directory.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteriaList, StopStringCriteria

from models.llm.client import Completion, LLMClient, LLMClientConfig, Message, SamplingParams

logger = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16", "auto")


class TransformersClient(LLMClient):
    """Chat (through the tokenizer's chat template) and plain completion with one local model."""

    def __init__(self, config: LLMClientConfig) -> None:
        path = Path(config.model)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"backend 'transformers' needs a local checkpoint directory with config.json; got {path} "
                "(for SmolLM2 run `python -m models.embedded.assets` and use the folder it prints)"
            )
        if config.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {config.dtype!r}")
        dtype = config.dtype if config.dtype == "auto" else getattr(torch, config.dtype)
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
        self._model.to(config.device).eval()
        eos = self._model.generation_config.eos_token_id
        eos_ids = {eos} if isinstance(eos, int) else set(eos or ())
        eos_ids.add(self._tokenizer.eos_token_id)
        self._pad_id: int = (
            self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else self._tokenizer.eos_token_id
        )
        self._end_ids = {i for i in eos_ids | {self._pad_id} if i is not None}
        # generate(stop_strings=..., tokenizer=...) rebuilds this criterion from the whole vocabulary on
        # every call (over a second on a busy 2-core CPU); it is stateless, so one per distinct stop tuple is kept.
        self._stop_criterion = functools.lru_cache(maxsize=32)(functools.partial(StopStringCriteria, self._tokenizer))
        self._lock = threading.Lock()
        super().__init__(config)
        logger.info("loaded %s on %s (%s)", path, config.device, config.dtype)

    async def _chat(self, messages: list[Message], params: SamplingParams) -> Completion:
        if not self._tokenizer.chat_template:
            raise ValueError(f"{self.config.model} has no chat template; use complete() for plain prompts")
        text = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        # The template already holds any BOS token; adding special tokens again would double it.
        return await asyncio.to_thread(self._generate, text, params, add_special_tokens=False)

    async def _complete(self, prompt: str, params: SamplingParams) -> Completion:
        return await asyncio.to_thread(self._generate, prompt, params, add_special_tokens=True)

    def _generate(self, text: str, params: SamplingParams, add_special_tokens: bool) -> Completion:
        """Tokenize, generate and decode under the lock: one model, and fast tokenizers are not thread-safe."""
        sample = params.temperature > 0
        kwargs: dict[str, object] = {
            "max_new_tokens": params.max_tokens,
            "do_sample": sample,
            "num_return_sequences": params.n if sample else 1,
            "pad_token_id": self._pad_id,
        }
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or 0)
        with self._lock, torch.inference_mode():
            if params.stop:
                kwargs["stopping_criteria"] = StoppingCriteriaList([self._stop_criterion(params.stop)])
            inputs = self._tokenizer(text, add_special_tokens=add_special_tokens, return_tensors="pt")
            inputs = inputs.to(self._model.device)
            prompt_tokens = inputs["input_ids"].shape[1]
            if params.seed is not None:
                torch.manual_seed(params.seed)
            output = self._model.generate(**inputs, **kwargs)
            rows = [row[prompt_tokens:].tolist() for row in output]
            if not sample:
                rows = rows * params.n
            decoded = [self._decode(row, params) for row in rows]
        return Completion(
            texts=[sample_text for sample_text, _, _ in decoded],
            finish_reasons=[reason for _, reason, _ in decoded],
            prompt_tokens=prompt_tokens,
            completion_tokens=sum(count for _, _, count in decoded),
            model=self.config.model,
        )

    def _decode(self, token_ids: list[int], params: SamplingParams) -> tuple[str, str, int]:
        """Text, finish reason and token count of one sample (padding and EOS dropped)."""
        end = next((i for i, token in enumerate(token_ids) if token in self._end_ids), len(token_ids))
        text = self._tokenizer.decode(token_ids[:end], skip_special_tokens=True)
        cuts = [pos for pos in (text.find(stop) for stop in params.stop) if pos >= 0]
        if cuts:
            return text[: min(cuts)], "stop", end
        return text, "stop" if end < params.max_tokens else "length", end
