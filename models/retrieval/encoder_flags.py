"""The dense-encoder flags of every stage, and the one rule that names a document-embedding cache.

Stage 1 (``encode_corpus``), the retriever servers (``serve_retriever``), evaluation (``evaluate_bright``,
``evaluate_rarb``) and query synthesis (``generate_queries``, with the prefix ``dense_``) all take these
flags from :func:`add_encoder_arguments`, with one spelling each::

    --model_path --tokenizer --pooling --text_format --eos_token --instruction_task --query_instruction
    --query_max_len --doc_max_len --encode_batch_size --dtype --device --trust_remote_code
    --encoder_backend --encoder_url --served_model_name --encoder_concurrency --encoder_compile

``--eos_token`` forces the EOS string a format appends (instead of the tokenizer's: the RaDeR reference's
query path hard-coded Qwen2.5-14B-Instruct's ``<|im_end|>`` for every checkpoint, spec §10 pitfall 6); a
format that appends no EOS refuses it. A format whose family instructs documents per split (Instructor)
takes the split from ``--instruction_task``, and a stage without that flag cannot use it.

Cache naming (DESIGN.md §3): ``<cache_root>/doc_emb/<doc_cache_name>/<corpus>/``. The name is derived
only from what determines the document vectors: the model's identity (a fingerprint of its files, see
:mod:`models.retrieval.model_identity`, so two checkpoints in folders of the same name never share a cache
and a copied checkpoint still finds its own), the pooling, normalisation, the document side of the text
format (prefix, instruction, EOS, stripping), the document length limit and whether the checkpoint's own
code runs. Query-side settings (query prefix,
instructions, query length), batch size, dtype, device and backend do not change it. It reads
``<model folder>-<text format>-<10 hex digits>``, e.g. ``rader-qwen2.5-7b-merged-rader-3f2a9c1d0e``.

Usage::

    add_encoder_arguments(parser, documents_only=True)
    flags = EncoderFlags.from_args(args)
    config = flags.encoder_config()
    name = doc_cache_name(config)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.retrieval.encoders import BACKENDS, DTYPES, POOLINGS, EncoderConfig
from models.retrieval.model_identity import model_fingerprint
from models.retrieval.text_formats import PRESETS, TextFormat, get_format, with_document_instruction

NO_INSTRUCTION = "none"
# Encoder flags that change how fast vectors are computed, never which: informational in every stage.
INFORMATIONAL_ENCODER_FLAGS = (
    "encode_batch_size", "device", "encoder_backend", "encoder_url", "served_model_name", "encoder_concurrency",
    "encoder_compile",
)  # fmt: skip
# The pooling each BRIGHT-baseline format was run with (spec evaluation.md §3), when --pooling is not given.
FORMAT_POOLINGS = {
    "bright_qwen2": "last",
    "bright_qwen": "last",
    "bright_sf": "last",
    "bright_e5": "last",
    "bright_bge": "cls",
    "bright_instructor": "mean_without_instruction",
}


@dataclass(frozen=True)
class EncoderFlags:
    """The resolved encoder flags of a stage; ``model_path`` empty means "no dense encoder"."""

    model_path: str = ""
    tokenizer: str | None = None
    pooling: str = ""
    text_format: str = ""
    eos_token: str | None = None
    instruction_task: str = ""
    query_instruction: str | None = None
    query_max_len: int | None = None
    doc_max_len: int | None = None
    encode_batch_size: int = 8
    dtype: str = "auto"
    device: str = "auto"
    encoder_backend: str = "transformers"
    encoder_url: str | None = None
    served_model_name: str | None = None
    encoder_concurrency: int | None = None  # vllm-server only; None: EncoderConfig's default
    encoder_compile: bool = False  # transformers only
    trust_remote_code: bool | None = None  # None: the retriever key's choice (False without one)

    @classmethod
    def from_args(cls, args: argparse.Namespace, prefix: str = "") -> EncoderFlags:
        values = {f.name: getattr(args, prefix + f.name) for f in dataclasses.fields(cls) if hasattr(args, prefix + f.name)}
        return cls(**values)

    def with_defaults(self, *, model_path: str = "", pooling: str = "", text_format: str = "") -> EncoderFlags:
        """Fill empty flags from a retriever key's defaults, then pooling from the format."""
        text_format = self.text_format or text_format or "rader"
        return dataclasses.replace(
            self,
            model_path=self.model_path or model_path,
            text_format=text_format,
            pooling=self.pooling or pooling or default_pooling(text_format),
        )

    def as_flags(self, prefix: str = "") -> dict[str, Any]:
        """Flag name -> value, as a stage records them."""
        return {prefix + k: v for k, v in dataclasses.asdict(self).items()}

    def instruction_split(self, task: str | None) -> str | None:
        """The BRIGHT split whose query instruction applies: ``--instruction_task`` or else ``task``."""
        if self.instruction_task == NO_INSTRUCTION:
            return None
        return self.instruction_task or task

    def text_format_for(self, long_context: bool = False) -> TextFormat:
        """The preset with these flags applied: literal query instruction, forced EOS, long-document
        instructions, and a per-split document instruction fixed from ``--instruction_task``."""
        fmt = get_format(self.text_format or "rader")
        if self.query_instruction is not None:
            fmt = dataclasses.replace(fmt, query_instruction=self.query_instruction)
        if self.eos_token is not None:
            if not self.eos_token:
                raise ValueError("--eos_token is empty; give the EOS string (e.g. '<|im_end|>') or leave the flag out")
            if not fmt.append_eos:
                raise ValueError(eos_refusal(self.eos_token, fmt))
            fmt = dataclasses.replace(fmt, eos_token=self.eos_token)
        if long_context:
            fmt = dataclasses.replace(fmt, long_context=True)
        if self.instruction_task == NO_INSTRUCTION:
            return fmt
        return with_document_instruction(fmt, self.instruction_task or None)

    def encoder_config(self, long_context: bool = False) -> EncoderConfig:
        """The :class:`EncoderConfig` these flags describe; ``ValueError`` for inconsistent ones."""
        if not self.model_path:
            raise ValueError("a dense encoder needs --model_path (a model directory or Hub id)")
        return EncoderConfig(
            model_name_or_path=self.model_path,
            tokenizer_name_or_path=self.tokenizer,
            pooling=self.pooling or default_pooling(self.text_format or "rader"),
            text_format=self.text_format_for(long_context),
            query_max_len=self.query_max_len,
            doc_max_len=self.doc_max_len,
            batch_size=self.encode_batch_size,
            dtype=self.dtype,
            device=self.device,
            backend=self.encoder_backend,
            server_url=self.encoder_url,
            served_model_name=self.served_model_name,
            trust_remote_code=bool(self.trust_remote_code),
            compile=self.encoder_compile,
            **({"concurrency": self.encoder_concurrency} if self.encoder_concurrency is not None else {}),
        )


