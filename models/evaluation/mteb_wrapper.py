"""Our dense encoders as an ``mteb`` 2.x model, for RAR-b (paper Table 3) and any other MTEB retrieval task.

:class:`MtebEncoder` adapts a :class:`models.retrieval.encoders.Encoder` to mteb's ``EncoderProtocol``: mteb hands
over batches of raw texts, we add the task instruction to queries and let the encoder apply its own
text format (prefixes, EOS, pooling, L2 normalisation), so the strings are exactly those of the
BRIGHT evaluation (:mod:`models.retrieval.text_formats` stays their single owner).

Instructions (specs/evaluation.md §7). The instruction is the task's own query prompt from its mteb
metadata (RARbMath: "Retrieve the answer for the following math problem."), put into a per-format
template between the query prefix and the query text; documents get none (RAR-b "w/ Inst.": query
instruction only). RaDeR has no RAR-b code and its wrapper is not published; we use the one its
BRIGHT evaluation used for every task (``Instruct: {instruction}\\nQuery: ``), giving
``query: Instruct: Retrieve the answer for the following math problem.\\nQuery: <problem><eos>``.
Formats without an instruction-tuned wrapper (RepLLaMA, sentence encoders) prepend the instruction
and a space, the RAR-b baselines' convention. ``instruction_template=None`` evaluates "w/o Inst.".

Usage::

    import mteb
    model = MtebEncoder(build_encoder(config), name="local/rader-7b")
    mteb.evaluate(model, mteb.get_tasks(tasks=["RARbMath"]), cache=None)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types import PromptType

from models.retrieval.encoders import Encoder

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from torch.utils.data import DataLoader

logger = logging.getLogger(__name__)

# BRIGHT's instruction wrapper for RaDeR/gte-Qwen2/E5 (models/retrieval/bright_instructions.json, trained_model).
INSTRUCT_QUERY_TEMPLATE = "Instruct: {instruction}\nQuery: "
# RAR-b "w/ Inst." for models without an instruction format: the instruction, a space, the query.
PREPEND_TEMPLATE = "{instruction} "
DEFAULT_INSTRUCTION_TEMPLATES: dict[str, str] = {
    "rader": INSTRUCT_QUERY_TEMPLATE,
    "rader_readme_train": INSTRUCT_QUERY_TEMPLATE,
    "repllama": PREPEND_TEMPLATE,
    "repllama_ref_eval": PREPEND_TEMPLATE,
    "plain": PREPEND_TEMPLATE,
}


def default_instruction_template(text_format: str) -> str:
    """The instruction template for a :data:`models.retrieval.text_formats.PRESETS` name (prepend for unknown ones)."""
    return DEFAULT_INSTRUCTION_TEMPLATES.get(text_format, PREPEND_TEMPLATE)


class MtebEncoder(AbsEncoder):
    """An :class:`Encoder` seen by mteb: cosine similarity over L2-normalised vectors.

    ``instruction_template`` must contain ``{instruction}``; ``None`` means no instruction at all.
    The encoder's own text format must not add a BRIGHT instruction (``encode_queries`` is called
    without a task, so family-table instructions never apply; a literal ``query_instruction`` would).
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        name: str,
        instruction_template: str | None = INSTRUCT_QUERY_TEMPLATE,
        revision: str | None = None,
    ) -> None:
        if instruction_template is not None and "{instruction}" not in instruction_template:
            raise ValueError(f"instruction_template {instruction_template!r} must contain '{{instruction}}'")
        if encoder.text_format.query_instruction:
            raise ValueError(
                f"the encoder's text format already adds the instruction {encoder.text_format.query_instruction!r}; "
                "build it without query_instruction and pass instruction_template instead"
            )
        self.model = encoder
        self.instruction_template = instruction_template
        if "/" not in name:
            name = f"local/{name}"  # mteb wants organization/model
        self.mteb_model_meta = ModelMeta.create_empty(
            overwrites={
                "name": name,
                "revision": revision,
                "embed_dim": encoder.dim,
                "similarity_fn_name": ScoringFunction.COSINE,
                "use_instructions": instruction_template is not None,
                "framework": ["PyTorch"],
                "languages": ["eng-Latn"],
            }
        )

    def query_instruction(self, task_metadata: TaskMetadata) -> str:
        """The text put between the query prefix and the query for this task ('' without a template)."""
        if self.instruction_template is None:
            return ""
        instruction = self.get_instruction(task_metadata, PromptType.query)
        return self.instruction_template.format(instruction=instruction) if instruction else ""

    def encode(
        self,
        inputs: DataLoader[Any],
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embed every text of ``inputs``: queries with the task instruction, documents as they are."""
        texts = [text for batch in inputs for text in batch["text"]]
        if prompt_type == PromptType.query:
            instruction = self.query_instruction(task_metadata)
            return self.model.encode_queries([instruction + text for text in texts], task=None)
        show_progress = bool(kwargs.get("show_progress_bar", False))
        return self.model.encode_documents(texts, show_progress=show_progress)
