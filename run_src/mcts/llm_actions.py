"""The LLM- and retriever-backed :class:`~run_src.mcts.actions.ActionGenerator` (spec ``specs/mcts.md`` §6).

:class:`ActionResources` holds what all problems share (generator client, retriever clients, prompts,
settings); :class:`LLMActions` is made per problem and adds that problem's gold answer and seeds. Every
request carries a seed derived from (run seed, problem id, node id, action) ([FIX] S9: the reference sent
``seed=1`` everywhere), so a problem's tree does not depend on which other problems ran beside it.

Blocking by design: one search runs in one worker thread; the clients are thread-safe and the summaries
and self-reflections of one retrieval call (and the answers to one A3 call's sub-questions) are sent
concurrently. rStar's optional actions, A3 sub-questions and A5 rephrasing (spec §6.6), need their
prompts loaded (``MCTSPrompts.load(subquestions=True, rephrase=True)``).

Usage::

    resources = ActionResources(llm, RetrieverSet(dense=None, bm25=RetrieverClient(url)), ActionSettings())
    actions = LLMActions(resources, problem_id="P_1", gold_answer="7")
    root = ReasoningNode.new_root(question, "P_1", actions, ExpansionConfig())
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from models.answers.checking import grade, judge_equivalence
from models.llm.client import LLMClient, SamplingParams
from models.llm.prompt_templates import PROMPTS_DIR, PromptTemplate, load_prompt
from run_src.mcts.actions import (
    AnswerCompletion,
    AnswerGrade,
    QueryCandidate,
    RelevanceLabel,
    RetrievalOutcome,
    RetrievedTheorem,
    SubquestionStep,
)
from run_src.mcts.nodes import reach_terminal_subquestion, reward_for_grade
from run_src.mcts.parsing import (
    first_step,
    parse_candidate_theorems,
    parse_rephrased,
    parse_self_reflection,
    parse_subanswer,
    parse_subquestion,
    subanswer_key,
)
from run_src.mcts.partial_solution import retrieval_context_text, steps_text, subquestions_text

if TYPE_CHECKING:
    from models.serving.retriever_client import RetrieverClient
    from run_src.mcts.nodes import ReasoningNode

logger = logging.getLogger(__name__)

DenseName = Literal["Repllama", "RaDeR"]
# rStar floors a sub-answer's vote share so that no sub-question node is valued exactly 0 (spec §6.6).
MIN_SUBANSWER_VALUE = 0.01


@dataclass(frozen=True)
class ActionSettings:
    """Sampling and retrieval settings of the actions; defaults are the paper configuration (spec §6.1, §8.3)."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int | None = 40  # [FIX] S8: the reference never sent it
    ost_max_tokens: int = 256
    crs_max_tokens: int = 1024  # --max_tokens
    qg_max_tokens: int = 1024
    summary_max_tokens: int = 512
    reflection_max_tokens: int = 200
    llm_candidate_theorems: bool = True
    retrieval_selfreasoning: bool = True
    topk_rt: int = 5
    # Probability of the dense retriever when both dense and BM25 are configured (reference --threshold);
    # [FIX] P1: the BM25 branch works, and 1.0 means dense only.
    dense_probability: float = 1.0
    llm_judge: bool = False
    seed: int = 42
    # rStar A3/A5 (off in the paper configuration; spec §6.1 table, §6.6).
    subquestion_max_tokens: int = 128
    subanswer_max_tokens: int = 512
    rephrase_max_tokens: int = 512
    num_votes: int = 10  # answers sampled per non-final sub-question (rStar --num_votes)

    def __post_init__(self) -> None:
        if not 0.0 <= self.dense_probability <= 1.0:
            raise ValueError(f"dense_probability (--threshold) must be in [0, 1], got {self.dense_probability}")
        if self.topk_rt < 1:
            raise ValueError(f"topk_rt must be >= 1, got {self.topk_rt}")
        if self.num_votes < 1:
            raise ValueError(f"num_votes must be >= 1, got {self.num_votes}")


