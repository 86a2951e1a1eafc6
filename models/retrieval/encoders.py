"""Dense text encoders behind one interface: in-process transformers, or a vLLM embeddings server.

Owns tokenisation, pooling and normalisation at inference time; the strings themselves come from
:mod:`models.retrieval.text_formats` (prefixes, instructions, EOS), so both backends and training agree.

* ``transformers``: decoder LLMs with ``eos``/``last`` pooling (EOS *id* appended after
  truncation, as Tevatron's collator does, training.md §9.2), sentence encoders with attention-
  masked ``mean`` pooling, or ``cls``. ``mean_without_instruction`` is the mean over the text's
  tokens only: the instruction's tokens (counted as sentence-transformers counts a prompt) are
  masked out of the pool, as Instructor is run (BRIGHT ``set_pooling_include_prompt(False)``).
  Encoder-decoder checkpoints (T5: Instructor) run their encoder only, and a sentence-transformers
  folder's ``Dense`` projections are applied after pooling (:mod:`models.retrieval.st_modules`).
  Padding may be left or right: pooling always reads the last (or first) non-pad position, and
  left padding passes explicit position ids.
* ``vllm-server``: OpenAI-compatible ``/v1/embeddings`` (vLLM ``--runner pooling --convert embed
  --pooler-config '{"pooling_type":"LAST","use_activation":true}'``). vLLM's tokenizer adds no
  EOS, so the EOS *string* is appended to the text; with a max length set, texts are tokenised
  here exactly like the transformers path and sent as token ids.

Outputs are float32 ``[n, dim]`` arrays, L2-normalised when ``normalize``. :meth:`Encoder.describe`
lists everything that determines the vectors and goes into embedding-cache metadata.

Usage::

    from models.retrieval.encoders import EncoderConfig, build_encoder
    from models.retrieval.text_formats import RADER
    enc = build_encoder(EncoderConfig("path/to/model", pooling="eos", text_format=RADER))
    q = enc.encode_queries(["What is 2+2?"], task="theoremqa_theorems")
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import json
import logging
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from tqdm.auto import tqdm

from models.retrieval.model_identity import model_fingerprint
from models.retrieval.pooling import INSTRUCTION_FREE_POOLINGS, POOLINGS, instruction_token_count, pool_hidden_states
from models.retrieval.st_modules import load_dense_modules
from models.retrieval.text_formats import (
    PLAIN,
    TextFormat,
    document_instruction,
    format_document,
    format_query,
    query_instruction,
)

if TYPE_CHECKING:
    import httpx
    import torch

logger = logging.getLogger(__name__)

BACKENDS = ("transformers", "vllm-server")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# Statuses worth retrying: the server is busy, restarting or timed out; anything else is our fault.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

Side = Literal["query", "document"]


class EncoderServiceError(RuntimeError):
    """An embeddings server failed for good; names the URL, the last status and the response body."""

    def __init__(self, url: str, status: int | None, detail: str) -> None:
        self.url = url
        self.status = status
        super().__init__(f"embeddings request to {url} failed (last status {status}): {detail}")


@dataclass(frozen=True)
class EncoderConfig:
    """How to build an encoder; every field that changes the vectors shows up in ``describe()``."""

    model_name_or_path: str = field(metadata={"help": "HF model dir/id (transformers); tokenizer + identity (vllm)"})
    pooling: str = field(metadata={"help": f"one of {POOLINGS}; 'eos' requires text_format.append_eos"})
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "tokenizer, when not the model's own"})
    text_format: TextFormat = field(default=PLAIN, metadata={"help": "prefixes, instructions, EOS"})
    normalize: bool = field(default=True, metadata={"help": "L2-normalise (dot product = cosine)"})
    query_max_len: int | None = field(default=None, metadata={"help": "tokens incl. EOS; None = no truncation"})
    doc_max_len: int | None = field(default=None, metadata={"help": "tokens incl. EOS; None = no truncation"})
    batch_size: int = field(default=8, metadata={"help": "texts per forward pass / per request"})
    dtype: str = field(default="auto", metadata={"help": "auto = float32 on CPU, bfloat16 on CUDA"})
    device: str = field(default="auto", metadata={"help": "auto = cuda if available else cpu"})
    padding_side: str = field(default="right", metadata={"help": "left or right; results do not depend on it"})
    backend: str = field(default="transformers", metadata={"help": f"one of {BACKENDS}"})
    server_url: str | None = field(default=None, metadata={"help": "vllm-server base URL, e.g. http://host:8001"})
    served_model_name: str | None = field(default=None, metadata={"help": "model name on the server"})
    trust_remote_code: bool = field(default=False, metadata={"help": "run the checkpoint's own model/tokenizer code"})
    timeout_s: float = field(default=120.0, metadata={"help": "per-request timeout"})
    max_retries: int = field(default=5, metadata={"help": "retries after the first failed request"})
    backoff_base_s: float = field(default=1.0, metadata={"help": "first retry delay, doubled each time"})
    backoff_cap_s: float = field(default=30.0, metadata={"help": "longest delay between retries"})
    concurrency: int = field(default=8, metadata={"help": "vllm-server: batches in flight at once"})
    compile: bool = field(default=False, metadata={"help": "transformers: torch.compile the model (one-off cost)"})

    def __post_init__(self) -> None:
        if isinstance(self.text_format, dict):
            object.__setattr__(self, "text_format", TextFormat.from_dict(self.text_format))
        checks = (("pooling", POOLINGS), ("backend", BACKENDS), ("dtype", DTYPES), ("padding_side", ("left", "right")))
        for name, choices in checks:
            if getattr(self, name) not in choices:
                raise ValueError(f"EncoderConfig.{name}={getattr(self, name)!r}; choose one of {list(choices)}")
        if self.pooling == "eos" and not self.text_format.append_eos:
            raise ValueError(
                f"pooling='eos' pools an appended EOS token but text format {self.text_format.name!r} has "
                "append_eos=False; use a format with append_eos=True or pooling='last'"
            )
        if self.pooling in INSTRUCTION_FREE_POOLINGS and self.backend != "transformers":
            raise ValueError(
                f"pooling={self.pooling!r} masks the instruction's tokens out of the pool, which only the "
                "transformers backend can do (a vLLM server pools on its own)"
            )
        for name in ("query_max_len", "doc_max_len"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise ValueError(f"EncoderConfig.{name}={value}; use None (no truncation) or at least 2")
        if self.batch_size < 1 or self.max_retries < 0 or self.concurrency < 1:
            raise ValueError("EncoderConfig.batch_size and concurrency must be >= 1 and max_retries >= 0")
        if self.backend == "vllm-server" and not self.server_url:
            raise ValueError("backend='vllm-server' needs server_url (e.g. http://127.0.0.1:8001)")
        if self.compile and self.backend != "transformers":
            raise ValueError("EncoderConfig.compile compiles the in-process model; a vLLM server compiles its own")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["text_format"] = self.text_format.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown EncoderConfig fields {unknown}; known: {sorted(known)}")
        return cls(**data)


class Encoder(ABC):
    """Shared front end: formatting, batching contract, normalisation and ``describe()``."""

    def __init__(self, config: EncoderConfig, text_format: TextFormat) -> None:
        self.config = config
        self.text_format = text_format  # EOS resolved by the backend

    @property
    @abstractmethod
    def dim(self) -> int:
        """Embedding width, read from the model or the server (never assumed)."""

    @abstractmethod
    def _embed(
        self, texts: list[str], max_len: int | None, desc: str, show_progress: bool, instruction: str = ""
    ) -> np.ndarray:
        """Embed strings that are formatted *without* EOS; the backend appends it its own way.

        ``instruction`` is the part every string starts with before its text (prefix + instruction),
        for poolings that leave it out.
        """

    def encode_queries(self, texts: Sequence[str], task: str | None = None, show_progress: bool = False) -> np.ndarray:
        """Embed queries; ``task`` (a BRIGHT split key) selects the instruction, if the format has one."""
        fmt = self.text_format
        formatted = [format_query(t, fmt, task, with_eos=False) for t in texts]
        lead = _lead(fmt.query_prefix + query_instruction(fmt, task), fmt)
        return self._finish(self._embed(formatted, self.config.query_max_len, "encode queries", show_progress, lead))

    def encode_documents(self, texts: Sequence[str], show_progress: bool = True) -> np.ndarray:
        """Embed documents. A per-split document instruction (Instructor) goes in ``text_format.doc_instruction``
        (:func:`models.retrieval.text_formats.with_document_instruction`)."""
        fmt = self.text_format
        formatted = [format_document(t, fmt, with_eos=False) for t in texts]
        lead = _lead(fmt.doc_prefix + document_instruction(fmt), fmt)
        return self._finish(self._embed(formatted, self.config.doc_max_len, "encode documents", show_progress, lead))

    def _finish(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if not np.isfinite(vectors).all():
            bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1)).tolist()
            raise ValueError(f"non-finite embeddings for inputs {bad[:10]} (model {self.config.model_name_or_path})")
        if self.config.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def describe(self, side: Literal["query", "document", "both"] = "both") -> dict[str, Any]:
        """What determines the vectors (not how they are computed: backend, dtype, batch size).

        ``side="document"`` leaves out query-only settings, so a document cache is not refused
        because a query prefix changed.
        """
        fmt, cfg = self.text_format, self.config
        info: dict[str, Any] = {
            "model": cfg.model_name_or_path,
            "model_fingerprint": model_fingerprint(cfg.model_name_or_path),
            "tokenizer": cfg.tokenizer_name_or_path,
            "pooling": cfg.pooling,
            "normalize": cfg.normalize,
            "append_eos": fmt.append_eos,
            "eos_token": fmt.eos_token if fmt.append_eos else None,
            # The truncation used when a max_len flag is None (the model's own limit).
            "model_max_len": getattr(self, "_model_max_len", None),
        }
        # Listed only when set, so caches built before these settings existed keep matching.
        if cfg.trust_remote_code:
            info["trust_remote_code"] = True
        if fmt.strip:
            info["strip"] = True
        dense = getattr(self, "_dense_shapes", None)
        if dense:
            info["dense_modules"] = dense
        if side in ("document", "both"):
            info.update(doc_prefix=fmt.doc_prefix, doc_instruction=fmt.doc_instruction, doc_max_len=cfg.doc_max_len)
        if side in ("query", "both"):
            # The family table only feeds encode_queries(task=...); documents use doc_instruction.
            info.update(
                query_prefix=fmt.query_prefix,
                query_instruction=fmt.query_instruction,
                instruction_family=fmt.instruction_family,
                long_context=fmt.long_context,
                query_max_len=cfg.query_max_len,
            )
        return info

    @abstractmethod
    def close(self) -> None:
        """Release sockets or model memory."""

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lead(instruction: str, fmt: TextFormat) -> str:
    # REF: sentence-transformers before v5 measured a prompt by tokenising it alone as an input, i.e.
    # stripped (Instructor's 'paragraphs: ' would otherwise count T5's trailing '▁' token).
    return instruction.strip() if fmt.strip else instruction


def build_encoder(config: EncoderConfig, *, http_client: httpx.Client | None = None) -> Encoder:
    """Create the backend named by ``config.backend`` (``http_client`` only for vllm-server, e.g. tests)."""
    if config.backend == "transformers":
        return TransformersEncoder(config)
    return VllmServerEncoder(config, http_client=http_client)


# --- tokenisation shared by both backends --------------------------------------------------------


def _eos_id(tokenizer: Any, eos_token: str) -> int:
    """The single token id of ``eos_token``; a multi-token EOS could not be appended as an id."""
    token_id = tokenizer.convert_tokens_to_ids(eos_token)
    if token_id is None or (token_id == tokenizer.unk_token_id and eos_token != tokenizer.unk_token):
        raise ValueError(f"eos_token {eos_token!r} is not a single token of this tokenizer")
    return int(token_id)


def tokenize_with_eos(tokenizer: Any, texts: list[str], max_len: int | None, eos_id: int | None) -> list[list[int]]:
    """Tevatron's collator (training.md §9.2): truncate to ``max_len - 1``, then append the EOS id."""
    limit = max_len if eos_id is None or max_len is None else max_len - 1
    encoded = tokenizer(
        texts,
        add_special_tokens=True,
        truncation=limit is not None,
        max_length=limit,
        padding=False,
        return_attention_mask=False,
    )["input_ids"]
    return [list(ids) + [eos_id] for ids in encoded] if eos_id is not None else [list(ids) for ids in encoded]


