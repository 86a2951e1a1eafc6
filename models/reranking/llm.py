"""LLM pointwise reranking ("+QwenRerank", evaluation.md §5.3): ask a generator for a 0–5 relevance
score per (query, document), read it back as 0–1 in steps of 0.2, and mix it with the first stage.

Owns the reranker (requests, failures, the unparsable-reply policy), the paper's interpolation, the
registry of styles (:data:`RERANK_STYLES`) and the ``ours`` style. A style (:mod:`models.reranking.style`)
decides the prompt, the request kind, the parser and the default sampling:

* ``ours``: the prompt ``prompts/rerank_relevance.txt`` (our own wording, with a per-task "what counts
  as relevant" sentence and two worked examples) as chat messages, at temperature 0 with a fixed seed,
  read by the lenient parser below;
* ``published``: the reference reranker's zero-shot split-specific completion prompts, sampling 0.6 /
  0.9 and two-character parser (:mod:`models.reranking.published`).

LLM calls go through :mod:`models.llm.client` (any OpenAI-compatible server, e.g. vLLM serving
Qwen2.5-32B-Instruct).

Scores (spec §5.3, §11.7): the reply's ``Relevance score: N`` becomes ``N / 5``; the final score is
``0.5 · rerank + 0.5 · first_stage`` with the first-stage score on its **raw** scale (cosine for
RaDeR, the z-scored hybrid on non-math splits). Nothing is normalised before mixing: the released
numbers were made that way, and z-scoring a cosine run changes them (theoremqa_theorems 0.51561 ->
0.45646, §4 and pitfall §10.13). Ties keep first-stage order.

In the ``ours`` style, unparsable replies (no score, a number outside 0–5) and failed requests get
``unparsable_score`` (default 0.0, "unrelated": the reference also gave 0 when its marker was
missing) and are recorded with their status so the run summary can count them. Differences from
the reference parser (which read exactly two characters after the *last* marker and gave −1 when
``float`` failed, so ``**4**`` became −1): we accept markdown around the number, decimals (rounded
half up to a whole step), ``N/5``-style fractions (rescaled to 0–5) and a reply that is only a number.

Usage::

    reranker = LLMReranker(client, LLMRerankerConfig(), task="theoremqa_theorems")
    judgements = reranker.score_pairs([("What is 2+2?", "2+2=4")])
    judgements[0].score, judgements[0].status
    LLMRerankerConfig.for_style("published", temperature=None)   # the style's sampling, flags win
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from models.llm.client import Completion, LLMClient, LLMServiceError, SamplingParams
from models.llm.prompt_templates import PROMPTS_DIR, PromptTemplate
from models.reranking.published import PUBLISHED
from models.reranking.style import Message, ParsedScore, RerankStyle, SamplingDefaults, Status

logger = logging.getLogger(__name__)

PROMPT_PATH = PROMPTS_DIR / "rerank_relevance.txt"
PROMPT_PLACEHOLDERS = frozenset({"criterion", "query", "document"})
MAX_SCORE = 5  # the prompt's scale is 0..5; /5 gives the paper's 0-1 scale in steps of 0.2
DEFAULT_RERANK_WEIGHT = 0.5  # final = 0.5·rerank + 0.5·first stage (spec §5.3)

STATUSES: tuple[str, ...] = ("ok", "no_score", "out_of_range", "error")  # those of the ours style
# Greedy and seeded, so a rerun gives the same replies; 32 tokens as the reference's max_tokens.
OURS_SAMPLING = SamplingDefaults(temperature=0.0, top_p=1.0, max_tokens=32, seed=0, unparsable_score=0.0)

# What counts as relevant, per task family (our wording; the reference's split-specific prompts, §5.3,
# differ in the same way: helpfulness for posts, shared technique for math and code problems).
_GENERAL = (
    "a document is relevant when it contains information that helps answer the post; sharing the topic "
    "or keywords without helping is not enough."
)
_MATH_PROBLEMS = (
    "the query is a math problem; a document is relevant when it is a problem or solution that relies on "
    "the same mathematical technique or theorem, even if the topic or numbers differ."
)
_THEOREMS = (
    "the query is a math problem; a document is relevant when it states a theorem, definition or fact "
    "that helps solve the problem."
)
_CODING = (
    "the query is a coding problem; a document is relevant when it is a problem or solution that relies on "
    "the same algorithm or data structure (for example dynamic programming, graph search, sorting, two "
    "pointers), even if the story differs."
)
_PONY = (
    "the query asks for a program in the Pony programming language; a document is relevant when it "
    "documents a part of Pony that the program needs."
)
CRITERIA: dict[str, str] = {
    "aops": _MATH_PROBLEMS,
    "theoremqa_questions": _MATH_PROBLEMS,
    "theoremqa_theorems": _THEOREMS,
    "champ": _THEOREMS,
    "leetcode": _CODING,
    "pony": _PONY,
}


def criterion_for(task: str | None) -> str:
    """The relevance criterion for ``task``; StackExchange splits and unknown tasks get the general one."""
    return CRITERIA.get(task or "", _GENERAL)


# ---------------------------------------------------------------------------------------------- parsing


_NUMBER = r"([-+]?\d+(?:\.\d+)?)"
_FRACTION = rf"{_NUMBER}(?:\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?))?"
# "Relevance score: 4", "**Relevance Score:** 4/5", "relevance score = 3.5", "Relevance score - `2`".
_MARKER = re.compile(rf"relevance\s*score\s*[:=\-]?[\s*_`'\"]*{_FRACTION}", re.IGNORECASE)
# A reply that is nothing but a number ("4", "4.", "**3**", "4/5").
_BARE = re.compile(rf"^[\s*_`'\"(\[]*{_FRACTION}[\s*_`'\")\].!]*$", re.IGNORECASE)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def parse_relevance_score(reply: str) -> ParsedScore:
    """Read the last ``Relevance score: N`` of ``reply`` (or a reply that is only a number).

    ``N`` may be a decimal (rounded half up to a whole step: 3.5 -> 4 -> 0.8) or a fraction
    ``a/b`` (rescaled to 0–5: ``8/10`` -> 4). A number outside 0–5 is ``out_of_range``; no number at
    all is ``no_score``. Reasoning in ``<think>…</think>`` is ignored.
    """
    text = _THINK.sub(" ", reply or "")
    matches = list(_MARKER.finditer(text))
    match = matches[-1] if matches else _BARE.match(text)
    if match is None:
        return ParsedScore(None, None, "no_score")
    value = float(match.group(1))
    if match.group(2) is not None:
        denominator = float(match.group(2))
        if denominator <= 0:
            return ParsedScore(None, None, "out_of_range")
        value = value / denominator * MAX_SCORE
    if not math.isfinite(value) or not 0.0 <= value <= MAX_SCORE:
        return ParsedScore(None, value if math.isfinite(value) else None, "out_of_range")
    steps = math.floor(value + 0.5)  # round half up: 2.5 -> 3 (Python's round would give 2)
    return ParsedScore(round(steps / MAX_SCORE, 10), value, "ok")


# ---------------------------------------------------------------------------------------------- styles


class OursStyle(RerankStyle):
    """Our few-shot chat prompt with a per-task criterion, greedy decoding and the lenient parser above."""

    name = "ours"
    kind = "chat"
    sampling = OURS_SAMPLING
    placeholders = PROMPT_PLACEHOLDERS
    statuses = STATUSES
    policy_statuses = frozenset({"no_score", "out_of_range", "error"})

    def prompt_path(self, task: str | None) -> Path:
        return PROMPT_PATH

    def request(self, template: PromptTemplate, task: str | None, query: str, document: str) -> list[Message]:
        return template.render(criterion=criterion_for(task), query=query, document=document)

    def parse(self, reply: str) -> ParsedScore:
        return parse_relevance_score(reply)

    def describe(self, template: PromptTemplate, task: str | None) -> dict[str, Any]:
        return {**super().describe(template, task), "criterion": criterion_for(task)}


OURS = OursStyle()
RERANK_STYLES: dict[str, RerankStyle] = {style.name: style for style in (OURS, PUBLISHED)}


def rerank_style(name: str) -> RerankStyle:
    """The registered style ``name``; ``ValueError`` naming the choices otherwise."""
    if name not in RERANK_STYLES:
        raise ValueError(f"unknown rerank style {name!r}; choose one of {sorted(RERANK_STYLES)}")
    return RERANK_STYLES[name]


# ---------------------------------------------------------------------------------------------- mixing


def rank_by(scores: Mapping[str, float], tie_order: Sequence[str]) -> dict[str, float]:
    """``scores`` as a dict ordered best first, ties in ``tie_order`` (the first-stage ranking).

    Documents missing from ``tie_order`` follow, in their own order. pytrec_eval ignores dict order
    (it breaks ties by descending doc id, §2.3), but score files read in order should see the stable one.
    """
    position = {doc_id: i for i, doc_id in enumerate(tie_order)}
    fallback = len(position)
    docs = sorted(scores, key=lambda d: (-scores[d], position.get(d, fallback)))
    return {doc_id: scores[doc_id] for doc_id in docs}


def combine_scores(
    rerank: Mapping[str, float], first_stage: Mapping[str, float], rerank_weight: float = DEFAULT_RERANK_WEIGHT
) -> dict[str, float]:
    """``w · rerank + (1 − w) · first_stage`` for every reranked document, best first.

    Both scores are used as they are (rerank on 0–1, first stage raw); ``w = 1`` is rerank-only,
    ``w = 0.5`` the paper's interpolation. Ties keep the first-stage order (``first_stage`` dict order).
    """
    if not 0.0 <= rerank_weight <= 1.0:
        raise ValueError(f"rerank_weight must be in [0, 1], got {rerank_weight}")
    missing = [doc_id for doc_id in rerank if doc_id not in first_stage]
    if missing:
        raise ValueError(f"{len(missing)} reranked documents have no first-stage score (first: {missing[:3]})")
    mixed = {d: rerank_weight * s + (1.0 - rerank_weight) * float(first_stage[d]) for d, s in rerank.items()}
    return rank_by(mixed, list(first_stage))


# ---------------------------------------------------------------------------------------------- reranker


@dataclass(frozen=True)
class LLMRerankerConfig:
    """Style, sampling and failure policy of the LLM reranker; recorded in the run's config.json.

    The field defaults are the ``ours`` style's; :meth:`for_style` starts from another style's.
    """

    style: str = field(default="ours", metadata={"help": "prompt, request kind and parser (RERANK_STYLES)"})
    max_tokens: int = field(default=OURS_SAMPLING.max_tokens, metadata={"help": "reply budget"})
    temperature: float = field(default=OURS_SAMPLING.temperature, metadata={"help": "0 = greedy, reproducible"})
    top_p: float = field(default=OURS_SAMPLING.top_p, metadata={"help": "nucleus sampling mass (1 = off)"})
    seed: int | None = field(default=OURS_SAMPLING.seed, metadata={"help": "sent to the server; None = not sent"})
    max_doc_chars: int | None = field(
        default=None, metadata={"help": "cut each document to this many characters (None: whole document)"}
    )
    unparsable_score: float = field(
        default=OURS_SAMPLING.unparsable_score,
        metadata={"help": "rerank score (0-1 scale) for replies the parser gives no score and failed calls"},
    )
    prompt_path: str | None = field(
        default=None, metadata={"help": "prompt file (prompt_templates format); None = the style's for the task"}
    )

    def __post_init__(self) -> None:
        rerank_style(self.style)
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_doc_chars is not None and self.max_doc_chars < 1:
            raise ValueError(f"max_doc_chars must be >= 1 or None, got {self.max_doc_chars}")
        if not math.isfinite(self.unparsable_score):
            raise ValueError(f"unparsable_score must be finite, got {self.unparsable_score}")

    @classmethod
    def for_style(cls, style: str, **given: Any) -> LLMRerankerConfig:
        """The config of ``style`` with its default sampling; values in ``given`` that are not ``None`` win.

        An explicit ``--temperature 0`` with the published style is therefore greedy decoding of the
        published prompt: the style fixes the prompt and parser, flags only change what they name.
        """
        defaults = dataclasses.asdict(rerank_style(style).sampling)
        return cls(style=style, **{**defaults, **{k: v for k, v in given.items() if v is not None}})


@dataclass(frozen=True)
class Judgement:
    """The reranker's verdict on one pair: the score used for ranking plus what it came from."""

    score: float
    status: Status
    raw: float | None = None
    reply: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"score": self.score, "status": self.status, "raw": self.raw, "reply": self.reply, "error": self.error}