@dataclass(frozen=True)
class RetrieverSet:
    """The retriever servers the RT action may call; at least one must be given."""

    dense: RetrieverClient | None = None
    bm25: RetrieverClient | None = None
    dense_name: DenseName = "Repllama"

    def __post_init__(self) -> None:
        if self.dense is None and self.bm25 is None:
            raise ValueError("the retrieval action needs a dense retriever URL, a BM25 retriever URL, or both")


@dataclass(frozen=True)
class MCTSPrompts:
    """The prompt files of the actions (``prompts/mcts_*.txt``); the rStar ones only when their action is on."""

    ost: PromptTemplate
    crs: PromptTemplate
    query_generation: PromptTemplate
    summarize: PromptTemplate
    self_reflection: PromptTemplate
    subquestion: PromptTemplate | None = None  # A3: propose the next sub-question
    subanswer: PromptTemplate | None = None  # A3: answer one sub-question
    rephrase: PromptTemplate | None = None  # A5

    @classmethod
    def load(
        cls,
        llm_candidate_theorems: bool = True,
        prompts_dir: str | None = None,
        *,
        subquestions: bool = False,
        rephrase: bool = False,
    ) -> MCTSPrompts:
        root = PROMPTS_DIR if prompts_dir is None else Path(prompts_dir)
        steps = {"question", "partial_solution"}
        qg_file = "mcts_query_generation.txt" if llm_candidate_theorems else "mcts_query_generation_freetext.txt"
        answered = {"question", "subquestions"}
        return cls(
            ost=load_prompt(root / "mcts_ost.txt", steps),
            crs=load_prompt(root / "mcts_crs.txt", steps),
            query_generation=load_prompt(root / qg_file, steps),
            summarize=load_prompt(root / "mcts_summarize_theorem.txt", {"theorem"}),
            self_reflection=load_prompt(root / "mcts_self_reflection.txt", steps | {"theorem"}),
            subquestion=load_prompt(root / "mcts_subquestion.txt", answered) if subquestions else None,
            subanswer=load_prompt(root / "mcts_subanswer.txt", answered | {"subquestion"}) if subquestions else None,
            rephrase=load_prompt(root / "mcts_rephrase.txt", {"question"}) if rephrase else None,
        )

    def templates(self) -> tuple[PromptTemplate, ...]:
        """Every loaded template, the rStar ones included when present."""
        optional = (self.subquestion, self.subanswer, self.rephrase)
        return (
            self.ost,
            self.crs,
            self.query_generation,
            self.summarize,
            self.self_reflection,
            *(t for t in optional if t is not None),
        )

    def versions(self) -> dict[str, str]:
        """``{prompt name: version hash}``, recorded in ``args.json`` and every answer sheet."""
        return {t.name: t.version for t in self.templates()}


@dataclass
class ActionResources:
    """Everything the actions of all problems share. Thread-safe."""

    llm: LLMClient
    retrievers: RetrieverSet
    settings: ActionSettings
    prompts: MCTSPrompts | None = None

    def __post_init__(self) -> None:
        if self.prompts is None:
            self.prompts = MCTSPrompts.load(self.settings.llm_candidate_theorems)