def _check_eos_roundtrip(tokenizer: Any, eos_token: str, eos_id: int) -> None:
    """Warn when ``text + eos_string`` does not tokenise to ``ids(text) + [eos_id]`` (e.g. an EOS
    token that strips neighbouring spaces): then a vLLM server would see other ids than we do."""
    probe = "query: probe text "
    as_text = tokenizer(probe + eos_token, add_special_tokens=True)["input_ids"]
    as_id = tokenizer(probe, add_special_tokens=True)["input_ids"] + [eos_id]
    if list(as_text) != list(as_id):
        logger.warning(
            "appending EOS %r as text gives other token ids than appending id %d (%s vs %s); "
            "vllm-server and transformers encodings may differ",
            eos_token,
            eos_id,
            as_text[-4:],
            as_id[-4:],
        )


def sentence_transformers_max_len(path: str) -> int | None:
    """``max_seq_length`` from a sentence-transformers folder's ``sentence_bert_config.json``, if any."""
    config_path = Path(path) / "sentence_bert_config.json"
    if not config_path.is_file():
        return None
    value = json.loads(config_path.read_text(encoding="utf-8")).get("max_seq_length")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def lora_adapter_base(path: str) -> str | None:
    """The base model of a LoRA adapter directory (``adapter_config.json``), or ``None`` for a full model."""
    config_path = Path(path) / "adapter_config.json"
    if not config_path.is_file():
        return None
    import json

    base = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{config_path} names no base_model_name_or_path; merge it with run_src.merge_lora --base_model")
    return str(base)


