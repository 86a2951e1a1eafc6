"""The RaDeR reasoning tree against a scripted fake generator: expansion table, predicates, rewards, traces."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from run_src.mcts import (
    ActionName,
    AnswerCompletion,
    AnswerGrade,
    DirectAnswer,
    ExpansionConfig,
    NodeKind,
    OstStep,
    QueryCandidate,
    ReasoningNode,
    RelevanceLabel,
    RetrievalOutcome,
    RetrievedTheorem,
    SubquestionStep,
    collect_solution_nodes,
    final_solution_records,
    json_safe,
    reach_terminal_ost_step,
    reach_terminal_subquestion,
    retrieval_score_records,
    reward_for_grade,
    rollout_solution_records,
    self_reflection_records,
    solution_trace,
)

QUESTION = "If x + 1/x = 3, what is x^2 + 1/x^2?"
CORRECT_TEXT = "so the value is $\\boxed{7}$."
OstScript = Callable[[ReasoningNode, int], list[str]]


def _numbered_steps(node: ReasoningNode, n: int) -> list[str]:
    return [f"step {node.node_id}.{i}" for i in range(n)]


def _default_outcome() -> RetrievalOutcome:
    return RetrievalOutcome(
        query="unused",
        theorems=(
            RetrievedTheorem("t1", "Square of Sum - (a+b)^2 = a^2+2ab+b^2", RelevanceLabel.RELEVANT, "fits"),
            RetrievedTheorem("t2", "Binomial Theorem - general n", RelevanceLabel.RELEVANT, "also fits"),
        ),
        scores={"t1": 0.7, "t2": 0.6},
        retriever_name="Repllama",
    )


def _grade(text: str) -> AnswerGrade:
    if "\\boxed{7}" in text:
        return AnswerGrade.CORRECT
    return AnswerGrade.WRONG if "boxed" in text else AnswerGrade.UNFORMATTED


@dataclass
class ScriptedFakeGenerator:
    """Fake ActionGenerator (no LLM, no retriever): canned steps, answers, queries and retrievals; logs calls."""

    ost_steps: OstScript = _numbered_steps
    answers: list[AnswerCompletion] | None = None
    queries: list[QueryCandidate] = field(default_factory=lambda: [QueryCandidate("Theorem Name: Square of a Sum")])
    outcome: RetrievalOutcome = field(default_factory=_default_outcome)
    calls: list[tuple[str, int, int | str]] = field(default_factory=list)

    def generate_ost_steps(self, node: ReasoningNode, n: int) -> list[str]:
        self.calls.append(("ost", node.node_id, n))
        return self.ost_steps(node, n)

    def generate_direct_answers(self, node: ReasoningNode, n: int) -> list[AnswerCompletion]:
        self.calls.append(("crs", node.node_id, n))
        if self.answers is not None:
            return list(self.answers)
        return [AnswerCompletion(f"answer {node.node_id}.{i} {CORRECT_TEXT}", AnswerGrade.CORRECT) for i in range(n)]

    def generate_queries(self, node: ReasoningNode, n: int) -> list[QueryCandidate]:
        self.calls.append(("qg", node.node_id, n))
        return list(self.queries)

    def retrieve(self, node: ReasoningNode, query: str) -> RetrievalOutcome:
        self.calls.append(("rt", node.node_id, query))
        return RetrievalOutcome(query, self.outcome.theorems, self.outcome.scores, self.outcome.retriever_name)

    def grade_answer(self, node: ReasoningNode, text: str) -> AnswerGrade:
        self.calls.append(("grade", node.node_id, text))
        return _grade(text)


@dataclass
class ScriptedFakeRStarGenerator(ScriptedFakeGenerator):
    """The scripted fake plus rStar's A3/A5 actions."""

    def generate_subquestions(self, node: ReasoningNode, n: int) -> list[SubquestionStep]:
        return [SubquestionStep(f"sub {i}?", f"sub answer {i}", 0.5) for i in range(n - 1)] + [
            SubquestionStep("Now we can answer the question: what is x^2 + 1/x^2?", "7", 1.0)
        ]

    def rephrase_question(self, node: ReasoningNode) -> str:
        return "Given: x + 1/x = 3. Question: what is x^2 + 1/x^2?"


