"""The paper's published BRIGHT numbers (Tables 1 and 2) as data, with the checks that keep them whole.

``paper_results.json`` (beside this module) holds the numbers transcribed from the paper, the splits in
BRIGHT's order and their printed labels; :func:`load_paper_results` reads and checks it. Our runs are
matched to paper rows by the recipe they recorded (:mod:`models.evaluation.recipes`), not by name.

Usage::

    paper = load_paper_results()
    paper.tables["1"].rows["bm25"].average
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from models.retrieval.corpus import BRIGHT_SPLITS

PAPER_RESULTS_PATH = Path(__file__).resolve().parent / "paper_results.json"
PAPER_METRIC = "NDCG@10"  # the only metric Tables 1 and 2 report


@dataclass(frozen=True)
class PaperRow:
    """One printed row; ``scores`` and ``average`` are ×100 as printed."""

    key: str
    name: str
    copied_from_bright: bool  # the paper's ⋆: numbers copied from the BRIGHT paper
    scores: dict[str, float]
    average: float

    @property
    def label(self) -> str:
        return self.name + ("⋆" if self.copied_from_bright else "")

    def mean_over(self, splits: list[str]) -> float:
        return sum(self.scores[s] for s in splits) / len(splits)


@dataclass(frozen=True)
class PaperTable:
    number: str
    title: str
    query_type: str
    source: str
    rows: dict[str, PaperRow]  # key -> first row with that key (repeated rows are checked, then dropped)


@dataclass(frozen=True)
class PaperResults:
    metric: str
    splits: tuple[str, ...]
    split_labels: dict[str, str]
    tables: dict[str, PaperTable]


def load_paper_results(path: str | Path = PAPER_RESULTS_PATH) -> PaperResults:
    """Read and check the data file: the 12 splits in BRIGHT order, complete rows, known map targets."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    splits = tuple(data["splits"])
    if splits != BRIGHT_SPLITS:
        raise ValueError(f"{path}: 'splits' must be the 12 BRIGHT splits in order {list(BRIGHT_SPLITS)}, got {splits}")
    tables: dict[str, PaperTable] = {}
    for number, table in data["tables"].items():
        rows: dict[str, PaperRow] = {}
        for raw in table["rows"]:
            if set(raw["scores"]) != set(splits):
                raise ValueError(f"{path}: table {number} row {raw['key']!r} must give exactly the 12 splits")
            row = PaperRow(raw["key"], raw["name"], bool(raw["copied_from_bright"]), raw["scores"], raw["average"])
            if raw["key"] in rows:
                if not raw.get("repeat_of_earlier_row") or rows[raw["key"]].scores != row.scores:
                    raise ValueError(f"{path}: table {number} repeats key {raw['key']!r} with other numbers")
                continue
            rows[row.key] = row
        tables[number] = PaperTable(number, table["title"], table["query_type"], table["source"], rows)
    return PaperResults(data["metric"], splits, data["split_labels"], tables)