class LLMReranker:
    """Scores (query, document) pairs with one request each (chat or completion, by style), many in flight."""

    def __init__(self, client: LLMClient, config: LLMRerankerConfig | None = None, task: str | None = None) -> None:
        self.client = client
        self.config = config or LLMRerankerConfig()
        self.task = task
        self.style = rerank_style(self.config.style)
        self.template: PromptTemplate = self.style.load_template(
            self.config.prompt_path or self.style.prompt_path(task)
        )
        self.params = SamplingParams(
            max_tokens=self.config.max_tokens,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            seed=self.config.seed,
            n=1,
        )

    def request(self, query: str, document: str) -> list[Message] | str:
        """The request for one pair: chat messages (the server applies the chat template) or raw prompt text."""
        limit = self.config.max_doc_chars
        return self.style.request(self.template, self.task, query, document[:limit] if limit else document)

    def describe(self) -> dict[str, Any]:
        """The style, prompt identity and task-specific part of the prompt, for the run's config.json."""
        return self.style.describe(self.template, self.task)

    def judge(self, reply: str) -> Judgement:
        """Apply the style's parser and the unparsable-reply policy to one reply."""
        parsed = self.style.parse(reply)
        score = parsed.score if parsed.score is not None else self.config.unparsable_score
        return Judgement(score, parsed.status, parsed.raw, reply)

    def failed(self, error: BaseException) -> Judgement:
        return Judgement(self.config.unparsable_score, "error", None, None, f"{type(error).__name__}: {error}")

    async def ascore_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[Judgement]:
        """Judge every ``(query, document)`` pair; results keep input order.

        Chat styles send all requests through ``agather_chat`` (bounded by the client's
        ``max_concurrency``); if one fails for good, the batch is resent request by request so that only
        the failing pairs are recorded as ``error`` and the rest still count. Completion styles send each
        request on its own, so a failure is recorded for its pair alone from the start.
        """
        if not pairs:
            return []
        requests = [self.request(query, document) for query, document in pairs]
        completions: Sequence[Completion | BaseException]
        if self.style.kind == "completion":
            sends = [self.client.acomplete(cast(str, prompt), self.params) for prompt in requests]
            completions = await asyncio.gather(*sends, return_exceptions=True)
            return self._judgements(completions)
        conversations = [cast(list[Message], messages) for messages in requests]
        try:
            completions = await self.client.agather_chat(conversations, self.params)
        except LLMServiceError as err:
            logger.warning("a rerank request failed (%s); resending the %d requests one by one", err, len(pairs))
            completions = await asyncio.gather(
                *(self.client.achat(messages, self.params) for messages in conversations), return_exceptions=True
            )
        return self._judgements(completions)

    def _judgements(self, completions: Sequence[Completion | BaseException]) -> list[Judgement]:
        """One judgement per request; a request that failed for good is recorded, anything else raises."""
        judgements: list[Judgement] = []
        for completion in completions:
            if isinstance(completion, LLMServiceError):
                judgements.append(self.failed(completion))
            elif isinstance(completion, BaseException):
                raise completion
            else:
                judgements.append(self.judge(completion.texts[0] if completion.texts else ""))
        return judgements

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[Judgement]:
        """Blocking :meth:`ascore_pairs` (for code without an event loop)."""
        return asyncio.run(self.ascore_pairs(pairs))