def make_root(generator: ScriptedFakeGenerator | None = None, **config: object) -> ReasoningNode:
    return ReasoningNode.new_root(QUESTION, "math_17", generator or ScriptedFakeGenerator(), ExpansionConfig(**config))


def kinds(nodes: list) -> list[NodeKind]:
    return [node.kind for node in nodes]


def child_of_kind(node: ReasoningNode, kind: NodeKind, rollout_id: int = 0) -> ReasoningNode:
    return next(child for child in node.find_children(rollout_id) if child.kind is kind)


OST, DA, QG, RT = NodeKind.OST, NodeKind.DIRECT_ANSWER, NodeKind.QUERY_GENERATION, NodeKind.RETRIEVAL


# --- expansion table (spec §5.3) --------------------------------------------------------------------------


def test_root_expands_to_two_ost_one_da_and_one_qg_per_candidate() -> None:
    generator = ScriptedFakeGenerator(queries=[QueryCandidate("A"), QueryCandidate("B")])
    root = make_root(generator)
    children = root.find_children(0)
    assert kinds(children) == [OST, OST, DA, QG, QG]
    assert [c.payload.candidate_index for c in children[3:]] == [1, 2]
    assert all(c.depth == 1 and c.parent is root and c.created_in_rollout == 0 for c in children)
    assert [call[0] for call in generator.calls] == ["ost", "crs", "qg"]
    assert generator.calls[1][2] == 4  # CRS samples behind the single DA child


def test_children_are_created_once_and_cached() -> None:
    generator = ScriptedFakeGenerator()
    root = make_root(generator)
    first = root.find_children(0)
    second = root.find_children(5)
    assert [id(c) for c in first] == [id(c) for c in second]
    assert all(c.created_in_rollout == 0 for c in second)
    assert len(generator.calls) == 3


@pytest.mark.parametrize(
    ("disabled", "expected"),
    [
        ({ActionName.OST}, [DA, QG]),
        ({ActionName.DIRECT_ANSWER}, [OST, OST, QG]),
        ({ActionName.QUERY_GENERATION}, [OST, OST, DA]),
    ],
)
def test_disable_flags_remove_actions_at_the_root(disabled: set[ActionName], expected: list[NodeKind]) -> None:
    root = make_root(disabled_actions=frozenset(disabled | {ActionName.SUBQUESTION, ActionName.REPHRASE}))
    assert kinds(root.find_children(0)) == expected


def test_ost_expands_to_ost_and_qg_and_never_da_when_something_was_produced() -> None:
    ost = child_of_kind(make_root(), OST)
    assert kinds(ost.find_children(0)) == [OST, OST, QG]


def test_ost_falls_back_to_da_only_when_nothing_else_was_produced() -> None:
    ost = child_of_kind(make_root(generator=ScriptedFakeGenerator(queries=[])), OST)
    assert kinds(ost.find_children(0)) == [OST, OST]
    generator = ScriptedFakeGenerator(
        ost_steps=lambda node, n: _numbered_steps(node, n) if node.depth == 0 else [], queries=[]
    )
    ost = child_of_kind(make_root(generator), OST)
    assert kinds(ost.find_children(0)) == [DA]


def test_qg_expands_to_retrieval_children_in_rank_order() -> None:
    root = make_root()
    qg = child_of_kind(root, QG)
    children = qg.find_children(0)
    assert kinds(children) == [RT, RT]
    assert [c.payload.theorem.theorem_id for c in children] == ["t1", "t2"]
    assert [c.theorem_ids for c in children] == [("t1",), ("t2",)]
    assert qg.retrieval_outcome is not None and qg.retrieval_outcome.query == "Theorem Name: Square of a Sum"


