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

from models.answers.checking import SymbolicChecker, grade
from models.answers.extraction import extract_boxed
from models.answers.judge import judge_equivalence
from models.llm.client import LLMClient, SamplingParams
from models.llm.prompt_templates import PROMPTS_DIR, PromptTemplate, load_prompt
from models.retrieval.theorem_text import statement_for_prompt
from run_src.mcts.action_counts import ActionCounts
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
    # Scores kept per retrieval call for the score log (the trace keeps the top-k): recall of MCTS queries.
    retrieval_score_depth: int = 100
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
        if self.retrieval_score_depth < 1:
            raise ValueError(f"retrieval_score_depth must be >= 1, got {self.retrieval_score_depth}")
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
    """The prompt files of the actions (``prompts/mcts_*.txt``); the rStar ones only when their action is on.

    ``shape`` is how every prompt is sent: ``single_user`` (one user message with the few-shot block, as the
    spec's §13.1(8) and the reference) or ``chat_turns`` (system message and few-shot turns).
    """

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
        shape: str = "single_user",
    ) -> MCTSPrompts:
        root = PROMPTS_DIR if prompts_dir is None else Path(prompts_dir)

        def load(name: str, placeholders: set[str]) -> PromptTemplate:
            return load_prompt(root / name, placeholders).with_shape(shape)

        steps = {"question", "partial_solution"}
        qg_file = "mcts_query_generation.txt" if llm_candidate_theorems else "mcts_query_generation_freetext.txt"
        answered = {"question", "subquestions"}
        return cls(
            ost=load("mcts_ost.txt", steps),
            crs=load("mcts_crs.txt", steps),
            query_generation=load(qg_file, steps),
            summarize=load("mcts_summarize_theorem.txt", {"theorem"}),
            self_reflection=load("mcts_self_reflection.txt", steps | {"theorem"}),
            subquestion=load("mcts_subquestion.txt", answered) if subquestions else None,
            subanswer=load("mcts_subanswer.txt", answered | {"subquestion"}) if subquestions else None,
            rephrase=load("mcts_rephrase.txt", {"question"}) if rephrase else None,
        )

    @property
    def shape(self) -> str:
        return self.ost.shape

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
    """Everything the actions of all problems share. Thread-safe.

    ``checker`` is the symbolic-grading pool (sized to the number of concurrent searches by the runner);
    ``None`` uses the process-wide one-worker checker.
    """

    llm: LLMClient
    retrievers: RetrieverSet
    settings: ActionSettings
    prompts: MCTSPrompts | None = None
    checker: SymbolicChecker | None = None

    def __post_init__(self) -> None:
        if self.prompts is None:
            self.prompts = MCTSPrompts.load(self.settings.llm_candidate_theorems)