def default_pooling(text_format: str) -> str:
    """A BRIGHT baseline's own pooling (:data:`FORMAT_POOLINGS`); else ``eos`` when the preset appends an EOS
    token (RaDeR/RepLLaMA decoders) and ``mean`` otherwise (sentence encoders)."""
    if text_format in FORMAT_POOLINGS:
        return FORMAT_POOLINGS[text_format]
    return "eos" if get_format(text_format).append_eos else "mean"


def eos_refusal(eos_token: str, fmt: TextFormat, flag: str = "--eos_token") -> str:
    """The message for an EOS string forced on a format that appends none."""
    eos_formats = sorted(name for name, preset in PRESETS.items() if preset.append_eos)
    return (
        f"{flag} {eos_token!r}: text format {fmt.name!r} appends no EOS, so there is nothing to replace; "
        f"drop {flag} or pick a format that appends one ({', '.join(eos_formats)})"
    )


def add_encoder_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    prefix: str = "",
    documents_only: bool = False,
    defaults: EncoderFlags | None = None,
    title: str = "dense encoder",
) -> None:
    """Add the encoder flags (module docstring) to ``parser``, each once, under an argument group.

    ``documents_only`` leaves out the query-side flags (instructions, query length) for stages that
    encode documents only. ``defaults`` sets the flags' defaults (empty pooling/text format: filled later
    from a retriever key or the format).
    """
    d = defaults or EncoderFlags()
    group = parser.add_argument_group(title) if isinstance(parser, argparse.ArgumentParser) else parser

    def flag(name: str, **kwargs: Any) -> None:
        group.add_argument(f"--{prefix}{name}", dest=f"{prefix}{name}", **kwargs)

    flag("model_path", default=d.model_path, help="model directory or Hub id (for vllm-server: tokenizer and identity)")
    flag("tokenizer", default=d.tokenizer, help="tokenizer directory or Hub id, when not the model's own")
    flag("pooling", default=d.pooling, choices=["", *POOLINGS], help="empty: eos when the format appends EOS, else mean")
    flag("text_format", default=d.text_format, choices=["", *sorted(PRESETS)], help="prefixes/EOS preset")
    flag(
        "eos_token",
        default=d.eos_token,
        help="EOS string the format appends, instead of the tokenizer's eos_token (e.g. '<|im_end|>')",
    )
    if not documents_only:
        flag(
            "instruction_task",
            default=d.instruction_task,
            help=f"BRIGHT split whose query instruction to use (default: the task's; '{NO_INSTRUCTION}': none)",
        )
        flag("query_instruction", default=d.query_instruction, help="literal query instruction replacing the table")
        flag("query_max_len", type=int, default=d.query_max_len, help="query tokens incl. EOS; default no truncation")
    flag("doc_max_len", type=int, default=d.doc_max_len, help="document tokens incl. EOS; default no truncation")
    flag("encode_batch_size", type=int, default=d.encode_batch_size, help="texts per forward pass / per request")
    flag("dtype", default=d.dtype, choices=DTYPES, help="auto: float32 on CPU, bfloat16 on CUDA")
    flag("device", default=d.device, help="auto: cuda if available, else cpu")
    flag("encoder_backend", default=d.encoder_backend, choices=BACKENDS, help="in-process or a vLLM embedding server")
    flag("encoder_url", default=d.encoder_url, help="vllm-server: base URL of the embedding server")
    flag("served_model_name", default=d.served_model_name, help="vllm-server: the model's name on the server")
    flag(
        "encoder_concurrency",
        type=int,
        default=d.encoder_concurrency,
        help=f"vllm-server: embedding requests in flight at once (default {EncoderConfig.concurrency})",
    )
    flag(
        "encoder_compile",
        action="store_true",
        default=d.encoder_compile,
        help="transformers: torch.compile the model; a one-off compile (~15 s per graph on CPU) for faster batches",
    )
    flag(
        "trust_remote_code",
        action=argparse.BooleanOptionalAction,
        default=d.trust_remote_code,
        help="run the checkpoint's own modelling/tokenizer code (default: the --model key's choice, else no)",
    )