def test_qg_without_surviving_theorem_falls_back_to_ost_and_da() -> None:
    rejected = RetrievalOutcome("q", (RetrievedTheorem("t9", "s", RelevanceLabel.IRRELEVANT, "no"),), {"t9": 0.1})
    qg = child_of_kind(make_root(ScriptedFakeGenerator(outcome=rejected)), QG)
    assert kinds(qg.find_children(0)) == [OST, OST, DA]


def test_retrieval_expands_to_ost_and_da_never_qg() -> None:
    rt = child_of_kind(child_of_kind(make_root(), QG), RT)
    assert kinds(rt.find_children(0)) == [OST, OST, DA]


def test_direct_answer_and_terminal_ost_have_no_children() -> None:
    root = make_root(ScriptedFakeGenerator(ost_steps=lambda node, n: [CORRECT_TEXT] * n))
    da = child_of_kind(root, DA)
    ost = child_of_kind(root, OST)
    assert da.is_terminal() and ost.is_terminal()
    assert da.find_children(1) == [] and ost.find_children(1) == []


def test_retrieval_keeps_only_relevant_theorems_not_on_the_path_and_records_every_label() -> None:
    outcome = RetrievalOutcome(
        "q",
        (
            RetrievedTheorem("t1", "already on the path", RelevanceLabel.RELEVANT, "r1"),
            RetrievedTheorem("t2", "rejected", RelevanceLabel.IRRELEVANT, "r2"),
            RetrievedTheorem("t3", "accepted", RelevanceLabel.RELEVANT, "r3"),
            RetrievedTheorem("t4", "judge said nothing useful", RelevanceLabel.UNPARSABLE, None),
            RetrievedTheorem("t5", "accepted after a rejection", RelevanceLabel.RELEVANT, "r5"),
        ),
        {"t1": 0.9, "t2": 0.8, "t3": 0.7, "t4": 0.6, "t5": 0.5},
        "Repllama",
    )
    generator = ScriptedFakeGenerator()
    root = make_root(generator)
    first_rt = next(c for c in child_of_kind(root, QG).find_children(0) if c.payload.theorem.theorem_id == "t1")
    generator.outcome = outcome
    second_qg = child_of_kind(child_of_kind(first_rt, OST), QG)
    children = second_qg.find_children(0)
    # [FIX] S2: t5 survives even though t2 was rejected before it.
    assert [c.payload.theorem.theorem_id for c in children] == ["t3", "t5"]
    assert [c.theorem_ids for c in children] == [("t1", "t3"), ("t1", "t5")]
    assert second_qg.retrieval_outcome is not None
    assert [t.label for t in second_qg.retrieval_outcome.theorems] == [t.label for t in outcome.theorems]
    # An unreadable verdict (t4) is not "labelled relevant", so it is a negative (paper §4.2), marked as such.
    logged = [(r["theorem_id"], r["LLM_relevance_label"], r["verdict"]) for r in self_reflection_records(root)]
    assert logged == [("t1", 1, "relevant"), ("t2", 1, "relevant"), ("t1", 1, "relevant"), ("t2", 0, "irrelevant"),
                      ("t3", 1, "relevant"), ("t4", 0, "unparsable"), ("t5", 1, "relevant")]  # fmt: skip
    assert all(r["question_id"] == "math_17" for r in self_reflection_records(root))
    # --unparsable_verdicts skip keeps the earlier behaviour: nobody judged t4, so it is not logged.
    skipped = [r["theorem_id"] for r in self_reflection_records(root, unparsable_as_negative=False)]
    assert skipped == ["t1", "t2", "t1", "t2", "t3", "t5"]


