"""The LLM actions against a real BM25 server over a ProofWiki-style corpus and a scripted generator:
the summarizer sees statements without proofs, records keep both texts, scores are kept to depth,
unparsable outputs are counted per action, and the LLM judge sees question, completion and gold answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from models.llm.client import Completion, Message, SamplingParams
from models.retrieval.corpus import load_corpus
from models.retrieval.retrievers import BM25Retriever
from models.serving.retriever_app import ServerLimits, create_app
from models.serving.retriever_client import RetrieverClient
from run_src.mcts import ExpansionConfig, ReasoningNode
from run_src.mcts.actions import AnswerGrade, RelevanceLabel
from run_src.mcts.llm_actions import ActionResources, ActionSettings, LLMActions, MCTSPrompts, RetrieverSet
from tests.local_server import ThreadedAppServer
from tests.mcts_run_builder import write_corpus

PROOFWIKI = {
    "101": "\\section{Sum of Geometric Sequence}\nTags: Geometric Sequences\n\n\\begin{theorem}\nFor $x \\ne 1$: "
    "$\\ds \\sum_{j = 0}^{n - 1} x^j = \\frac {x^n - 1} {x - 1}$\n\\end{theorem}\n\n\\begin{proof}\nTelescoping "
    "sum of geometric terms.\n{{qed}}\n\\end{proof}\n[[Category:Geometric Sequences]]",
    "102": "\\section{Sum of Arithmetic Sequence}\nTags: Arithmetic Sequences\n\n\\begin{theorem}\nThe sum of "
    "an arithmetic sequence of n terms is n times the mean of its first and last terms.\n\\end{theorem}\n"
    "\\begin{proof}\nPair the first and last terms.\n\\end{proof}",
    "103": "Pythagorean theorem: in a right triangle a^2 + b^2 = c^2.",
    "104": "Bayes' theorem: P(A|B) = P(B|A) P(A) / P(B) for events of positive probability.",
}
QUESTION = "What is the sum 1 + 2 + 4 + ... + 2^9 of a geometric sequence?"


class ScriptedFakeLLMClient:
    """In-process generator: replies by which prompt a request carries, and records every request."""

    def __init__(self, reply: Callable[[str, int], str]) -> None:
        self.reply = reply
        self.sent: list[tuple[list[Message], SamplingParams]] = []

    async def achat(self, messages: list[Message], params: SamplingParams | None = None) -> Completion:
        assert params is not None
        self.sent.append((messages, params))
        content = "\n".join(m["content"] for m in messages)
        texts = [self.reply(content, i) for i in range(params.n)]
        return Completion(texts, ["stop"] * len(texts), prompt_tokens=10, completion_tokens=5, model="fake")

    def chat(self, messages: list[Message], params: SamplingParams | None = None) -> Completion:
        return asyncio.run(self.achat(messages, params))


def _reply(content: str, i: int) -> str:
    if "plain natural language" in content:  # summarizer
        return "" if "Arithmetic" in content.rsplit("Theorem:", 1)[-1] else "Geometric sum - 1 + x + ... = (x^n - 1)/(x - 1)."
    if "retrieved theorem is useful" in content:  # self-reflection: one verdict, one unreadable reply
        return "Relevant: True\nReason: it sums the terms." if "Geometric" in content.rsplit("Retrieved theorem:", 1)[-1] else "Hmm."
    if "grading a math answer" in content:  # judge
        return "Yes"
    return "Theorem 1: Sum of geometric sequence\nTheorem Statement: 1 + x + ... + x^(n-1) = (x^n - 1)/(x - 1)."


@pytest.fixture(scope="module")
def bm25_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = write_corpus(tmp_path_factory.mktemp("proofwiki") / "theorems.jsonl", PROOFWIKI)
    with ThreadedAppServer(create_app(BM25Retriever.from_corpus(load_corpus(path, "proofwiki")), ServerLimits())) as s:
        yield s.url


def _actions(client: ScriptedFakeLLMClient, bm25_url: str, **settings: object) -> tuple[LLMActions, ReasoningNode]:
    resources = ActionResources(
        client,  # type: ignore[arg-type]
        RetrieverSet(bm25=RetrieverClient(bm25_url)),
        ActionSettings(topk_rt=2, **settings),  # type: ignore[arg-type]
        MCTSPrompts.load(True),
    )
    actions = LLMActions(resources, problem_id="P_1", gold_answer="1023")
    return actions, ReasoningNode.new_root(QUESTION, "P_1", actions, ExpansionConfig())


def test_retrieval_summarizes_statements_and_keeps_raw_text_and_deep_scores(bm25_url: str) -> None:
    client = ScriptedFakeLLMClient(_reply)
    actions, root = _actions(client, bm25_url)
    outcome = actions.retrieve(root, "sum of a geometric sequence or an arithmetic sequence")
    assert sorted(t.theorem_id for t in outcome.theorems) == ["101", "102"]
    summaries = [m for m, _ in client.sent if "plain natural language" in m[0]["content"]]
    assert len(summaries) == 2
    for messages in summaries:  # one user message; the theorem part holds no proof, tags or category
        assert len(messages) == 1
        shown = messages[0]["content"].rsplit("Theorem:", 1)[-1]
        assert "\\begin{theorem}" in shown and "proof" not in shown.lower() and "Tags" not in shown
        assert "Category" not in shown and "qed" not in shown
    by_id = {t.theorem_id: t for t in outcome.theorems}
    first, second = by_id["101"], by_id["102"]
    assert first.statement and first.statement.startswith("\\section{Sum of Geometric Sequence} \\begin{theorem}")
    assert first.text == PROOFWIKI["101"]  # the corpus text, kept for reference
    assert second.summary == second.statement  # an empty summary falls back to the statement
    assert (first.label, second.label) == (RelevanceLabel.RELEVANT, RelevanceLabel.UNPARSABLE)
    # The trace keeps the top-k; the score log every document the retriever returned (depth 100 > 4 docs).
    assert sorted(outcome.scores) == ["101", "102"] and len(outcome.deep_scores) == 4
    counts = actions.counts.as_dict()
    assert counts["actions"]["summary"] == {"requests": 1, "outputs": 2, "unparsable": 1}
    assert counts["actions"]["reflection"] == {"requests": 1, "outputs": 2, "unparsable": 1}
    assert counts["theorems"] == {"relevant": 1, "unparsable": 1}


def test_unparsable_query_generations_are_counted() -> None:
    client = ScriptedFakeLLMClient(lambda content, i: "no theorems here" if i else _reply(content, i))
    actions, root = _actions(client, "http://127.0.0.1:9")  # no retrieval in this test
    candidates = actions.generate_queries(root, 3)
    assert len(candidates) == 1
    assert actions.counts.as_dict()["actions"]["qg"] == {"requests": 1, "outputs": 3, "unparsable": 2}


def test_the_judge_sees_question_completion_and_gold_and_its_verdict_is_recorded() -> None:
    client = ScriptedFakeLLMClient(_reply)
    actions, root = _actions(client, "http://127.0.0.1:9", llm_judge=True)
    completion = "Doubling ten times, the sum is \\boxed{\\text{one thousand and twenty-three}}."
    assert actions.grade_answer(root, completion) is AnswerGrade.CORRECT
    ((messages, params),) = client.sent
    content = messages[0]["content"]
    assert len(messages) == 1 and params.temperature == 0.0 and params.seed is not None
    assert f"Question: {QUESTION}" in content and f"Model solution: {completion}" in content
    assert content.rstrip().endswith("Equivalent:") and "Reference answer: 1023" in content
    (verdict,) = actions.judge_verdicts
    assert verdict["equivalent"] is True and verdict["reply"] == "Yes" and verdict["node_id"] == root.node_id
    # A right answer never reaches the judge; without --llm_judge a mismatch is simply wrong.
    assert actions.grade_answer(root, "\\boxed{1023}") is AnswerGrade.CORRECT and len(client.sent) == 1
    plain, _ = _actions(ScriptedFakeLLMClient(_reply), "http://127.0.0.1:9")
    assert plain.grade_answer(root, completion) is AnswerGrade.WRONG and plain.judge_verdicts == []
