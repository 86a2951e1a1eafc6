"""Write hand-made MCTS run directories in the format ``run_src/mcts`` produces (``specs/mcts.md`` §9 with
its [FIX]es), for testing the query-synthesis stages without running a search.

A trajectory is a list of items: a string is a one-step thought, a :class:`Retrieval` is a query-generation
node followed by its retrieval node; it ends with a direct answer (``answer=``) or a terminal OST step
(``terminal_ost=``). Self-reflection verdicts are derived from the retrievals (the positive labelled 1 unless
``positive_label`` says otherwise, every id in ``rejected`` labelled 0), one set per retrieval call.

Usage::

    run = RunDirBuilder(tmp_path / "run", corpus=str(corpus_file), corpus_split="mini")
    run.add_problem(0, "p0", "What is 1+1?", "2", [
        Trajectory(["We add.", Retrieval("t1", qg_node_id=3, rejected=["t2"])], answer="so \\\\boxed{2}", value=1),
    ])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Retrieval:
    """One QG node and the retrieval node under it (the theorem ``theorem_id`` passed self-reflection)."""

    theorem_id: str
    qg_node_id: int
    summary: str = ""
    query: str = "Theorem Name: something\nTheorem Statement: something holds."
    rejected: list[str] = field(default_factory=list)  # ids judged irrelevant in the same retrieval call
    positive_label: int | None = 1  # the positive's logged verdict; None = not logged (no self-reflection)

    def summary_text(self) -> str:
        return self.summary or f"Summary of theorem {self.theorem_id}."


@dataclass
class Trajectory:
    items: list[str | Retrieval]
    answer: str | None = None  # direct-answer text (CRS)
    value: float | None = None  # stored reward of the terminal step
    terminal_ost: str | None = None  # a terminal one-step thought instead of a direct answer
    rollout_id: int = 0


class RunDirBuilder:
    """Creates ``<root>/args.json`` and per-problem files; ``width`` is the zero-padding of indices."""

    def __init__(
        self, root: Path, *, dataset: str = "MATH", corpus: str = "hf", corpus_split: str = "mini", width: int = 4
    ) -> None:
        self.root = Path(root)
        self.dataset = dataset
        self.width = width
        for sub in ("answer_sheets", "hard_negatives", "retriever_scores"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        args = {
            "dataset_name": dataset,
            "corpus": corpus,
            "corpus_split": corpus_split,
            "retriever": "bm25",
            "model_ckpt": "SmolLM2-135M-Instruct",
            "num_rollouts": 4,
        }
        (self.root / "args.json").write_text(json.dumps(args, indent=2), encoding="utf-8")

    def stem(self, index: int) -> str:
        return f"{index:0{self.width}d}"

    def trace(self, source_id: str, question: str, trajectory: Trajectory) -> dict[str, Any]:
        steps: dict[str, Any] = {}
        ost_count = 0
        for item in trajectory.items:
            if isinstance(item, str):
                ost_count += 1
                steps[str(ost_count)] = item
                continue
            qg_key = f"{source_id}_{item.qg_node_id}"
            if f"{ost_count}_retrieval" in steps:
                raise ValueError(
                    "two retrievals need a one-step thought between them (an RT node is followed by OST/DA)"
                )
            scores = {item.theorem_id: 0.9, **{doc: 0.5 - 0.01 * i for i, doc in enumerate(item.rejected)}}
            steps[f"{ost_count}_querygeneration"] = [
                item.query,
                None,
                None,
                None,
                {"query1": {"fullquery": item.query}},
                1,
            ]
            steps[f"{ost_count}_retrieval"] = [
                item.summary_text(),
                {qg_key: {"query": item.query, "scores": scores}},
                "bm25",
                item.theorem_id,
            ]
        root: dict[str, Any] = {"user_question": question, "ost_step": steps}
        if trajectory.terminal_ost is not None:
            steps[str(ost_count + 1)] = [trajectory.terminal_ost, trajectory.value]
        elif trajectory.answer is not None:
            root["direct_answer"] = {"text": trajectory.answer, "value": trajectory.value}
        return {"0": root}

    def add_problem(
        self,
        index: int,
        source_id: str,
        problem: str,
        gold_answer: str | None,
        trajectories: list[Trajectory],
        *,
        finished: bool = True,
        extra_judgments: list[dict[str, Any]] | None = None,
        gold_solution: str | None = None,
    ) -> None:
        """Write one problem; ``finished=False`` leaves out the answer sheet (a problem still running)."""
        sheets = self.root / "answer_sheets"
        stem = f"Question {self.stem(index)}"
        solutions = [
            {"question_id": source_id, "rollout_id": t.rollout_id, "trace": self.trace(source_id, problem, t)}
            for t in trajectories
        ]
        (sheets / f"{stem} - Final Solutions.json").write_text(json.dumps(solutions, indent=1), encoding="utf-8")
        (sheets / f"{stem} - Rollout Solutions.json").write_text(json.dumps(solutions[:1], indent=1), encoding="utf-8")
        judgments: dict[tuple[str, str], dict[str, Any]] = {}
        calls: dict[str, dict[str, Any]] = {}
        for trajectory in trajectories:
            for item in trajectory.items:
                if not isinstance(item, Retrieval):
                    continue
                qg_key = f"{source_id}_{item.qg_node_id}"
                calls[qg_key] = {qg_key: {"query": item.query, "scores": {item.theorem_id: 0.9}}}
                ranked = [(item.theorem_id, item.positive_label), *((doc, 0) for doc in item.rejected)]
                for rank, (doc, label) in enumerate(ranked, start=1):
                    if label is None:
                        continue
                    judgments.setdefault(
                        (qg_key, doc),
                        {
                            "question_id": source_id,
                            "theorem_id": doc,
                            "LLM_relevance_label": label,
                            "LLM_explanation": "Reason: fixture.",
                            "qg_key": qg_key,
                            "query": item.query,
                            "rank": rank,
                            "score": 0.9 - 0.1 * rank,
                            "summary": f"Summary of theorem {doc}.",
                        },
                    )
        lines = [*judgments.values(), *(extra_judgments or [])]
        (self.root / "hard_negatives" / f"{self.stem(index)}.jsonl").write_text(
            "".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8"
        )
        (self.root / "retriever_scores" / f"{self.stem(index)}.jsonl").write_text(
            "".join(json.dumps(call) + "\n" for call in calls.values()), encoding="utf-8"
        )
        if finished:
            sheet = {
                "id": index,
                "source_id": source_id,
                "problem": problem,
                "gold_solution": gold_solution,
                "gold_answer": gold_answer,
                "num_solutions": len(solutions),
                "num_correct_solutions": 0,
                "model": "SmolLM2-135M-Instruct",
                "prompt_version": "fixture",
            }
            (sheets / f"{stem} - Answer.json").write_text(json.dumps(sheet, indent=1), encoding="utf-8")


# A small theorem corpus whose ids the fixtures above use (t1 ... t12).
FIXTURE_THEOREMS = {
    "t1": "Vieta's formulas: for a monic quadratic x^2 + px + q with roots r and s, r + s = -p and rs = q.",
    "t2": "Binomial theorem: (a + b)^n equals the sum over k of C(n, k) a^k b^(n-k).",
    "t3": "Pigeonhole principle: if n + 1 objects are placed into n boxes, some box holds two objects.",
    "t4": "Fermat's little theorem: if p is prime and a is not divisible by p, then a^(p-1) is congruent to 1 mod p.",
    "t5": "Triangle inequality: in any triangle the sum of two side lengths exceeds the third side length.",
    "t6": "Inclusion-exclusion principle: |A union B| = |A| + |B| - |A intersect B| for finite sets A and B.",
    "t7": "Euclidean algorithm: gcd(a, b) = gcd(b, a mod b) for positive integers a > b.",
    "t8": "Angle bisector theorem: the bisector of an angle divides the opposite side in the ratio of the sides.",
    "t9": "Arithmetic series: the sum of an arithmetic progression is the number of terms times the mean of the ends.",
    "t10": "Pythagorean theorem: in a right triangle the square of the hypotenuse equals the sum of the other squares.",
    "t11": "Chinese remainder theorem: congruences modulo pairwise coprime moduli have a unique common solution.",
    "t12": "AM-GM inequality: the arithmetic mean of non-negative reals is at least their geometric mean.",
}


def write_corpus(path: Path, theorems: dict[str, str] | None = None) -> Path:
    """``{"id", "content"}`` lines, the JSONL corpus format ``models.retrieval.corpus.load_corpus`` reads."""
    rows = theorems or FIXTURE_THEOREMS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": k, "content": v}) + "\n" for k, v in rows.items()), encoding="utf-8")
    return path