def test_retrieval_without_self_reflection_keeps_every_new_theorem() -> None:
    outcome = RetrievalOutcome("q", (RetrievedTheorem("a", "s"), RetrievedTheorem("b", "s")), {"a": 1.0, "b": 0.5})
    root = make_root(ScriptedFakeGenerator(outcome=outcome))
    qg = child_of_kind(root, QG)
    assert [c.payload.theorem.theorem_id for c in qg.find_children(0)] == ["a", "b"]
    assert self_reflection_records(root) == []


# --- limits -------------------------------------------------------------------------------------------------


def test_max_qg_steps_per_path_defaults_to_half_the_depth_limit() -> None:
    assert ExpansionConfig(max_depth_allowed=6).qg_limit == 3
    assert ExpansionConfig(max_depth_allowed=5).qg_limit == 2
    assert ExpansionConfig(max_depth_allowed=6, max_qg_nodes=1).qg_limit == 1


def test_no_qg_child_once_the_path_holds_the_maximum_qg_steps() -> None:
    root = make_root(max_qg_nodes=1, max_depth_allowed=10)
    qg = child_of_kind(root, QG)
    rt = child_of_kind(qg, RT)
    ost = child_of_kind(rt, OST)
    assert ost.qg_step_count == 1
    assert kinds(ost.find_children(0)) == [OST, OST]
    # A second path without QG still gets one.
    assert QG in kinds(child_of_kind(root, OST).find_children(0))


def test_two_qg_steps_allowed_with_limit_two() -> None:
    root = make_root(max_qg_nodes=2, max_depth_allowed=10)
    node = child_of_kind(child_of_kind(child_of_kind(root, QG), RT), OST)
    assert QG in kinds(node.find_children(0))
    second = child_of_kind(child_of_kind(child_of_kind(node, QG), RT), OST)
    assert second.qg_step_count == 2 and QG not in kinds(second.find_children(0))


def test_depth_limit_makes_any_node_terminal_with_zero_reward() -> None:
    root = make_root(max_depth_allowed=2)
    ost = child_of_kind(root, OST)
    deep = child_of_kind(ost, OST)
    assert deep.depth == 2 and deep.is_terminal() and not deep.is_valid_leaf()
    assert deep.calculate_reward() == 0.0 and deep.value is None
    assert deep.find_children(0) == []


# --- predicates and rewards (spec §5.6, §5.7) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "terminal"),
    [("Thus x = $\\boxed{3}$.", True), ("So the Answer is 3.", True), ("BOXED later", True), ("Let y = x^2.", False)],
)
def test_terminal_ost_step(step: str, terminal: bool) -> None:
    assert reach_terminal_ost_step(step) is terminal


def test_terminal_subquestion() -> None:
    assert reach_terminal_subquestion("Now we can answer the question.", QUESTION)
    assert reach_terminal_subquestion("So, WHAT IS X^2 + 1/X^2?", "Let x be 2. What is x^2 + 1/x^2?")
    assert not reach_terminal_subquestion("What is x?", "Let x be 2. What is x^2 + 1/x^2?")


@pytest.mark.parametrize(
    ("grade", "wrong", "reward"),
    [
        (AnswerGrade.CORRECT, 0.0, 1.0),
        (AnswerGrade.WRONG, 0.0, 0.0),
        (AnswerGrade.WRONG, 0.2, 0.2),
        (AnswerGrade.UNFORMATTED, 0.2, 0.0),
    ],
)
def test_reward_for_grade(grade: AnswerGrade, wrong: float, reward: float) -> None:
    assert reward_for_grade(grade, wrong) == reward


def test_terminal_ost_value_uses_the_wrong_answer_reward_flag() -> None:
    generator = ScriptedFakeGenerator(ost_steps=lambda node, n: ["so $\\boxed{8}$", "Answer is 7", "Let y = 2"])
    for wrong, expected in ((0.0, [0.0, 0.0, None]), (0.2, [0.2, 0.0, None])):
        root = make_root(generator, wrong_answer_reward=wrong, num_a1_steps=3)
        osts = [c for c in root.find_children(0) if c.kind is OST]
        assert [c.value for c in osts] == expected
        assert [c.calculate_reward() for c in osts] == [expected[0], 0.0, 0.0]
        assert [c.is_valid_leaf() for c in osts] == [True, True, False]