def _has_tokenizer(path: str) -> bool:
    return any((Path(path) / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def _load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def _load_model(path: str, dtype: Any, trust_remote_code: bool) -> tuple[Any, bool]:
    """The bare model and whether it is an encoder-only half: ``AutoModel``, or only the encoder of an
    encoder-decoder checkpoint (T5, or a saved ``T5EncoderModel`` such as Instructor), as sentence-transformers
    loads T5."""
    from transformers import AutoConfig, AutoModel, AutoModelForTextEncoding

    model_config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    architectures = getattr(model_config, "architectures", None) or []
    encoder_half = getattr(model_config, "is_encoder_decoder", False) or any(
        name.endswith("EncoderModel") for name in architectures
    )
    loader = AutoModelForTextEncoding if encoder_half else AutoModel
    return loader.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code), bool(encoder_half)


# --- transformers backend ------------------------------------------------------------------------


class TransformersEncoder(Encoder):
    """In-process HF ``AutoModel`` (bare encoder/decoder, no LM head) on CPU or CUDA."""

    def __init__(self, config: EncoderConfig) -> None:
        import torch
        from transformers import AutoModel

        device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if config.dtype == "auto":
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        else:
            dtype = getattr(torch, config.dtype)
        adapter_base = lora_adapter_base(config.model_name_or_path)
        tokenizer_source = config.tokenizer_name_or_path or config.model_name_or_path
        if adapter_base and not config.tokenizer_name_or_path and not _has_tokenizer(config.model_name_or_path):
            tokenizer_source = adapter_base  # an adapter saved without its tokenizer uses the base model's
        self.tokenizer = _load_tokenizer(tokenizer_source, config.trust_remote_code)
        fmt = config.text_format.with_eos(self.tokenizer.eos_token)
        super().__init__(config, fmt)
        self._eos_id = _eos_id(self.tokenizer, fmt.eos_token) if fmt.append_eos else None
        if self._eos_id is not None:
            _check_eos_roundtrip(self.tokenizer, fmt.eos_token, self._eos_id)
        pad_id = self.tokenizer.pad_token_id
        self._pad_id = int(pad_id if pad_id is not None else (self._eos_id or 0))
        self.device = torch.device(device)
        self._encoder_half = False
        if adapter_base:  # a LoRA adapter directory (e.g. a released RaDeR adapter): merged here, in memory
            from peft import PeftModel

            base = AutoModel.from_pretrained(adapter_base, dtype=dtype, trust_remote_code=config.trust_remote_code)
            merged = PeftModel.from_pretrained(base, config.model_name_or_path).merge_and_unload()
            self.model = merged.to(self.device).eval()
            logger.info("merged the LoRA adapter %s into %s in memory", config.model_name_or_path, adapter_base)
        else:
            model, self._encoder_half = _load_model(config.model_name_or_path, dtype, config.trust_remote_code)
            self.model = model.to(self.device).eval()
        self._dense = [module.to(self.device, dtype=dtype) for module in load_dense_modules(config.model_name_or_path)]
        self._compiled = compile_for_inference(self.model, self.device) if config.compile else None
        self._dense_shapes = [[int(m[0].in_features), int(m[0].out_features)] for m in self._dense]
        hidden = int(getattr(self.model.config, "hidden_size", 0) or getattr(self.model.config, "d_model", 0))
        self._dim = int(self._dense_shapes[-1][1]) if self._dense_shapes else hidden
        self._instruction_tokens: dict[str, int] = {}
        limit = getattr(self.tokenizer, "model_max_length", None)
        # A tokenizer without a real limit reports ~1e30; only a sane one caps "no truncation". A
        # sentence-transformers folder's own max_seq_length wins (MiniLM: 256, its tokenizer says 512), so
        # without a length flag our vectors are the ones SentenceTransformer.encode gives.
        self._model_max_len = sentence_transformers_max_len(config.model_name_or_path) or (
            int(limit) if limit and limit < 1_000_000 else None
        )
        logger.info(
            "loaded %s (%s, %s, dim %d, pooling %s, eos %r)",
            config.model_name_or_path,
            device,
            dtype,
            self._dim,
            config.pooling,
            fmt.eos_token if fmt.append_eos else None,
        )

    @property
    def dim(self) -> int:
        return self._dim

    def with_options(self, **changes: Any) -> TransformersEncoder:
        """A copy with other inference options that shares the loaded model (no second load).

        For options such as ``padding_side``, ``batch_size``, max lengths, pooling or text format;
        a different model, dtype or device needs a new encoder.
        """
        fixed = sorted(
            set(changes) & {"model_name_or_path", "tokenizer_name_or_path", "dtype", "device", "backend", "compile"}
        )
        if fixed:
            raise ValueError(f"with_options cannot change {fixed}; build a new encoder")
        clone = copy.copy(self)
        clone.config = dataclasses.replace(self.config, **changes)
        clone.text_format = clone.config.text_format.with_eos(self.tokenizer.eos_token)
        clone._eos_id = _eos_id(self.tokenizer, clone.text_format.eos_token) if clone.text_format.append_eos else None
        if clone._eos_id is not None:
            clone._pad_id = int(
                self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else clone._eos_id
            )
        return clone

    def token_ids(self, formatted: list[str], max_len: int | None) -> list[list[int]]:
        """The exact ids fed to the model for strings formatted without EOS (exposed for tests)."""
        limit = max_len if max_len is not None else self._model_max_len
        return tokenize_with_eos(self.tokenizer, formatted, limit, self._eos_id)

    def instruction_tokens(self, instruction: str) -> int | None:
        """Leading tokens the pooling leaves out (``None`` for poolings that keep every token)."""
        if self.config.pooling not in INSTRUCTION_FREE_POOLINGS:
            return None
        if instruction not in self._instruction_tokens:
            self._instruction_tokens[instruction] = instruction_token_count(self.tokenizer, instruction)
        return self._instruction_tokens[instruction]

    def _embed(
        self, texts: list[str], max_len: int | None, desc: str, show_progress: bool, instruction: str = ""
    ) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        skip = self.instruction_tokens(instruction)
        ids = self.token_ids(texts, max_len)
        # Longest first: fewer pad tokens per batch, and an out-of-memory shows up on batch one.
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = np.empty((len(ids), self._dim), dtype=np.float32)
        size = self.config.batch_size
        for start in tqdm(range(0, len(order), size), desc=desc, unit="batch", disable=not show_progress):
            chunk = order[start : start + size]
            out[chunk] = self._forward([ids[i] for i in chunk], skip)
        return out

    def _forward(self, batch: list[list[int]], instruction_tokens: int | None = None) -> np.ndarray:
        import torch

        width = max(len(seq) for seq in batch)
        input_ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):
            span = slice(width - len(seq), width) if self.config.padding_side == "left" else slice(0, len(seq))
            input_ids[row, span] = torch.tensor(seq, dtype=torch.long)
            mask[row, span] = 1
        inputs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": mask}
        # T5's encoder (Instructor) has relative positions and no cache: neither argument exists there.
        encoder_only = self._encoder_half
        if self.config.padding_side == "left" and not encoder_only:
            # Positions must count real tokens only, or left-padded rows would be shifted.
            inputs["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        # dynamo specialises sizes 0 and 1: a one-row or one-column batch would compile a graph of its own.
        compiled = self._compiled is not None and min(input_ids.shape) > 1
        model = self._compiled if compiled else self.model
        with torch.inference_mode():
            extra = {} if encoder_only else {"use_cache": False}
            hidden = model(**inputs, **extra).last_hidden_state
            pooled = pool_hidden_states(hidden, inputs["attention_mask"], self.config.pooling, instruction_tokens)
            for module in self._dense:
                pooled = module(pooled)
        return pooled.float().cpu().numpy()

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        self._compiled = None  # it holds the model too


def compile_for_inference(model: torch.nn.Module, device: torch.device) -> Any:
    """``torch.compile`` with dynamic shapes, so batches of any width share one graph.

    Inductor fuses the layer norms, GELUs and attention glue that the eager model runs op by op (MiniLM
    on two CPU cores: 1.15x sentence-transformers' speed in ``benchmarks.compare``). The cost is a
    one-off compile per graph (about 15 s on CPU; batches with and without padding are two graphs),
    worth it for a corpus, not for a handful of queries.
    """
    import torch

    if device.type == "cpu" and not any(shutil.which(cxx) for cxx in ("g++", "c++", "clang++")):
        raise RuntimeError("--encoder_compile on CPU needs a C++ compiler (g++ or clang++); install one or drop the flag")
    logger.info("torch.compile (dynamic shapes): the first batches of each shape class compile, later ones run fast")
    return torch.compile(model, dynamic=True)


# --- vLLM server backend -------------------------------------------------------------------------


class VllmServerEncoder(Encoder):
    """Client of an OpenAI-compatible ``/v1/embeddings`` endpoint with bounded, backed-off retries."""

    def __init__(self, config: EncoderConfig, http_client: httpx.Client | None = None) -> None:
        import httpx

        fmt = config.text_format
        self.tokenizer: Any = None
        needs_tokenizer = (fmt.append_eos and fmt.eos_token is None) or config.query_max_len or config.doc_max_len
        if needs_tokenizer:
            try:
                self.tokenizer = _load_tokenizer(
                    config.tokenizer_name_or_path or config.model_name_or_path, config.trust_remote_code
                )
            except (OSError, ValueError) as err:
                raise ValueError(
                    f"vllm-server encoder needs the tokenizer of {config.model_name_or_path!r} to resolve the "
                    "EOS string or to truncate; give a loadable model_name_or_path, or set "
                    "text_format.eos_token and leave query_max_len/doc_max_len as None"
                ) from err
            fmt = fmt.with_eos(self.tokenizer.eos_token)
        super().__init__(config, fmt)
        self._eos_id = _eos_id(self.tokenizer, fmt.eos_token) if self.tokenizer is not None and fmt.append_eos else None
        base = config.server_url.rstrip("/")  # type: ignore[union-attr]
        self.base_url = base[: -len("/v1")] if base.endswith("/v1") else base
        self.url = f"{self.base_url}/v1/embeddings"
        self.model_name = config.served_model_name or config.model_name_or_path
        self._owns_client = http_client is None
        self._client = http_client or httpx.Client(timeout=config.timeout_s)
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._request(["dimension probe"]).shape[1])
        return self._dim

    def check_health(self) -> None:
        """Raise :class:`EncoderServiceError` unless ``GET /health`` answers 200."""
        import httpx

        try:
            response = self._client.get(f"{self.base_url}/health", timeout=self.config.timeout_s)
        except httpx.HTTPError as err:
            raise EncoderServiceError(f"{self.base_url}/health", None, repr(err)) from err
        if response.status_code != 200:
            raise EncoderServiceError(f"{self.base_url}/health", response.status_code, response.text[:300])

    def _inputs(self, texts: list[str], max_len: int | None) -> list[str] | list[list[int]]:
        if max_len is None:
            eos = self.text_format.eos_token if self.text_format.append_eos else ""
            return [t + eos for t in texts]
        # Truncation must cut the same tokens as the transformers path, so send token ids.
        return tokenize_with_eos(self.tokenizer, texts, max_len, self._eos_id)

    def _embed(
        self, texts: list[str], max_len: int | None, desc: str, show_progress: bool, instruction: str = ""
    ) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        inputs = self._inputs(texts, max_len)
        size = self.config.batch_size
        batches = [inputs[start : start + size] for start in range(0, len(inputs), size)]
        # vLLM batches concurrent requests itself; one request at a time would leave the GPU idle between them.
        # map() keeps the batches' order, and the first failure (after its retries) cancels the rest.
        with concurrent.futures.ThreadPoolExecutor(min(self.config.concurrency, len(batches)), "embed") as pool:
            chunks = list(
                tqdm(pool.map(self._request, batches), total=len(batches), desc=desc, unit="batch",
                     disable=not show_progress)
            )  # fmt: skip
        vectors = np.concatenate(chunks, axis=0)
        self._dim = self._dim or int(vectors.shape[1])
        return vectors

    def _request(self, batch: list[str] | list[list[int]]) -> np.ndarray:
        payload = {"model": self.model_name, "input": batch, "encoding_format": "float"}
        body = self._post(payload)
        try:
            data = sorted(body["data"], key=lambda item: item["index"])
            vectors = np.asarray([item["embedding"] for item in data], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as err:
            raise EncoderServiceError(self.url, 200, f"malformed embeddings response: {err!r}") from err
        if [item["index"] for item in data] != list(range(len(batch))) or vectors.ndim != 2:
            raise EncoderServiceError(self.url, 200, f"expected {len(batch)} embeddings indexed 0..{len(batch) - 1}")
        if self._dim is not None and vectors.shape[1] != self._dim:
            raise EncoderServiceError(self.url, 200, f"embedding width changed from {self._dim} to {vectors.shape[1]}")
        return vectors

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        import httpx

        cfg = self.config
        status: int | None = None
        detail = ""
        for attempt in range(cfg.max_retries + 1):
            try:
                response = self._client.post(self.url, json=payload, timeout=cfg.timeout_s)
            except httpx.TransportError as err:  # includes timeouts and refused connections
                status, detail = None, repr(err)
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError:  # a truncated or garbled body is as transient as a dropped connection
                        status, detail = 200, f"model {self.model_name}: malformed JSON body {response.content[:200]!r}"
                else:
                    status, detail = response.status_code, response.text[:500]
                    if status not in RETRYABLE_STATUS:
                        raise EncoderServiceError(self.url, status, detail)
            if attempt < cfg.max_retries:
                delay = min(cfg.backoff_cap_s, cfg.backoff_base_s * 2**attempt)
                logger.warning(
                    "embeddings request failed (%s, %s); retry %d in %.1fs", status, detail[:120], attempt + 1, delay
                )
                time.sleep(delay)
        raise EncoderServiceError(self.url, status, f"gave up after {cfg.max_retries + 1} attempts: {detail}")

    def close(self) -> None:
        if self._owns_client:
            self._client.close()
