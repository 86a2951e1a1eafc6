"""Read one MCTS run directory (``specs/mcts.md`` §9 with its [FIX]es) into typed, validated records.

Layout read (written by ``run_src/mcts/run_outputs.py``)::

    <run_dir>/args.json                                   dataset_name, corpus, corpus_split, ...
    <run_dir>/answer_sheets/Question <idx> - Answer.json  written last: its presence = problem finished
    <run_dir>/answer_sheets/Question <idx> - Final Solutions.json    [{"question_id", "rollout_id", "trace"}]
    <run_dir>/answer_sheets/Question <idx> - Rollout Solutions.json  same shape, one per rollout
    <run_dir>/hard_negatives/<idx>.jsonl                  one self-reflection verdict per line

Problems are found by matching file names with a regex, so any zero-padding width works ([FIX] of the
reference's ``????`` glob, which ignored indices >= 10000). A problem whose files cannot be read is
reported and skipped; a broken ``args.json`` stops the stage before any work.

Usage::

    run = read_run_info(Path("outputs_MCTS/run_outputs/MATH/Qwen2.5-7B-Instruct/2025-01-01_00-00-00---[x]"))
    for problem in iter_problems(run, solutions=("final",)):
        ...
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.answers.extraction import extract_boxed
from models.io_utils import read_jsonl_numbered

logger = logging.getLogger(__name__)

ANSWER_SHEET_RE = re.compile(r"^Question (\d+) - Answer\.json$")
SOLUTION_FILES = {"final": "Final Solutions", "rollout": "Rollout Solutions"}
REQUIRED_SHEET_FIELDS = ("id", "source_id", "problem")


class RunFormatError(ValueError):
    """A run directory or one of its files does not follow the documented layout."""


@dataclass(frozen=True)
class RunInfo:
    """One run directory and the settings downstream stages need from its ``args.json``."""

    run_dir: Path
    dataset: str
    corpus_source: str
    corpus_split: str
    args: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Judgment:
    """One self-reflection verdict: ``label`` 1 = relevant (the theorem became a node), 0 = rejected."""

    theorem_id: str
    label: int
    qg_key: str | None
    rank: int | None
    position: int  # line number, the fallback order when ``rank`` is missing


@dataclass(frozen=True)
class Trajectory:
    """One stored solution trace (only ``trace["0"]`` matters: sub-questions are disabled in RaDeR)."""

    origin: str  # "final" or "rollout": which file it came from
    position: int  # index in that file's list
    rollout_id: int | None
    steps: tuple[tuple[str, Any], ...]  # ost_step items in insertion (= reasoning) order
    direct_answer: dict[str, Any] | None

    @property
    def ref(self) -> str:
        return f"{self.origin}:{self.position}"


@dataclass(frozen=True)
class ProblemRun:
    """Everything one finished problem contributes: its answer sheet, trajectories and verdicts."""

    run: RunInfo
    index: int
    source_id: str
    problem: str
    gold_answer: str | None
    trajectories: tuple[Trajectory, ...]
    judgments: tuple[Judgment, ...]

    @property
    def key(self) -> str:
        """``<dataset>:<source_id>``: the problem's id across runs and datasets."""
        return f"{self.run.dataset}:{self.source_id}"