def test_direct_answer_keeps_the_first_best_sample_and_its_value() -> None:
    answers = [
        AnswerCompletion("no box", AnswerGrade.UNFORMATTED),
        AnswerCompletion("wrong \\boxed{8}", AnswerGrade.WRONG),
        AnswerCompletion("first right \\boxed{7}", AnswerGrade.CORRECT),
        AnswerCompletion("second right \\boxed{7}", AnswerGrade.CORRECT),
        AnswerCompletion("wrong again \\boxed{9}", AnswerGrade.WRONG),
    ]
    da = child_of_kind(make_root(ScriptedFakeGenerator(answers=answers), wrong_answer_reward=0.2), DA)
    assert isinstance(da.payload, DirectAnswer)
    assert da.payload.text == "first right \\boxed{7}"
    assert da.value == 1.0 and da.calculate_reward() == 1.0
    assert da.payload.sample_rewards == (0.0, 0.2, 1.0, 1.0, 0.2)
    # REF S1 on request: the last sample's reward, although the stored text is the best one.
    ref = child_of_kind(
        make_root(ScriptedFakeGenerator(answers=answers), wrong_answer_reward=0.2, reference_da_value=True), DA
    )
    assert ref.payload.text == "first right \\boxed{7}" and ref.value == 0.2


def test_single_sample_direct_answer_works() -> None:
    da = child_of_kind(make_root(num_direct_answer_samples=1), DA)
    assert da.value == 1.0


def test_skip_backprop_marks_question_nodes_only() -> None:
    root = make_root()
    assert root.skip_backprop()
    assert not any(c.skip_backprop() for c in root.find_children(0))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="num_a1_steps"):
        ExpansionConfig(num_a1_steps=0)
    with pytest.raises(ValueError, match="max_depth_allowed"):
        ExpansionConfig(max_depth_allowed=0)


# --- rStar actions (off by default) ---------------------------------------------------------------------------


def test_rstar_actions_need_a_generator_that_has_them() -> None:
    with pytest.raises(ValueError, match="rephrase_question"):
        make_root(disabled_actions=frozenset())


def test_rstar_actions_when_enabled() -> None:
    root = make_root(ScriptedFakeRStarGenerator(), disabled_actions=frozenset(), num_subquestions=2)
    children = root.find_children(0)
    assert kinds(children) == [
        OST,
        OST,
        DA,
        NodeKind.SUBQUESTION,
        NodeKind.SUBQUESTION,
        NodeKind.REPHRASED_USER_QUESTION,
        QG,
    ]
    sq_open, sq_final = children[3], children[4]
    assert not sq_open.is_terminal() and sq_final.is_terminal() and sq_final.calculate_reward() == 1.0
    ru = children[5]
    assert ru.question.startswith("Given:") and ru.skip_backprop()
    assert kinds(ru.find_children(0)) == [OST, OST, DA, NodeKind.SUBQUESTION, NodeKind.SUBQUESTION, QG]
    trace = solution_trace(child_of_kind(sq_open, DA))
    assert trace["1"]["subquestion"] == "sub 0?" and "direct_answer" in trace["1"]
    assert solution_trace(ru)["0"]["user_question"].startswith("Given:")


# --- traces (spec §9.4, §9.5) -----------------------------------------------------------------------------------