def request_seed(run_seed: int, problem_id: str, node_id: int, action: str) -> int:
    """A 31-bit seed for one request, stable across runs and independent of scheduling."""
    digest = hashlib.sha256(f"{run_seed}|{problem_id}|{node_id}|{action}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class LLMActions:
    """One problem's actions: prompts → generator → parsed results, graded against ``gold_answer``.

    ``counts`` tallies requests and unparsable outputs per action; ``judge_verdicts`` lists every LLM-judge
    call (answer, verdict, reply) for the answer sheet.
    """

    def __init__(self, resources: ActionResources, problem_id: str, gold_answer: str) -> None:
        self.resources = resources
        self.problem_id = problem_id
        self.gold_answer = gold_answer
        assert resources.prompts is not None
        self.prompts = resources.prompts
        self.settings = resources.settings
        self.counts = ActionCounts(problem_id)
        self.judge_verdicts: list[dict[str, object]] = []

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
        steps = [first_step(text) for text in completion.texts]
        self.counts.record("ost", node.node_id, completion.texts, [not step for step in steps])
        return [step for step in steps if step]

    def generate_direct_answers(self, node: ReasoningNode, n: int) -> list[AnswerCompletion]:
        """A2/CRS (§6.5): ``n`` completions of the remaining steps, each graded against the gold answer."""
        messages = self.prompts.crs.render(question=node.question, partial_solution=steps_text(node))
        params = self._params(node, "crs", self.settings.crs_max_tokens, n, ("\nContext:", "\nQuestion:"))
        completion = self.resources.llm.chat(messages, params)
        self.counts.record("crs", node.node_id, completion.texts, [extract_boxed(t) is None for t in completion.texts])
        return [
            AnswerCompletion(text.strip(), self.grade_answer(node, text, sample=f"crs{i}"))
            for i, text in enumerate(completion.texts)
        ]

    def generate_queries(self, node: ReasoningNode, n: int) -> list[QueryCandidate]:
        """QG (§6.3): ``n`` generations; candidate-theorem blocks parsed per block, or each whole text as one query."""
        messages = self.prompts.query_generation.render(
            question=node.question, partial_solution=retrieval_context_text(node)
        )
        params = self._params(node, "qg", self.settings.qg_max_tokens, n, ("\nQuestion:",))
        texts = [text.strip() for text in self.resources.llm.chat(messages, params).texts]
        if not self.settings.llm_candidate_theorems:
            self.counts.record("qg", node.node_id, texts, [not text for text in texts])
            return [QueryCandidate(query=text, full_output=text) for text in texts if text]
        parsed = [parse_candidate_theorems(text) for text in texts]
        self.counts.record("qg", node.node_id, texts, [not candidates for candidates in parsed])
        return [candidate for candidates in parsed for candidate in candidates]

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
        """RT (§6.4): top-k, drop theorems already on the path, summarize each statement, then judge each.

        Candidates already on the path are removed before any LLM call (no back-fill, as the reference:
        S12). The summarizer sees the theorem's statement without its proof (§3.1, §6.4.3). The outcome keeps
        the top-k scores for the trace and the scores to ``retrieval_score_depth`` for the score log.
        """
        client, name = self._pick_retriever(node)
        depth = max(self.settings.topk_rt, self.settings.retrieval_score_depth)
        result = client.search(query, k=depth)
        top = self.settings.topk_rt
        on_path = set(node.theorem_ids)
        fresh = [
            (doc_id, text)
            for doc_id, text in zip(result.doc_ids[:top], result.texts[:top], strict=False)
            if doc_id not in on_path
        ]
        deep_scores = dict(zip(result.doc_ids, result.scores, strict=True))
        scores = dict(list(deep_scores.items())[:top])
        if not fresh:
            return RetrievalOutcome(query, (), scores, name, deep_scores)
        statements = [statement_for_prompt(text) for _, text in fresh]
        summaries = self._summarize(node, statements)
        verdicts: list[tuple[RelevanceLabel | None, str | None]]
        if self.settings.retrieval_selfreasoning:
            verdicts = self._self_reflect(node, summaries)
        else:
            verdicts = [(None, None)] * len(summaries)
        theorems = tuple(
            RetrievedTheorem(doc_id, summary, label, reason, statement=statement, text=text)
            for (doc_id, text), statement, summary, (label, reason) in zip(
                fresh, statements, summaries, verdicts, strict=True
            )
        )
        self.counts.record_theorems(t.label.value if t.label is not None else "unjudged" for t in theorems)
        return RetrievalOutcome(query, theorems, scores, name, deep_scores)

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

    def _summarize(self, node: ReasoningNode, statements: list[str]) -> list[str]:
        conversations = [self.prompts.summarize.render(theorem=statement) for statement in statements]
        params = [
            self._params(node, f"summary{i}", self.settings.summary_max_tokens, stop=("\nTheorem:",))
            for i in range(len(statements))
        ]
        summaries = self._gather(conversations, params)
        self.counts.record("summary", node.node_id, summaries, [not summary for summary in summaries])
        # An empty summary would hide the theorem from every later prompt: fall back to the statement.
        return [summary or statement[:1000] for summary, statement in zip(summaries, statements, strict=True)]

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
        replies = self._gather(conversations, params)
        verdicts = [parse_self_reflection(reply) for reply in replies]
        unreadable = [label is RelevanceLabel.UNPARSABLE for label, _ in verdicts]
        self.counts.record("reflection", node.node_id, replies, unreadable)
        return verdicts

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
        texts = self.resources.llm.chat(messages, params).texts
        self.counts.record("subquestion", node.node_id, texts, [parse_subquestion(t) is None for t in texts])
        for text in texts:
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
                    reward_for_grade(self.grade_answer(node, a, sample=f"final{j}"), node.config.wrong_answer_reward)
                    for j, a in enumerate(answers)
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
        self.counts.record("rephrase", node.node_id, texts[:1], [rephrased is None])
        if rephrased is None:
            logger.debug("problem %s node %d: unusable rephrasing, keeping the question", self.problem_id, node.node_id)
            return node.question
        return rephrased

    # --- rewards ------------------------------------------------------------------------------------------

    def answer_key(self, text: str) -> str | None:
        """The normalised final answer, for the self-consistency reward (the A3 votes use the same key)."""
        return subanswer_key(text)

    def grade_answer(self, node: ReasoningNode, text: str, sample: str = "ost") -> AnswerGrade:
        """Gold-answer grade (§10.5): no ``\\boxed{}`` → UNFORMATTED; then the symbolic checks; then, with
        ``llm_judge``, the judge, which sees the question, the whole completion and the gold answer.

        Every judge call is appended to :attr:`judge_verdicts`; ``sample`` names the completion in its seed.
        """
        result = grade(text, self.gold_answer, require_boxed=True, checker=self.resources.checker)
        if result.extracted is None:
            return AnswerGrade.UNFORMATTED
        if result.correct:
            return AnswerGrade.CORRECT
        if not self.settings.llm_judge:
            return AnswerGrade.WRONG
        seed = request_seed(self.settings.seed, self.problem_id, node.node_id, f"judge-{sample}")
        verdict = asyncio.run(
            judge_equivalence(
                self.resources.llm, question=node.question, completion=text, prediction=result.extracted,
                gold=self.gold_answer, seed=seed,
            )
        )  # fmt: skip
        self.counts.record("judge", node.node_id, [verdict.reply], [not verdict.readable])
        self.judge_verdicts.append({"node_id": node.node_id, "prediction": result.extracted, **verdict.as_dict()})
        return AnswerGrade.CORRECT if verdict.equivalent else AnswerGrade.WRONG


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
