"""What an LLM reranking *style* is: how a (query, document) pair becomes one request, how the reply
becomes a score, and the sampling the style runs at unless a flag says otherwise.

Two styles implement it: ``ours`` (:mod:`models.reranking.llm`: a few-shot chat prompt, greedy decoding,
a lenient parser) and ``published`` (:mod:`models.reranking.published`: the zero-shot, split-specific
completion prompts, sampling and two-character parser of the reranker behind the paper's
"+QwenRerank", spec evaluation.md §5.3). :class:`models.reranking.llm.LLMReranker` runs either one;
this module knows nothing about servers or runs.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from models.llm.prompt_templates import PromptTemplate, load_prompt

Message = dict[str, str]
# ok: a score read from the reply; no_score: no score marker; unreadable: a marker with no number after it;
# out_of_range: a number outside 0-5; error: the request failed for good.
Status = Literal["ok", "no_score", "unreadable", "out_of_range", "error"]


@dataclass(frozen=True)
class ParsedScore:
    """A reply read back: ``score`` on the 0–1 scale, or ``None`` when the style's failure score applies;
    ``raw`` the 0–5 number read, if any."""

    score: float | None
    raw: float | None
    status: Status


@dataclass(frozen=True)
class SamplingDefaults:
    """The settings a style runs at when no flag overrides them."""

    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None
    unparsable_score: float  # rerank score (0-1 scale) for replies the parser gives no score and failed requests


class RerankStyle(abc.ABC):
    """One way of asking an LLM for a relevance judgement and reading its answer."""

    name: ClassVar[str]
    kind: ClassVar[Literal["chat", "completion"]]  # chat: the server applies the chat template; completion: raw text
    sampling: ClassVar[SamplingDefaults]
    placeholders: ClassVar[frozenset[str]]
    statuses: ClassVar[tuple[str, ...]]  # every status the style's judgements carry, for the run summary
    policy_statuses: ClassVar[frozenset[str]]  # statuses scored by ``unparsable_score``, not by the parser

    @abc.abstractmethod
    def prompt_path(self, task: str | None) -> Path:
        """The style's prompt file for ``task`` (a BRIGHT split, ``champ``, or ``None``)."""

    @abc.abstractmethod
    def request(self, template: PromptTemplate, task: str | None, query: str, document: str) -> list[Message] | str:
        """Chat messages (``kind == "chat"``) or the raw prompt text (``kind == "completion"``) for one pair."""

    @abc.abstractmethod
    def parse(self, reply: str) -> ParsedScore:
        """Read a reply; ``score is None`` exactly when the status is one of :attr:`policy_statuses`."""

    def load_template(self, path: str | Path) -> PromptTemplate:
        """Load ``path``, checking that it fills exactly this style's placeholders."""
        return load_prompt(Path(path), placeholders=self.placeholders)

    def describe(self, template: PromptTemplate, task: str | None) -> dict[str, Any]:
        """What shaped the scores, for the run's ``config.json``."""
        return {"style": self.name, "prompt": template.identity()}

    def score_of(self, status: str, parsed_score: float, unparsable_score: float) -> float:
        """The rerank score of a judged pair under the current failure policy (cached pairs are rescored so)."""
        return unparsable_score if status in self.policy_statuses else float(parsed_score)