def read_run_info(run_dir: str | Path, corpus_source: str | None = None, corpus_split: str | None = None) -> RunInfo:
    """Validate ``run_dir`` and read its ``args.json``; ``corpus_*`` override the run's own corpus settings."""
    root = Path(run_dir)
    args_path = root / "args.json"
    if not root.is_dir():
        raise FileNotFoundError(f"run directory {root} does not exist")
    if not args_path.is_file():
        raise FileNotFoundError(
            f"{args_path} is missing; is {root} an MCTS run directory (<root>/<dataset>/<model>/<run>)?"
        )
    try:
        args = json.loads(args_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunFormatError(f"{args_path} is not valid JSON: {err}") from err
    if not isinstance(args, dict):
        raise RunFormatError(f"{args_path} must hold a JSON object of the runner's flags")
    if isinstance(args.get("settings"), dict):  # the runner's stage record: its flags and derived settings
        args = {**args["settings"], **args.get("derived", {})}
    if not (root / "answer_sheets").is_dir():
        raise RunFormatError(f"{root} has no answer_sheets/ directory; the run has not produced any problem yet")
    dataset = args.get("dataset_name")
    source = corpus_source or args.get("corpus")
    split = corpus_split or args.get("corpus_split")
    for name, value, flag in (
        ("dataset_name", dataset, None),
        ("corpus", source, "--corpus"),
        ("corpus_split", split, "--corpus_split"),
    ):
        if not isinstance(value, str) or not value:
            fix = f", or pass {flag}" if flag else ""
            raise RunFormatError(f"{args_path} has no string field {name!r}{fix}")
    return RunInfo(run_dir=root, dataset=dataset, corpus_source=source, corpus_split=split, args=args)


def finished_indices(run: RunInfo) -> list[tuple[int, str]]:
    """``(index, index_text)`` of every problem with an answer sheet, by index; ``index_text`` keeps the padding."""
    found: dict[int, str] = {}
    for path in (run.run_dir / "answer_sheets").iterdir():
        match = ANSWER_SHEET_RE.match(path.name)
        if match:
            index = int(match.group(1))
            if index in found:
                raise RunFormatError(
                    f"{run.run_dir}: problem {index} has two answer sheets ({found[index]!r} and {match.group(1)!r})"
                )
            found[index] = match.group(1)
    return sorted(found.items())


def unfinished_count(run: RunInfo) -> int:
    """Problems with solution files but no answer sheet (still running, or killed mid-problem)."""
    pattern = re.compile(r"^Question (\d+) - Final Solutions\.json$")
    finished = {index for index, _ in finished_indices(run)}
    started = {
        int(match.group(1))
        for path in (run.run_dir / "answer_sheets").iterdir()
        if (match := pattern.match(path.name)) is not None
    }
    return len(started - finished)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise RunFormatError(f"{path} is missing although the problem's answer sheet exists")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunFormatError(f"{path} is not valid JSON: {err}") from err


def _gold_answer(sheet: dict[str, Any]) -> str | None:
    gold = sheet.get("gold_answer")
    if gold is not None and str(gold).strip():
        return str(gold)
    solution = sheet.get("gold_solution")
    return extract_boxed(solution) if isinstance(solution, str) else None


def _parse_trajectory(item: Any, origin: str, position: int, where: str) -> Trajectory:
    if not isinstance(item, dict) or not isinstance(item.get("trace"), dict):
        raise RunFormatError(f"{where} element {position} must be an object with a 'trace' object")
    root = item["trace"].get("0")
    if not isinstance(root, dict) or not isinstance(root.get("ost_step", {}), dict):
        raise RunFormatError(f"{where} element {position}: trace['0'] must be an object with an 'ost_step' object")
    direct_answer = root.get("direct_answer")
    if direct_answer is not None and not isinstance(direct_answer, dict):
        raise RunFormatError(f"{where} element {position}: direct_answer must be an object with 'text' and 'value'")
    rollout_id = item.get("rollout_id")
    return Trajectory(
        origin=origin,
        position=position,
        rollout_id=rollout_id if isinstance(rollout_id, int) else None,
        steps=tuple(root.get("ost_step", {}).items()),
        direct_answer=direct_answer,
    )


def _read_judgments(path: Path) -> tuple[Judgment, ...]:
    if not path.is_file():
        return ()
    judgments: list[Judgment] = []
    for line_no, record in read_jsonl_numbered(path):
        theorem_id, label = record.get("theorem_id"), record.get("LLM_relevance_label")
        if theorem_id is None or label not in (0, 1):
            raise RunFormatError(f"{path} line {line_no}: needs 'theorem_id' and 'LLM_relevance_label' 0 or 1")
        rank = record.get("rank")
        qg_key = record.get("qg_key")
        judgments.append(
            Judgment(
                theorem_id=str(theorem_id),
                label=int(label),
                qg_key=str(qg_key) if qg_key is not None else None,
                rank=rank if isinstance(rank, int) else None,
                position=line_no,
            )
        )
    return tuple(judgments)


def read_problem(run: RunInfo, index: int, index_text: str, solutions: tuple[str, ...] = ("final",)) -> ProblemRun:
    """Read one finished problem; ``solutions`` picks the trace files (``final``, ``rollout``)."""
    sheets = run.run_dir / "answer_sheets"
    sheet_path = sheets / f"Question {index_text} - Answer.json"
    sheet = _read_json(sheet_path)
    if not isinstance(sheet, dict):
        raise RunFormatError(f"{sheet_path} must hold a JSON object")
    missing = [name for name in REQUIRED_SHEET_FIELDS if sheet.get(name) is None]
    if missing:
        raise RunFormatError(f"{sheet_path} has no {missing} (fields {list(REQUIRED_SHEET_FIELDS)} are required)")
    if sheet["id"] != index:
        raise RunFormatError(f"{sheet_path}: id {sheet['id']!r} does not match the file name's index {index}")
    trajectories: list[Trajectory] = []
    for origin in solutions:
        path = sheets / f"Question {index_text} - {SOLUTION_FILES[origin]}.json"
        items = _read_json(path)
        if not isinstance(items, list):
            raise RunFormatError(f"{path} must hold a JSON array of solution records")
        trajectories.extend(_parse_trajectory(item, origin, i, str(path)) for i, item in enumerate(items))
    return ProblemRun(
        run=run,
        index=index,
        source_id=str(sheet["source_id"]),
        problem=str(sheet["problem"]),
        gold_answer=_gold_answer(sheet),
        trajectories=tuple(trajectories),
        judgments=_read_judgments(run.run_dir / "hard_negatives" / f"{index_text}.jsonl"),
    )


@dataclass
class ReadReport:
    """Counts for the log and the stage summary."""

    problems_finished: int = 0
    problems_unfinished: int = 0
    problems_unreadable: int = 0
    errors: list[str] = field(default_factory=list)


def iter_problems(
    run: RunInfo, solutions: tuple[str, ...] = ("final",), report: ReadReport | None = None
) -> Iterator[ProblemRun]:
    """Every finished problem in index order; unreadable ones are logged, counted in ``report`` and skipped."""
    report = report if report is not None else ReadReport()
    report.problems_unfinished += unfinished_count(run)
    for index, index_text in finished_indices(run):
        try:
            problem = read_problem(run, index, index_text, solutions)
        except (RunFormatError, ValueError) as err:
            report.problems_unreadable += 1
            report.errors.append(str(err))
            logger.warning("skipping problem %d of %s: %s", index, run.run_dir, err)
            continue
        report.problems_finished += 1
        yield problem
