"""Math problems for the MCTS, each with a global index, the dataset's own id and a gold answer (spec §4).

Loaders by ``--dataset_name``:

* ``MATH`` / ``NUMINA_MATH``: JSON array of ``{problem, solution, ...}``; gold = last ``\\boxed{}`` of the
  solution (``extra_info.answer`` when present, as in MATH500). [FIX] items without an extractable gold
  answer are skipped and counted, not searched with a ``None`` gold.
* ``BRIGHT``: TheoremQA JSON (``gold_answer`` field; the solution is rarely boxed, [FIX] P5).
* ``CHAMP``: the problems of the ``champ-dataset`` package (or a JSON file in the same shape).
* anything else: a JSON array or JSON Lines file with ``problem`` and ``solution`` and/or ``gold_answer``.

The global index is the position in the file, so ``--start_idx/--end_idx`` and ``--shard`` slices are
stable; the dataset's own id (``id`` field, else the index) names the problem in every record ([FIX] S10).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.answers.extraction import extract_boxed

logger = logging.getLogger(__name__)

DATASET_NAMES = ("MATH", "NUMINA_MATH", "BRIGHT", "CHAMP", "JSON")


@dataclass(frozen=True)
class Problem:
    index: int
    source_id: str
    problem: str
    solution: str | None
    gold_answer: str


@dataclass(frozen=True)
class ProblemSet:
    """The loaded problems plus what was skipped and why (reported in ``args.json``)."""

    problems: list[Problem]
    total_items: int
    skipped: dict[str, int]
    source: str


def dataset_path(data_root: str | Path, dataset_name: str, test_json_filename: str) -> Path:
    """``<data_root>/<dataset_name>/<test_json_filename>.json`` as in the reference layout."""
    name = test_json_filename if test_json_filename.endswith((".json", ".jsonl")) else f"{test_json_filename}.json"
    return Path(data_root) / dataset_name / name


def _read_items(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"problem file {path} does not exist (check --data_root/--dataset_name/--test_json_filename)"
        )
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        items = json.loads(text)
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ValueError(f"{path}: expected a JSON array of objects (or JSON Lines)")
    return items


def _gold_answer(item: dict[str, Any], dataset_name: str) -> str | None:
    """The item's gold answer: an explicit field first, else the solution's last box."""
    for key in ("gold_answer", "answer"):
        if item.get(key) not in (None, ""):
            return str(item[key])
    extra = item.get("extra_info")
    if isinstance(extra, dict) and extra.get("answer") not in (None, ""):
        return str(extra["answer"])
    return extract_boxed(item.get("solution"))


def problems_from_items(items: Sequence[dict[str, Any]], dataset_name: str, source: str) -> ProblemSet:
    """Validate rows and build :class:`Problem` objects; rows without a problem text are an error."""
    problems: list[Problem] = []
    skipped: dict[str, int] = {}
    for index, item in enumerate(items):
        text = item.get("problem")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{source}: item {index} has no 'problem' text")
        gold = _gold_answer(item, dataset_name)
        if gold is None or not gold.strip():
            skipped["no_gold_answer"] = skipped.get("no_gold_answer", 0) + 1
            continue
        source_id = str(item["id"]) if item.get("id") not in (None, "") else str(index)
        problems.append(Problem(index, source_id, text.strip(), item.get("solution"), gold.strip()))
    ids = [p.source_id for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{source}: problem ids are not unique")
    if skipped:
        logger.warning("%s: skipped %s", source, skipped)
    return ProblemSet(problems, len(items), skipped, source)


def champ_items() -> list[dict[str, Any]]:
    """CHAMP's 270 problems as loader rows (``id``, ``problem``, ``gold_answer``, no worked solution)."""
    from models.embedded.champ import load_champ

    return [
        {"id": p.problem_id, "problem": p.text, "gold_answer": p.answer, "solution": None, "category": p.category}
        for p in load_champ().problems
    ]


def load_problems(
    dataset_name: str,
    data_root: str | Path = "data",
    test_json_filename: str = "test_all",
    data_file: str | None = None,
) -> ProblemSet:
    """Load a dataset by the reference's flags, or ``data_file`` directly; CHAMP falls back to its package."""
    if dataset_name not in DATASET_NAMES:
        raise ValueError(f"--dataset_name must be one of {', '.join(DATASET_NAMES)}; got {dataset_name!r}")
    path = Path(data_file) if data_file else dataset_path(data_root, dataset_name, test_json_filename)
    if dataset_name == "CHAMP" and not data_file and not path.is_file():
        return problems_from_items(champ_items(), dataset_name, "champ-dataset")
    return problems_from_items(_read_items(path), dataset_name, str(path))


def select_problems(
    problems: Sequence[Problem],
    start_idx: int = 0,
    end_idx: int | None = None,
    shard: tuple[int, int] | None = None,
    problem_ids: set[str] | None = None,
) -> list[Problem]:
    """Problems with ``start_idx <= index < end_idx``, then the ``i``-th of ``N`` round-robin shards.

    Round-robin (index mod N) keeps shards balanced when difficulty drifts along the file; ``problem_ids``
    keeps only the listed dataset ids (e.g. a fixed training split).
    """
    chosen = [p for p in problems if p.index >= start_idx and (end_idx is None or p.index < end_idx)]
    if problem_ids is not None:
        unknown = problem_ids - {p.source_id for p in problems}
        if unknown:
            raise ValueError(f"--problem_ids names {len(unknown)} ids not in the dataset, e.g. {sorted(unknown)[:3]}")
        chosen = [p for p in chosen if p.source_id in problem_ids]
    if shard is not None:
        shard_index, shard_count = shard
        chosen = [p for p in chosen if p.index % shard_count == shard_index]
    return chosen


def parse_shard(value: str) -> tuple[int, int]:
    """``"i/N"`` (0-based ``i``) → ``(i, N)``; raises ``ValueError`` with the flag name otherwise."""
    try:
        left, right = value.split("/")
        shard_index, shard_count = int(left), int(right)
    except ValueError as error:
        raise ValueError(f"--shard must look like i/N (e.g. 0/8), got {value!r}") from error
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise ValueError(f"--shard {value!r}: need 0 <= i < N")
    return shard_index, shard_count