def check_encoder_flags(flags: EncoderFlags, flag_prefix: str = "") -> str | None:
    """A message for flags that cannot work together, or ``None`` (call before loading anything)."""
    if flags.encode_batch_size < 1:
        return f"--{flag_prefix}encode_batch_size must be >= 1, got {flags.encode_batch_size}"
    if flags.encoder_concurrency is not None:
        if flags.encoder_backend != "vllm-server":
            return (
                f"--{flag_prefix}encoder_concurrency sets the requests in flight to a vLLM embedding server; "
                f"add --{flag_prefix}encoder_backend vllm-server or drop it"
            )
        if flags.encoder_concurrency < 1:
            return f"--{flag_prefix}encoder_concurrency must be >= 1, got {flags.encoder_concurrency}"
    if flags.encoder_compile and flags.encoder_backend != "transformers":
        return (
            f"--{flag_prefix}encoder_compile compiles the in-process model; a vLLM server compiles its own, "
            f"so drop it with --{flag_prefix}encoder_backend {flags.encoder_backend}"
        )
    if flags.encoder_backend == "vllm-server" and not flags.encoder_url:
        return f"--{flag_prefix}encoder_backend vllm-server needs --{flag_prefix}encoder_url (e.g. http://127.0.0.1:8002)"
    if flags.eos_token is not None:
        if not flags.eos_token:
            return f"--{flag_prefix}eos_token is empty; give the EOS string (e.g. '<|im_end|>') or leave the flag out"
        fmt = get_format(flags.text_format or "rader")
        if not fmt.append_eos:
            return eos_refusal(flags.eos_token, fmt, f"--{flag_prefix}eos_token")
    if not flags.model_path:
        return None
    try:
        flags.encoder_config()
    except ValueError as err:  # e.g. --pooling eos with a format that appends no EOS, --doc_max_len 1
        return str(err)
    return None


def doc_cache_name(config: EncoderConfig) -> str:
    """The document-embedding cache name for ``config`` (the rule in the module docstring)."""
    fmt = config.text_format
    determining = {
        "model": model_fingerprint(config.model_name_or_path),
        "tokenizer": model_fingerprint(config.tokenizer_name_or_path) if config.tokenizer_name_or_path else None,
        "pooling": config.pooling,
        "normalize": config.normalize,
        "doc_prefix": fmt.doc_prefix,
        "doc_instruction": fmt.doc_instruction,
        "append_eos": fmt.append_eos,
        "eos_token": fmt.eos_token,
        "doc_max_len": config.doc_max_len,
    }
    # Only when set, so the names of caches built before these settings existed stay the same.
    if fmt.strip:
        determining["strip"] = True
    if config.trust_remote_code:
        determining["trust_remote_code"] = True
    digest = hashlib.sha256(json.dumps(determining, sort_keys=True).encode()).hexdigest()[:10]
    folder = Path(config.model_name_or_path.rstrip("/")).name or "model"
    safe = "".join(c if c.isalnum() or c in "._+-" else "-" for c in folder).lstrip("._+-") or "model"
    return f"{safe}-{fmt.name}-{digest}"