def test_trace_of_a_retrieval_path() -> None:
    generator = ScriptedFakeGenerator(
        queries=[QueryCandidate("Theorem Name: Square of a Sum", "a, b real", "x real", "Algebra", "Theorem 1: ...")]
    )
    root = make_root(generator)
    qg = child_of_kind(root, QG)
    rt = child_of_kind(qg, RT)
    ost = child_of_kind(rt, OST)
    final_ost = child_of_kind(ost, OST)
    trace = solution_trace(final_ost)
    assert list(trace) == ["0"]
    steps = trace["0"]["ost_step"]
    assert list(steps) == ["0_querygeneration", "0_retrieval", "1", "2"]
    assert steps["0_querygeneration"] == [
        "Theorem Name: Square of a Sum",
        "a, b real",
        "x real",
        "Algebra",
        {
            "query1": {
                "candidate_theorem": "Theorem Name: Square of a Sum",
                "preconditions_theorem": "a, b real",
                "preconditions_question": "x real",
                "subject_candidatethm": "Algebra",
                "fullquery": "Theorem 1: ...",
            }
        },
        1,
    ]
    assert steps["0_retrieval"] == [
        "Square of Sum - (a+b)^2 = a^2+2ab+b^2",
        {f"math_17_{qg.node_id}": {"query": "Theorem Name: Square of a Sum", "scores": {"t1": 0.7, "t2": 0.6}}},
        "Repllama",
        "t1",
    ]
    assert steps["1"] == ost.payload.text and steps["2"] == final_ost.payload.text
    assert trace["0"]["user_question"] == QUESTION and "direct_answer" not in trace["0"]
    json.dumps(trace, allow_nan=False)


def test_trace_of_direct_answer_and_terminal_ost() -> None:
    root = make_root(
        ScriptedFakeGenerator(ost_steps=lambda node, n: ["We square it."] if node.depth == 0 else [CORRECT_TEXT])
    )
    da = child_of_kind(root, DA)
    assert solution_trace(da) == {
        "0": {"user_question": QUESTION, "ost_step": {}, "direct_answer": {"text": da.payload.text, "value": 1.0}}
    }
    ost = child_of_kind(root, OST)
    terminal = child_of_kind(ost, OST)
    assert solution_trace(terminal)["0"]["ost_step"] == {"1": "We square it.", "2": [CORRECT_TEXT, 1.0]}


def test_final_and_rollout_solution_records() -> None:
    root = make_root(ScriptedFakeGenerator(ost_steps=lambda node, n: [CORRECT_TEXT, "keep going"], queries=[]))
    children = root.find_children(3)
    children[1].find_children(4)  # expands "keep going": one terminal OST + one open OST
    solutions = collect_solution_nodes(root)
    assert [(s.depth, s.kind) for s in solutions] == [(1, OST), (2, OST), (1, DA)]
    records = final_solution_records(root)
    assert [r["rollout_id"] for r in records] == [3, 4, 3]
    assert all(r["question_id"] == "math_17" for r in records)
    assert records[1]["trace"]["0"]["ost_step"] == {"1": "keep going", "2": [CORRECT_TEXT, 1.0]}
    rollouts = rollout_solution_records([children[0], children[1]])
    assert [r["rollout_id"] for r in rollouts] == [0, 1]
    assert rollouts[1]["trace"]["0"]["ost_step"] == {"1": "keep going"}
    json.dumps(records + rollouts, allow_nan=False)


def test_retrieval_score_records_use_the_dataset_id() -> None:
    root = make_root()
    qg = child_of_kind(root, QG)
    qg.find_children(0)
    assert retrieval_score_records(root) == [
        {f"math_17_{qg.node_id}": {"query": "Theorem Name: Square of a Sum", "scores": {"t1": 0.7, "t2": 0.6}}}
    ]


def test_json_safe_turns_infinity_into_null() -> None:
    value = {"a": float("inf"), "b": [1.0, float("-inf"), float("nan")], "c": ("x", 2)}
    assert json_safe(value) == {"a": None, "b": [1.0, None, None], "c": ["x", 2]}
    json.dumps(json_safe(value), allow_nan=False)


def test_ost_payload_is_frozen() -> None:
    step = OstStep("text")
    with pytest.raises(AttributeError):
        step.text = "other"  # type: ignore[misc]
