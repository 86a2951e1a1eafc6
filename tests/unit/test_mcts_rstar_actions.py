"""rStar's optional actions, A3 (sub-questions) and A5 (rephrasing), from prompt to run directory.

The generator is :class:`ScriptedFakeRStarServer`, an OpenAI-compatible fake whose replies are scripted per
action (told apart by the prompt's system message) and per sample index; the retriever is the real BM25 app
over a small theorem corpus. Parsers are checked on well-formed, drifting and garbage replies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from models.llm.client import LLMClient, LLMClientConfig
from models.llm.factory import build_llm_client
from models.retrieval.corpus import load_corpus
from models.retrieval.retrievers import BM25Retriever
from models.serving.retriever_app import ServerLimits, create_app
from models.serving.retriever_client import RetrieverClient
from run_src.mcts import ActionName, ExpansionConfig, NodeKind, ReasoningNode
from run_src.mcts.llm_actions import (
    MIN_SUBANSWER_VALUE,
    ActionResources,
    ActionSettings,
    LLMActions,
    MCTSPrompts,
    RetrieverSet,
    majority_subanswer,
    request_seed,
)
from run_src.mcts.nodes import reach_terminal_subquestion
from run_src.mcts.parsing import parse_rephrased, parse_subanswer, parse_subquestion, subanswer_key
from run_src.mcts.partial_solution import steps_text, subanswer_step, subquestions_text
from run_src.run_parallel_workers import main
from tests.fakes import FakeGeneratorServer, RecordedRequest
from tests.local_server import ThreadedAppServer
from tests.mcts_run_builder import write_corpus

QUESTION = "Ann has 2 apples and Ben has 3 apples. How many apples do they have together?"
ASK_ANN = "How many apples does Ann have?"
FINAL = "Now we can answer the question: how many apples do they have together?"
REPHRASED = (
    "Condition 1: Ann has 2 apples.\nCondition 2: Ben has 3 apples.\nQuestion: How many apples do they have together?"
)
ANN_ANSWER = "Ann has 2 apples. The answer is \\boxed{2}."
WRONG_FINAL = "They have 2 + 3 = 6 apples. The answer is \\boxed{6}."
RIGHT_FINAL = "They have 2 + 3 = 5 apples. The answer is \\boxed{5}."


def _all_prompts(shape: str = "single_user") -> MCTSPrompts:
    return MCTSPrompts.load(False, subquestions=True, rephrase=True, shape=shape)


# --- prompts --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["chat_turns", "single_user"])
def test_rstar_prompts_render_with_smollm2_chat_template(smollm2_dir: Path, shape: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir))
    prompts = _all_prompts(shape)
    assert prompts.subquestion and prompts.subanswer and prompts.rephrase
    answered = f"Sub-question 1: {ASK_ANN}\nAnswer 1: {ANN_ANSWER}"
    cases = [
        (prompts.subquestion, {"question": QUESTION, "subquestions": answered}),
        (prompts.subanswer, {"question": QUESTION, "subquestions": answered, "subquestion": FINAL}),
        (prompts.rephrase, {"question": QUESTION}),
    ]
    for template, fields in cases:
        assert template.system and len(template.examples) == 3, template.name
        messages = template.render(**fields)
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        expected = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        if shape == "chat_turns":
            assert text == expected + "<|im_start|>assistant\n", template.name
            assert text.count("<|im_start|>user\n") == 4 and text.count("<|im_start|>assistant\n") == 4
        else:  # one user message; the model's template adds its own default system message
            assert len(messages) == 1 and text.endswith(expected + "<|im_start|>assistant\n"), template.name
            assert text.count("<|im_start|>user\n") == 1 and template.system in messages[0]["content"]
            assert all(user in messages[0]["content"] and answer in messages[0]["content"] for user, answer in template.examples)
        content = messages[-1]["content"]
        assert QUESTION in content and not any(f"{{{name}}}" in content for name in template.placeholders)
        assert len(tokenizer(text)["input_ids"]) < 1500, template.name  # leaves room to generate in 2k context
    versions = prompts.versions()
    assert {"mcts_subquestion", "mcts_subanswer", "mcts_rephrase"} <= set(versions) and len(versions) == 8
    assert len(MCTSPrompts.load(False).versions()) == 5  # off by default: not loaded, not recorded


def test_few_shot_answers_parse_with_our_own_parsers() -> None:
    prompts = _all_prompts()
    assert prompts.subquestion and prompts.subanswer and prompts.rephrase
    asked = [parse_subquestion(answer) for _, answer in prompts.subquestion.examples]
    assert all(asked) and sum(reach_terminal_subquestion(str(q), "") for q in asked) == 1
    assert [subanswer_key(parse_subanswer(answer)) for _, answer in prompts.subanswer.examples] == ["60", "24", "16"]
    for _, answer in prompts.rephrase.examples:
        assert parse_rephrased(answer) == answer.strip()


# --- parsing --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (f"Sub-question: {ASK_ANN}", ASK_ANN),  # well-formed
        (f"Sub-question: {FINAL}", FINAL),  # the final marker is kept: it makes the node terminal
        (f"**Sub-question 2:** {ASK_ANN}", ASK_ANN),  # drift: bold, numbered label
        (f"\n\nNext sub-question: {ASK_ANN}\nAnswer: 2", ASK_ANN),  # leading blank lines, an answer after
        (f"Sub-question:\n{ASK_ANN}", ASK_ANN),  # label alone on its line
        (f"Question 1.2: {ASK_ANN}", ASK_ANN),  # rStar-style numbering
        (ASK_ANN, ASK_ANN),  # no label at all
        ("", None),  # garbage from here on
        ("  \n \n", None),
        ("Sub-question:", None),
        ("Answer: Ann has 2 apples.", None),  # answered instead of asking
        (f"Problem: {QUESTION}", None),  # echoed the prompt
        ("$$ 2 + 3 = 5 $$", None),
        ("Sub-question: " + "why " * 150, None),  # run-on
    ],
)
def test_parse_subquestion(reply: str, expected: str | None) -> None:
    assert parse_subquestion(reply) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (ANN_ANSWER, ANN_ANSWER),
        (f"Answer: {ANN_ANSWER}", ANN_ANSWER),
        (f"Sub-question: {ASK_ANN}\nAnswer 1: {ANN_ANSWER}\nSub-question: How many does Ben have?", ANN_ANSWER),
        (f"{ANN_ANSWER}\nProblem: {QUESTION}", ANN_ANSWER),
        ("   ", ""),
    ],
)
def test_parse_subanswer(reply: str, expected: str) -> None:
    assert parse_subanswer(reply) == expected


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (ANN_ANSWER, "2"),
        ("So the sum is 12. The answer is 12.", "12"),
        ("The answer is: \\frac{1}{2}", "\\frac{1}{2}"),
        ("Half of it. The answer is \\boxed{\\frac12}.", "\\frac{1}{2}"),
        ("no value anywhere", None),
    ],
)
def test_subanswer_key(text: str, key: str | None) -> None:
    assert subanswer_key(text) == key


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (REPHRASED, REPHRASED),
        (
            "**Condition 1:** Ann has 2 apples.\n\n**Question:** How many?",
            "**Condition 1:** Ann has 2 apples.\n**Question:** How many?",
        ),
        (REPHRASED + "\nThey have 2 + 3 = 5 apples.", REPHRASED),  # a started solution is cut
        (REPHRASED + "\nProblem: Another problem.", REPHRASED),
        ("Condition 1: Ann has 2 apples.\nCondition 2: Ben has 3 apples.", None),  # the question was lost
        ("Question: How many apples do they have together?", None),  # the givens were lost
        (f"Problem: {QUESTION}", None),
        ("", None),
    ],
)
def test_parse_rephrased(reply: str, expected: str | None) -> None:
    assert parse_rephrased(reply) == expected


def test_majority_subanswer_counts_votes_over_all_samples() -> None:
    five, five_again, seven = "x = \\boxed{5}", "so x is 5. The answer is 5.", "x = \\boxed{7}"
    assert majority_subanswer([seven, five, five_again, "no idea"], 5) == (five, 0.4)
    assert majority_subanswer([seven, five], 2) == (seven, 0.5)  # tie: the value seen first
    assert majority_subanswer(["no idea", "still none"], 10) == ("no idea", MIN_SUBANSWER_VALUE)
    assert majority_subanswer([five], 200) == (five, MIN_SUBANSWER_VALUE)  # 0.005 floored


def test_subanswer_step_drops_the_closing_answer_phrase() -> None:
    assert subanswer_step(ANN_ANSWER) == "Ann has 2 apples."
    assert subanswer_step("A. The answer is 1, or the answer is\n 2.") == "A. The answer is 1, or"
    assert subanswer_step("The answer is 2.") == "The answer is 2."


# --- the LLM-backed actions against a scripted fake generator ----------------------------------------------


@dataclass
class Script:
    """Replies by prompt name and sample index; ``rephrase`` can be swapped for garbage."""

    rephrase: str = REPHRASED

    def reply(self, action: str, user: str, index: int) -> str:
        if action == "mcts_ost":
            return "Ann and Ben have 2 + 3 apples." if index == 0 else "Together they have 2 + 3 = \\boxed{5} apples."
        if action == "mcts_crs":
            return "They have 2 + 3 = \\boxed{5} apples."
        if action.startswith("mcts_query_generation"):
            return "Addition of whole numbers counts the apples together."
        if action == "mcts_summarize_theorem":
            return "Addition - counts of disjoint sets add."
        if action == "mcts_self_reflection":
            return "Relevant: False\nReason: the sum needs no theorem."
        if action == "mcts_subquestion":
            return [f"Sub-question: {ASK_ANN}", f"**Sub-question 2:** {FINAL}", "Answer: 5"][index % 3]
        if action == "mcts_subanswer":
            if user.splitlines()[-1].startswith("Sub-question: Now we can answer"):
                return [WRONG_FINAL, RIGHT_FINAL][index % 2]
            return "Maybe 3. The answer is \\boxed{3}." if index == 3 else f"Answer: {ANN_ANSWER}"
        if action == "mcts_rephrase":
            return self.rephrase
        return "unscripted"


class ScriptedFakeRStarServer(FakeGeneratorServer):
    """Fake generator: each chat request gets ``n`` replies from :class:`Script`, chosen by the prompt file
    whose instruction the request carries (as a system message, or opening the single user message)."""

    def __init__(self, script: Script) -> None:
        super().__init__("ok")
        self.script = script
        self.prefixes: dict[str, str] = {}  # single-user shape: instruction + few-shot block -> prompt name
        self.actions: dict[str, str] = {}
        for candidate_mode in (True, False):
            prompts = MCTSPrompts.load(candidate_mode, subquestions=True, rephrase=True)
            self.actions.update({t.system: t.name for t in prompts.templates()})
            for t in prompts.templates():
                blocks = [t.system, *(f"{user}\n{answer}" for user, answer in t.examples)]
                self.prefixes["\n\n".join(blocks) + "\n\n"] = t.name

    def _split(self, body: dict[str, Any]) -> tuple[str, str]:
        first, last = body["messages"][0]["content"], body["messages"][-1]["content"]
        if first in self.actions:
            return self.actions[first], last
        for prefix, name in self.prefixes.items():
            if first.startswith(prefix):
                return name, first[len(prefix) :]
        return "unknown", last

    def action_of(self, body: dict[str, Any]) -> str:
        return self._split(body)[0]

    def requests_for(self, action: str) -> list[RecordedRequest]:
        return [r for r in self.requests if self.action_of(r.body) == action]

    async def _respond(self, path: str, body: dict[str, Any], attempt: int, request: Any) -> Any:
        action, user = self._split(body)
        replies = [self.script.reply(action, user, i) for i in range(int(body.get("n", 1)))]
        choices = [
            {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            for i, text in enumerate(replies)
        ]
        return {
            "id": f"scripted-{attempt}",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": choices,
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }


@pytest.fixture
def rstar_server() -> Iterator[ScriptedFakeRStarServer]:
    with ScriptedFakeRStarServer(Script()) as server:
        yield server


@pytest.fixture
def client(rstar_server: ScriptedFakeRStarServer) -> Iterator[LLMClient]:
    config = LLMClientConfig("openai-compatible", "fake-model", base_url=rstar_server.base_url, max_retries=0)
    with build_llm_client(config) as llm:
        yield llm


def _actions(client: LLMClient, prompts: MCTSPrompts | None = None) -> LLMActions:
    resources = ActionResources(
        client,
        RetrieverSet(bm25=RetrieverClient("http://127.0.0.1:9")),  # never called: QG is off below
        ActionSettings(num_votes=4, seed=7),
        prompts or _all_prompts(),
    )
    return LLMActions(resources, "apples", gold_answer="5")


def _root(actions: LLMActions) -> ReasoningNode:
    config = ExpansionConfig(
        max_depth_allowed=4,
        num_direct_answer_samples=2,
        disabled_actions=frozenset({ActionName.QUERY_GENERATION}),
    )
    return ReasoningNode.new_root(QUESTION, "apples", actions, config)


def test_subquestions_are_parsed_voted_and_graded(rstar_server: ScriptedFakeRStarServer, client: LLMClient) -> None:
    actions = _actions(client)
    root = _root(actions)
    steps = actions.generate_subquestions(root, 3)
    # The third proposal answered instead of asking: dropped.
    assert [s.subquestion for s in steps] == [ASK_ANN, FINAL]
    # Non-final: 4 votes, 3 for "2" → 0.75, the first such answer kept, its label stripped.
    assert (steps[0].subanswer, steps[0].value) == (ANN_ANSWER, 0.75)
    # Final: num_direct_answer_samples = 2 answers graded against gold 5; the correct one is kept.
    assert (steps[1].subanswer, steps[1].value) == (RIGHT_FINAL, 1.0)

    (proposal,) = rstar_server.requests_for("mcts_subquestion")
    assert proposal.path.endswith("/chat/completions")
    assert proposal.body["n"] == 3 and proposal.body["seed"] == request_seed(7, "apples", 0, "subquestion")
    # One user message (the spec's shape): the instruction, three worked examples, then this problem.
    ((message,),) = [proposal.body["messages"]]
    assert message["role"] == "user" and message["content"].count("Sub-question") >= 3
    assert message["content"].endswith("Answered sub-questions:\n(none yet)")
    answers = sorted(rstar_server.requests_for("mcts_subanswer"), key=lambda r: r.body["n"])
    assert [r.body["n"] for r in answers] == [2, 4]
    assert {r.body["seed"] for r in answers} == {request_seed(7, "apples", 0, f"subanswer{i}") for i in (0, 1)}
    assert answers[1].body["max_tokens"] == 512 and proposal.body["max_tokens"] == 128


def test_sub_question_path_feeds_the_later_prompts(rstar_server: ScriptedFakeRStarServer, client: LLMClient) -> None:
    actions = _actions(client)
    root = _root(actions)
    children = root.find_children(0)
    sq = next(c for c in children if c.kind is NodeKind.SUBQUESTION and not c.is_terminal())
    final = next(c for c in children if c.kind is NodeKind.SUBQUESTION and c.is_terminal())
    assert final.calculate_reward() == 1.0 and final.is_valid_solution()
    assert subquestions_text(sq) == f"Sub-question 1: {ASK_ANN}\nAnswer 1: {ANN_ANSWER}"
    before = len(rstar_server.requests)
    grandchildren = sq.find_children(0)
    new = rstar_server.requests[before:]
    ost = next(r for r in new if rstar_server.action_of(r.body) == "mcts_ost")
    assert "Intermediate solution: Ann has 2 apples.\n" in ost.body["messages"][-1]["content"]
    asked = next(r for r in new if rstar_server.action_of(r.body) == "mcts_subquestion")
    assert asked.body["messages"][-1]["content"].endswith(subquestions_text(sq))
    assert asked.body["seed"] == request_seed(7, "apples", sq.node_id, "subquestion")
    da = next(c for c in grandchildren if c.kind is NodeKind.DIRECT_ANSWER)
    assert steps_text(da) == "Ann has 2 apples."  # the DA's own text is not part of its context


def test_rephrase_keeps_the_question_when_the_reply_is_unusable(
    rstar_server: ScriptedFakeRStarServer, client: LLMClient
) -> None:
    actions = _actions(client)
    root = _root(actions)
    assert actions.rephrase_question(root) == REPHRASED
    rstar_server.script.rephrase = "I think they have 5 apples."
    assert actions.rephrase_question(root) == QUESTION
    (first, _) = rstar_server.requests_for("mcts_rephrase")
    assert first.body["n"] == 1 and first.body["seed"] == request_seed(7, "apples", 0, "rephrase")
    assert first.body["messages"][-1]["content"].endswith(f"\n\nProblem: {QUESTION}")


def test_enabled_action_without_its_prompt_is_a_clear_error(client: LLMClient) -> None:
    actions = _actions(client, MCTSPrompts.load(False))
    with pytest.raises(ValueError, match="subquestions=True"):
        actions.generate_subquestions(_root(actions), 3)
    with pytest.raises(ValueError, match="rephrase=True"):
        actions.rephrase_question(_root(actions))


# --- the runner with the flags --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bm25_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    corpus = load_corpus(write_corpus(tmp_path_factory.mktemp("corpus") / "theorems.jsonl"))
    with ThreadedAppServer(create_app(BM25Retriever.from_corpus(corpus), ServerLimits())) as server:
        yield server.url


def _argv(tmp_path: Path, generator_url: str, bm25_url: str, run_name: str, *extra: str) -> list[str]:
    problems = tmp_path / "problems.json"
    if not problems.exists():
        rows = [
            {"id": "apples", "problem": QUESTION, "gold_answer": "5"},
            {
                "id": "pens",
                "problem": "Cy has 4 pens and Di has 1 pen. How many pens do they have?",
                "gold_answer": "5",
            },
        ]
        problems.write_text(json.dumps(rows), encoding="utf-8")
    return [
        "--dataset_name", "JSON", "--data_file", str(problems), "--model_ckpt", "fake-model",
        "--generator_urls", generator_url, "--retriever", "bm25", "--bm25_url", bm25_url,
        "--num_rollouts", "8", "--max_depth_allowed", "3", "--mcts_num_last_votes", "2",
        "--retrieval_selfreasoning", "--num_workers", "2", "--run_outputs_root", str(tmp_path / "out"),
        "--run_name", run_name, "--max_retries", "0", "--save_tree", *extra,
    ]  # fmt: skip


def _read(run: Path, name: str) -> Any:
    return json.loads((run / "answer_sheets" / name).read_text(encoding="utf-8"))


def test_run_with_a3_and_a5_writes_sq_and_ru_nodes(tmp_path: Path, bm25_url: str) -> None:
    flags = ("--enable_a3", "--enable_a5", "--num_subquestions", "3", "--num_votes", "4")
    with ScriptedFakeRStarServer(Script()) as server:
        assert main(_argv(tmp_path, server.base_url, bm25_url, "rstar", *flags)) == 0
        assert server.requests_for("mcts_subquestion") and server.requests_for("mcts_rephrase")
        # Resuming with the actions switched off would mix two kinds of tree: refused.
        assert main(_argv(tmp_path, server.base_url, bm25_url, "rstar", "--enable_a3")) == 2
    run = tmp_path / "out" / "JSON" / "fake-model" / "rstar"
    record = json.loads((run / "args.json").read_text(encoding="utf-8"))
    args = {**record["settings"], **record["derived"]}
    assert args["enable_a3"] and args["enable_a5"] and args["num_votes"] == 4
    assert {"mcts_subquestion", "mcts_subanswer", "mcts_rephrase"} <= set(args["prompt_versions"])
    for index, source_id in enumerate(("apples", "pens")):
        stem = f"Question {index:04d}"
        sheet = _read(run, f"{stem} - Answer.json")
        assert sheet["source_id"] == source_id and sheet["prompt_versions"] == args["prompt_versions"]
        tree = (run / "answer_sheets" / f"{stem} - Rollout 7.tree").read_text(encoding="utf-8")
        assert "[SQ-" in tree and "[(T) SQ-" in tree and "[RU-" in tree and "Reph-User: Condition 1:" in tree
        finals = _read(run, f"{stem} - Final Solutions.json")
        # Every scripted answer that ends a solution is \boxed{5}, so every solution counts as correct,
        # final sub-questions included.
        assert sheet["num_correct_solutions"] == sheet["num_solutions"] == len(finals) > 0
        sq_leaves = [f for f in finals if f["trace"].get("1", {}).get("subquestion", "").startswith("Now we can")]
        assert sq_leaves and all(f["trace"]["1"]["subanswer"] == {"text": RIGHT_FINAL, "value": 1.0} for f in sq_leaves)
        assert all(set(f["trace"]["1"]) == {"subquestion", "subanswer", "ost_step"} for f in sq_leaves)
        below_ru = [f for f in finals if f["trace"]["0"]["user_question"] == REPHRASED]
        assert below_ru and all(f["question_id"] == source_id for f in finals)
        rollouts = _read(run, f"{stem} - Rollout Solutions.json")
        assert [r["rollout_id"] for r in rollouts] == list(range(8))
    assert "Infinity" not in "".join(p.read_text(encoding="utf-8") for p in (run / "answer_sheets").glob("*.json"))


def test_default_flags_create_no_sq_or_ru_node(tmp_path: Path, bm25_url: str) -> None:
    paper_flags = ("--disable_a3", "--disable_a4", "--disable_a5")
    with ScriptedFakeRStarServer(Script()) as server:
        assert main(_argv(tmp_path, server.base_url, bm25_url, "default")) == 0
        assert main(_argv(tmp_path, server.base_url, bm25_url, "paper", *paper_flags)) == 0
        assert not server.requests_for("mcts_subquestion") and not server.requests_for("mcts_subanswer")
        assert not server.requests_for("mcts_rephrase") and server.requests_for("mcts_ost")
    for run_name in ("default", "paper"):
        run = tmp_path / "out" / "JSON" / "fake-model" / run_name
        record = json.loads((run / "args.json").read_text(encoding="utf-8"))
        assert "mcts_subquestion" not in record["identity"]["prompt_versions"]
        trees = "".join(p.read_text(encoding="utf-8") for p in (run / "answer_sheets").glob("*.tree"))
        assert trees and "SQ-" not in trees and "RU-" not in trees
        for path in (run / "answer_sheets").glob("* - Final Solutions.json"):
            assert all(set(f["trace"]) == {"0"} for f in json.loads(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--enable_a4"], "not implemented"),
        (["--enable_a3", "--disable_a3"], "contradict"),
        (["--enable_a5", "--disable_a5"], "contradict"),
        (["--enable_a3", "--num_subquestions", "0"], "num_subquestions"),
        (["--enable_a3", "--num_votes", "0"], "num_votes"),
    ],
)
def test_bad_rstar_flags_fail_before_any_work(
    tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(_argv(tmp_path, "http://127.0.0.1:9/v1", "http://127.0.0.1:9", "x", *extra))
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