def request_seed(run_seed: int, problem_id: str, node_id: int, action: str) -> int:
    """A 31-bit seed for one request, stable across runs and independent of scheduling."""
    digest = hashlib.sha256(f"{run_seed}|{problem_id}|{node_id}|{action}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class LLMActions:
    """One problem's actions: prompts → generator → parsed results, graded against ``gold_answer``."""

    def __init__(self, resources: ActionResources, problem_id: str, gold_answer: str) -> None:
        self.resources = resources
        self.problem_id = problem_id
        self.gold_answer = gold_answer
        assert resources.prompts is not None
        self.prompts = resources.prompts
        self.settings = resources.settings

    # --- plumbing ---------------------------------------------------------------------------------------

    def _params(
        self,
        node: ReasoningNode,
        action: str,
        max_tokens: int,
        n: int = 1,
        stop: tuple[str, ...] = (),
        greedy: bool = False,
    ) -> SamplingParams:
        s = self.settings
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=0.0 if greedy else s.temperature,
            top_p=1.0 if greedy else s.top_p,
            top_k=None if greedy else s.top_k,
            stop=stop,
            n=n,
            seed=request_seed(s.seed, self.problem_id, node.node_id, action),
        )

    # --- A1, A2, QG ---------------------------------------------------------------------------------------

    def generate_ost_steps(self, node: ReasoningNode, n: int) -> list[str]:
        """A1 (§6.2): ``n`` one-line next steps; empty samples are dropped rather than becoming empty nodes."""
        messages = self.prompts.ost.render(question=node.question, partial_solution=steps_text(node))
        completion = self.resources.llm.chat(
            messages, self._params(node, "ost", self.settings.ost_max_tokens, n, ("\n",))
        )
        return [step for step in (first_step(text) for text in completion.texts) if step]

    def generate_direct_answers(self, node: ReasoningNode, n: int) -> list[AnswerCompletion]:
        """A2/CRS (§6.5): ``n`` completions of the remaining steps, each graded against the gold answer."""
        messages = self.prompts.crs.render(question=node.question, partial_solution=steps_text(node))
        params = self._params(node, "crs", self.settings.crs_max_tokens, n, ("\nQuestion:",))
        completion = self.resources.llm.chat(messages, params)
        return [AnswerCompletion(text.strip(), self.grade_answer(node, text)) for text in completion.texts]

    def generate_queries(self, node: ReasoningNode, n: int) -> list[QueryCandidate]:
        """QG (§6.3): ``n`` generations; candidate-theorem blocks parsed per block, or each whole text as one query."""
        messages = self.prompts.query_generation.render(
            question=node.question, partial_solution=retrieval_context_text(node)
        )
        params = self._params(node, "qg", self.settings.qg_max_tokens, n, ("\nQuestion:",))
        texts = [text.strip() for text in self.resources.llm.chat(messages, params).texts]
        if self.settings.llm_candidate_theorems:
            return [candidate for text in texts for candidate in parse_candidate_theorems(text)]
        return [QueryCandidate(query=text, full_output=text) for text in texts if text]

    # --- RT -----------------------------------------------------------------------------------------------

    def _pick_retriever(self, node: ReasoningNode) -> tuple[RetrieverClient, str]:
        retrievers = self.retrievers
        if retrievers.dense is None:
            assert retrievers.bm25 is not None
            return retrievers.bm25, "BM25"
        if retrievers.bm25 is None or self.settings.dense_probability >= 1.0:
            return retrievers.dense, retrievers.dense_name
        draw = random.Random(request_seed(self.settings.seed, self.problem_id, node.node_id, "retriever")).random()
        if draw <= self.settings.dense_probability:
            return retrievers.dense, retrievers.dense_name
        return retrievers.bm25, "BM25"

    @property
    def retrievers(self) -> RetrieverSet:
        return self.resources.retrievers

    def retrieve(self, node: ReasoningNode, query: str) -> RetrievalOutcome:
        """RT (§6.4): top-k, drop theorems already on the path, summarize each, then judge each on its own.

        Candidates already on the path are removed before any LLM call (no back-fill, as the reference:
        S12). The outcome keeps the retriever's top-k scores for the trace and the score log.
        """
        client, name = self._pick_retriever(node)
        result = client.search(query, k=self.settings.topk_rt)
        on_path = set(node.theorem_ids)
        fresh = [
            (doc_id, text) for doc_id, text in zip(result.doc_ids, result.texts, strict=False) if doc_id not in on_path
        ]
        scores = dict(zip(result.doc_ids, result.scores, strict=True))
        if not fresh:
            return RetrievalOutcome(query=query, theorems=(), scores=scores, retriever_name=name)
        summaries = self._summarize(node, [text for _, text in fresh])
        verdicts: list[tuple[RelevanceLabel | None, str | None]]
        if self.settings.retrieval_selfreasoning:
            verdicts = self._self_reflect(node, summaries)
        else:
            verdicts = [(None, None)] * len(summaries)
        theorems = tuple(
            RetrievedTheorem(theorem_id=doc_id, summary=summary, label=label, reason=reason)
            for (doc_id, _), summary, (label, reason) in zip(fresh, summaries, verdicts, strict=True)
        )
        return RetrievalOutcome(query=query, theorems=theorems, scores=scores, retriever_name=name)

    def _gather_samples(
        self, conversations: list[list[dict[str, str]]], params: list[SamplingParams]
    ) -> list[list[str]]:
        """Send one request per conversation concurrently; every sample of each reply, in order."""

        async def run() -> list[list[str]]:
            completions = await asyncio.gather(
                *(self.resources.llm.achat(messages, p) for messages, p in zip(conversations, params, strict=True))
            )
            return [list(c.texts) for c in completions]

        return asyncio.run(run())

    def _gather(self, conversations: list[list[dict[str, str]]], params: list[SamplingParams]) -> list[str]:
        """Send one request per conversation concurrently; each reply's first sample, stripped."""
        return [(texts[0] if texts else "").strip() for texts in self._gather_samples(conversations, params)]

    def _summarize(self, node: ReasoningNode, texts: list[str]) -> list[str]:
        conversations = [self.prompts.summarize.render(theorem=" ".join(text.split())) for text in texts]
        params = [
            self._params(node, f"summary{i}", self.settings.summary_max_tokens, stop=("\nTheorem:",))
            for i in range(len(texts))
        ]
        summaries = self._gather(conversations, params)
        # An empty summary would hide the theorem from every later prompt: fall back to the original text.
        return [summary or " ".join(text.split())[:1000] for summary, text in zip(summaries, texts, strict=True)]

    def _self_reflect(self, node: ReasoningNode, summaries: list[str]) -> list[tuple[RelevanceLabel, str | None]]:
        # The QG node's own text is not part of the context: the path up to its parent is (§6.4.4).
        context = retrieval_context_text(node)
        conversations = [
            self.prompts.self_reflection.render(question=node.question, partial_solution=context, theorem=summary)
            for summary in summaries
        ]
        params = [
            self._params(node, f"reflection{i}", self.settings.reflection_max_tokens, stop=("\nQuestion:",))
            for i in range(len(summaries))
        ]
        return [parse_self_reflection(reply) for reply in self._gather(conversations, params)]

    # --- rStar A3, A5 (off by default) --------------------------------------------------------------------

    def _rstar_prompt(self, name: Literal["subquestion", "subanswer", "rephrase"]) -> PromptTemplate:
        template = getattr(self.prompts, name)
        if template is None:
            flag = "rephrase" if name == "rephrase" else "subquestions"
            raise ValueError(
                f"the {name} prompt is not loaded but its rStar action is enabled; build ActionResources with "
                f"MCTSPrompts.load(..., {flag}=True)"
            )
        return template

    def generate_subquestions(self, node: ReasoningNode, n: int) -> list[SubquestionStep]:
        """A3 (§6.6): ``n`` proposed sub-questions, each with its chosen answer and value.

        Proposals that do not parse, and repeats, are dropped (so fewer than ``n`` may come back). A final
        sub-question (``reach_terminal_subquestion``) makes a leaf, so its ``num_direct_answer_samples``
        answers are graded against the gold answer as A2's are: the first best is kept and its reward is the
        value. Any other sub-question is answered ``num_votes`` times; the first answer with the most common
        final value is kept, valued by that value's share of the samples (at least 0.01, as rStar).
        """
        proposer, answerer = self._rstar_prompt("subquestion"), self._rstar_prompt("subanswer")
        answered = subquestions_text(node)
        messages = proposer.render(question=node.question, subquestions=answered)
        params = self._params(node, "subquestion", self.settings.subquestion_max_tokens, n, ("\nAnswer",))
        proposals: list[str] = []
        for text in self.resources.llm.chat(messages, params).texts:
            subquestion = parse_subquestion(text)
            if subquestion is not None and subquestion.casefold() not in {p.casefold() for p in proposals}:
                proposals.append(subquestion)
        if not proposals:
            return []
        final = [reach_terminal_subquestion(subquestion, node.question) for subquestion in proposals]
        conversations = [
            answerer.render(question=node.question, subquestions=answered, subquestion=subquestion)
            for subquestion in proposals
        ]
        votes = [node.config.num_direct_answer_samples if is_final else self.settings.num_votes for is_final in final]
        answer_params = [
            self._params(node, f"subanswer{i}", self.settings.subanswer_max_tokens, k, ("\nSub-question", "\nProblem:"))
            for i, k in enumerate(votes)
        ]
        steps: list[SubquestionStep] = []
        samples_per_question = self._gather_samples(conversations, answer_params)
        for subquestion, is_final, samples in zip(proposals, final, samples_per_question, strict=True):
            answers = [answer for answer in (parse_subanswer(text) for text in samples) if answer]
            if not answers:
                continue  # a sub-question nobody answered would be an empty node
            if is_final:
                rewards = [
                    reward_for_grade(self.grade_answer(node, a), node.config.wrong_answer_reward) for a in answers
                ]
                best = max(rewards)
                steps.append(SubquestionStep(subquestion, answers[rewards.index(best)], best))
            else:
                steps.append(SubquestionStep(subquestion, *majority_subanswer(answers, len(samples))))
        return steps

    def rephrase_question(self, node: ReasoningNode) -> str:
        """A5 (§6.6): the question as numbered conditions plus the question; the question itself when the
        reply has no condition and ``Question:`` lines (the RU node then repeats it)."""
        messages = self._rstar_prompt("rephrase").render(question=node.question)
        params = self._params(node, "rephrase", self.settings.rephrase_max_tokens, 1, ("\nProblem:",))
        texts = self.resources.llm.chat(messages, params).texts
        rephrased = parse_rephrased(texts[0]) if texts else None
        if rephrased is None:
            logger.debug("problem %s node %d: unusable rephrasing, keeping the question", self.problem_id, node.node_id)
            return node.question
        return rephrased

    # --- rewards ------------------------------------------------------------------------------------------

    def answer_key(self, text: str) -> str | None:
        """The normalised final answer, for the self-consistency reward (the A3 votes use the same key)."""
        return subanswer_key(text)

    def grade_answer(self, node: ReasoningNode, text: str) -> AnswerGrade:
        """Gold-answer grade (§10.5): no ``\\boxed{}`` → UNFORMATTED; then symbolic check, then the optional judge."""
        result = grade(text, self.gold_answer, require_boxed=True)
        if result.extracted is None:
            return AnswerGrade.UNFORMATTED
        if result.correct:
            return AnswerGrade.CORRECT
        if self.settings.llm_judge and asyncio.run(
            judge_equivalence(self.resources.llm, result.extracted, self.gold_answer)
        ):
            return AnswerGrade.CORRECT
        return AnswerGrade.WRONG


def majority_subanswer(answers: list[str], num_samples: int) -> tuple[str, float]:
    """``(answer, value)`` by majority vote over the answers' final values (rStar A3).

    The first answer carrying the most common value wins (ties: the value seen first); the value is that
    count over ``num_samples`` (empty samples count against it), floored at :data:`MIN_SUBANSWER_VALUE`.
    Answers without a readable value do not vote; if none has one, the first answer gets the floor.
    """
    keys = [subanswer_key(answer) for answer in answers]
    counts = Counter(key for key in keys if key is not None)
    if not counts:
        return answers[0], MIN_SUBANSWER_VALUE
    key, count = counts.most_common(1)[0]
    return answers[keys.index(key)], max(count / max(num_samples, 1), MIN_SUBANSWER_VALUE)
