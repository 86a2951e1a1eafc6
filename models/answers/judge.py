"""The LLM answer-equivalence judge (spec ``specs/mcts.md`` §10.5): the last word on a boxed answer that the
string, numeric and symbolic checks of :mod:`models.answers.checking` rejected.

As in the reference, the judge sees the question, the gold answer and the whole completion (and the boxed
answer we extracted from it), so "the number of ways is 12" can be read in context. It answers at
temperature 0 with at most 20 tokens; the reply is parsed as a whole-word yes/no, not the reference's
substring test for ``True``, which counted "not True" as a match (§12 S4). Every call returns a
:class:`JudgeVerdict` that callers record next to the answer they graded.

Usage::

    verdict = await judge_equivalence(client, question=q, completion=text, prediction="12", gold="12")
    verdict.equivalent, verdict.reply
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.llm.prompt_templates import PROMPTS_DIR, PromptTemplate, load_prompt

if TYPE_CHECKING:
    from models.llm.client import LLMClient

logger = logging.getLogger(__name__)

JUDGE_PROMPT_PATH = PROMPTS_DIR / "answer_equivalence_judge.txt"
JUDGE_PLACEHOLDERS = frozenset({"question", "gold", "completion", "prediction"})
JUDGE_MAX_TOKENS = 20  # spec §13.1 item 9: judge replies are capped at 20 tokens
MAX_COMPLETION_CHARS = 6000  # a run-on completion must not crowd out the instruction


@dataclass(frozen=True)
class JudgeVerdict:
    """One judge call: ``equivalent`` is ``False`` for an unreadable reply (``readable`` says which)."""

    equivalent: bool
    readable: bool
    reply: str
    prompt_version: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_judge_prompt(path: Path = JUDGE_PROMPT_PATH) -> PromptTemplate:
    """The judge prompt as one user message; ``ValueError`` unless it uses exactly :data:`JUDGE_PLACEHOLDERS`."""
    return load_prompt(path, JUDGE_PLACEHOLDERS).with_shape("single_user")


def render_judge_prompt(
    *, question: str, completion: str, prediction: str, gold: str, path: Path = JUDGE_PROMPT_PATH
) -> list[dict[str, str]]:
    """The judge's messages for one answer (LaTeX braces in the fields are safe: they are values)."""
    completion = completion.strip()
    if len(completion) > MAX_COMPLETION_CHARS:
        completion = "... " + completion[-MAX_COMPLETION_CHARS:]  # the end holds the final answer
    return load_judge_prompt(path).render(
        question=question.strip() or "(not given)", completion=completion or prediction.strip(),
        prediction=prediction.strip(), gold=gold.strip(),
    )  # fmt: skip


def parse_judge_reply(reply: str) -> bool | None:
    """``True`` for yes, ``False`` for no, ``None`` for anything else.

    The first word decides (``"Yes."``, ``"**No**, because ..."``, ``"True"``); failing that, a reply that
    contains exactly one of the whole words yes/no.
    """
    text = re.sub(r"<think>.*?</think>", " ", reply, flags=re.DOTALL | re.IGNORECASE).lower()
    words = re.findall(r"[a-z]+", text)
    if not words or re.search(r"\b(?:yes\s*(?:or|/)\s*no|true\s*(?:or|/)\s*false)\b", text):  # an echo of the options
        return None
    if words[0] in ("yes", "no", "true", "false"):
        return words[0] in ("yes", "true")
    found = {w for w in words if w in ("yes", "no")}
    return (found == {"yes"}) if len(found) == 1 else None


async def judge_equivalence(
    client: LLMClient, *, question: str, completion: str, prediction: str, gold: str, seed: int | None = None
) -> JudgeVerdict:
    """Ask the generator whether ``completion``'s answer equals ``gold`` (temperature 0, one sample).

    An unreadable reply counts as not equivalent and is logged; ``LLMServiceError`` propagates so the caller
    can record the failure next to the item.
    """
    from models.llm.client import SamplingParams

    params = SamplingParams(max_tokens=JUDGE_MAX_TOKENS, temperature=0.0, n=1, seed=seed)
    template = load_judge_prompt()
    messages = render_judge_prompt(question=question, completion=completion, prediction=prediction, gold=gold)
    result = await client.achat(messages, params)
    reply = result.texts[0] if result.texts else ""
    verdict = parse_judge_reply(reply)
    if verdict is None:
        logger.warning("judge reply %r is neither yes nor no; counting as not equivalent", reply[:200])
    return JudgeVerdict(bool(verdict), verdict is not None, reply.strip(), template.version)
