"""Prompt files: section parsing, rendering into chat turns, placeholder checks, version hashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.llm.prompt_templates import PROMPTS_DIR, load_prompt, parse_prompt
from run_src.mcts.llm_actions import MCTSPrompts

GOOD = """# a comment
### system
Be brief.
### example user
Q: 1 + 1 = {not a placeholder}
### example assistant
\\boxed{2}
### user
Q: {question}
"""


def test_render_gives_system_few_shot_turns_and_user() -> None:
    template = parse_prompt(GOOD, "good")
    messages = template.render(question="x^{2} = 4?")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "Q: 1 + 1 = {not a placeholder}"  # examples are verbatim
    assert messages[2]["content"] == "\\boxed{2}"
    assert messages[3]["content"] == "Q: x^{2} = 4?"
    assert template.placeholders == {"question"}


def test_version_changes_with_the_text() -> None:
    assert parse_prompt(GOOD, "a").version == parse_prompt(GOOD, "b").version
    assert parse_prompt(GOOD, "a").version != parse_prompt(GOOD.replace("brief", "short"), "a").version


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("### user\nQ\n### system\nS", "must be the last"),
        ("### system\nS", "exactly one '### user'"),
        ("### example user\nA\n### user\nQ", "needs one '### example assistant'"),
        ("### example assistant\nA\n### example user\nB\n### user\nQ", "alternate"),
        ("### nonsense\nx\n### user\nQ", "unknown section"),
        ("stray text\n### user\nQ", "before the first"),
    ],
)
def test_malformed_files_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_prompt(text, "bad")


def test_missing_field_is_named() -> None:
    with pytest.raises(KeyError, match="question"):
        parse_prompt(GOOD, "good").render()


def test_placeholder_contract_is_checked_on_load(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text(GOOD, encoding="utf-8")
    assert load_prompt(path, {"question"}).name == "p"
    with pytest.raises(ValueError, match="exactly the placeholders"):
        load_prompt(path, {"question", "partial_solution"})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prompt(tmp_path / "missing.txt")


@pytest.mark.parametrize("candidate_mode", [True, False])
def test_shipped_mcts_prompts_load_with_few_shot_examples(candidate_mode: bool) -> None:
    prompts = MCTSPrompts.load(candidate_mode)
    versions = prompts.versions()
    assert len(versions) == 5 and all(len(v) == 12 for v in versions.values())
    for template in (prompts.ost, prompts.crs, prompts.query_generation, prompts.summarize, prompts.self_reflection):
        assert template.system and template.examples, template.name
    # Every few-shot QG answer in candidate mode must be parsable by our own parser.
    if candidate_mode:
        from run_src.mcts.parsing import parse_candidate_theorems

        assert all(parse_candidate_theorems(answer) for _, answer in prompts.query_generation.examples)
    from run_src.mcts.parsing import parse_self_reflection

    labels = [parse_self_reflection(answer)[0].value for _, answer in prompts.self_reflection.examples]
    assert "relevant" in labels and "irrelevant" in labels
    assert (PROMPTS_DIR / "mcts_ost.txt").is_file()
