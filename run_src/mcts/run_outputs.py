"""The MCTS run directory (spec ``specs/mcts.md`` §9 with its [FIX]es; DESIGN §3).

Layout under ``<run_outputs_root>/<dataset>/<model>/<run_name>/``::

    args.json                                   the stage record: every flag, problem-set fingerprint, prompt versions
    run_summary.json                            counts, failures, LLM usage, wall time (rewritten at the end)
    answer_sheets/Question <idx> - Answer.json          written LAST: its presence = problem finished
    answer_sheets/Question <idx> - Final Solutions.json
    answer_sheets/Question <idx> - Rollout Solutions.json
    answer_sheets/Question <idx> - Rollout <r>.tree     with --save_tree
    trees/<idx>.json                            the final tree (kinds, visits, values, verdicts) for inspect_run
    hard_negatives/<idx>.jsonl                  self-reflection verdicts (label 0 and 1; unparsable as 0)
    retriever_scores/<idx>.jsonl                one line per retrieval call (scores to --retrieval_score_depth)
    errors/<idx>.json                           traceback of a failed problem (removed once it succeeds)

``<idx>`` is the global problem index zero-padded to a width fixed by the dataset size ([FIX] the
reference's ``????`` glob missed indices ≥ 10000). Every file is written atomically, and per-problem
files replace the reference's shared appends, so a killed run leaves no half-written or duplicated lines
and a rerun simply skips problems whose answer sheet exists (recognised by the dataset id it records).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.io_utils import atomic_write_json, atomic_write_jsonl, atomic_write_text
from run_src.mcts.trace import json_safe

logger = logging.getLogger(__name__)

ANSWER_SHEET_RE = re.compile(r"^Question (\d+) - Answer\.json$")
STALE_TMP_AGE_S = 600.0  # a temporary file this old belongs to no live atomic write
def index_width(total_items: int) -> int:
    """Zero-padding width for problem indices: at least 4, enough for the largest index."""
    return max(4, len(str(max(total_items - 1, 0))))


@dataclass(frozen=True)
class RunDirectory:
    """Paths of one run directory; creating it does not touch the disk (call :meth:`create`)."""

    root: Path
    width: int

    @property
    def answer_sheets(self) -> Path:
        return self.root / "answer_sheets"

    def stem(self, index: int) -> str:
        return f"Question {index:0{self.width}d}"

    def answer_sheet(self, index: int) -> Path:
        return self.answer_sheets / f"{self.stem(index)} - Answer.json"

    def final_solutions(self, index: int) -> Path:
        return self.answer_sheets / f"{self.stem(index)} - Final Solutions.json"

    def rollout_solutions(self, index: int) -> Path:
        return self.answer_sheets / f"{self.stem(index)} - Rollout Solutions.json"

    def tree(self, index: int, rollout_id: int) -> Path:
        return self.answer_sheets / f"{self.stem(index)} - Rollout {rollout_id}.tree"

    def hard_negatives(self, index: int) -> Path:
        return self.root / "hard_negatives" / f"{index:0{self.width}d}.jsonl"

    def retriever_scores(self, index: int) -> Path:
        return self.root / "retriever_scores" / f"{index:0{self.width}d}.jsonl"

    def tree_json(self, index: int) -> Path:
        return self.root / "trees" / f"{index:0{self.width}d}.json"

    def error_file(self, index: int) -> Path:
        return self.root / "errors" / f"{index:0{self.width}d}.json"

    def create(self) -> None:
        for sub in ("answer_sheets", "trees", "hard_negatives", "retriever_scores", "errors"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.remove_stale_temporaries()

    def remove_stale_temporaries(self, older_than_s: float = STALE_TMP_AGE_S) -> list[Path]:
        """Delete the ``.<name>.tmp`` files a killed run left behind (an atomic write lasts milliseconds, so
        one older than ``older_than_s`` belongs to no live writer, even with shards sharing the directory)."""
        cutoff = time.time() - older_than_s
        removed = [p for p in self.root.rglob(".*.tmp") if p.is_file() and p.stat().st_mtime < cutoff]
        for path in removed:
            path.unlink(missing_ok=True)
        if removed:
            logger.warning("removed %d stale temporary files of a killed run, e.g. %s", len(removed), removed[0])
        return removed

    def finished_ids(self) -> set[str]:
        """Dataset ids of the problems whose answer sheet exists (a torn file cannot exist: writes are atomic).

        A finished problem is known by the id its sheet records, not by the index in its file name, so a
        run directory never mistakes one problem for another.
        """
        if not self.answer_sheets.is_dir():
            return set()
        found: set[str] = set()
        for path in self.answer_sheets.iterdir():
            if ANSWER_SHEET_RE.match(path.name):
                try:
                    found.add(str(json.loads(path.read_text(encoding="utf-8"))["source_id"]))
                except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
                    self._move_aside(path, err)
        return found

    def _move_aside(self, path: Path, err: Exception) -> Path:
        """A damaged answer sheet (disk full, hand edit) is kept for inspection and its problem searched again."""
        target = self.root / "corrupt" / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        logger.error("answer sheet %s is unreadable (%s): moved to %s; its problem is searched again", path, err, target)
        return target


    def answer_sheet_records(self) -> list[dict[str, Any]]:
        """Every answer sheet of the run, in index order."""
        if not self.answer_sheets.is_dir():
            return []
        paths = sorted(p for p in self.answer_sheets.iterdir() if ANSWER_SHEET_RE.match(p.name))
        return [json.loads(path.read_text(encoding="utf-8")) for path in paths]


@dataclass
class ProblemOutputs:
    """Everything one finished search produced, ready to be written."""

    index: int
    answer_sheet: dict[str, Any]
    final_solutions: list[dict[str, Any]]
    rollout_solutions: list[dict[str, Any]]
    hard_negatives: list[dict[str, Any]]
    retriever_scores: list[dict[str, Any]]
    trees: list[str]
    tree: dict[str, Any] | None = None
    seconds: float = 0.0  # wall time of the search: for the run summary, not the (deterministic) files


def write_problem_outputs(run: RunDirectory, outputs: ProblemOutputs) -> None:
    """Write one problem's files, the answer sheet last, then clear any error file from an earlier attempt."""
    index = outputs.index
    atomic_write_json(run.final_solutions(index), json_safe(outputs.final_solutions), indent=1)
    atomic_write_json(run.rollout_solutions(index), json_safe(outputs.rollout_solutions), indent=1)
    for rollout_id, text in enumerate(outputs.trees):
        atomic_write_text(run.tree(index, rollout_id), text)
    atomic_write_jsonl(run.hard_negatives(index), json_safe(outputs.hard_negatives))
    atomic_write_jsonl(run.retriever_scores(index), json_safe(outputs.retriever_scores))
    if outputs.tree is not None:
        atomic_write_json(run.tree_json(index), json_safe(outputs.tree), indent=None)
    atomic_write_json(run.answer_sheet(index), json_safe(outputs.answer_sheet), indent=1)
    run.error_file(index).unlink(missing_ok=True)


def write_problem_error(run: RunDirectory, index: int, source_id: str, error: BaseException, trace: str) -> None:
    atomic_write_json(
        run.error_file(index),
        {"index": index, "source_id": source_id, "error": f"{type(error).__name__}: {error}", "traceback": trace},
    )
