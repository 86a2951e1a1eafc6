"""Rebuild the paper's BRIGHT Tables 1 and 2 from our ``results.json`` files, next to the published numbers.

    python -m run_src.make_tables --results_root outputs/bright --output_dir outputs/tables [--table 1|2|all]

Input: the run directories of :mod:`run_src.evaluate_bright`,
``<results_root>/<model>/<query_type>/<task>/results.json`` (values are fractions rounded to 5
decimals, DESIGN.md §3). Table 1 reads query type ``original``, Table 2 ``gpt4_reason`` (which
query type belongs to which table is stored in the data file, not here). A ``results.json`` at
another depth, or under a folder that is not a query type, is refused: such a tree was not written
by ``evaluate_bright`` and guessing what its folders mean would put numbers in the wrong cells.

The paper's numbers are data, ``models/evaluation/paper_results.json`` (transcribed from
specs/evaluation.md §9.1/§9.2, as Pyserini keeps its 2CR targets). Our runs are matched to paper rows
by the recipe their ``config.json`` recorded (:mod:`models.evaluation.recipes`: base model, training
data and query types, hybrid, reranker), never by folder name; ``--model_map NAME=KEY`` overrides a
match. Output in ``--output_dir``:

* ``table<N>.md`` / ``table<N>.tex``: one block per model found under the results root, in the
  paper's split order: our row, the matched paper row and ``Δ = ours − paper``; then the paper's other
  rows for reference. Numbers are ×100
  with one decimal as in the paper; a missing split is ``–`` and never filled. Our average is over
  the splits present and carries ``*`` when some are missing; its Δ is then taken against the
  paper's mean over the same splits (the printed average covers all 12, so it would not compare).
* ``table<N>.png``: grouped bars per split, ours (solid) vs paper (hatched).
* ``extra_splits.md`` / ``.tex``: tasks that are not among the 12 BRIGHT splits (e.g. ``champ``, the
  embedded CPU default, or ``<split>_long`` runs), which have no paper numbers.
* ``tables.json`` (the same numbers, machine-readable), ``config.json`` and ``_SUCCESS`` (last).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.evaluation.paper_results import PAPER_METRIC, PAPER_RESULTS_PATH, PaperResults, PaperRow, load_paper_results
from models.evaluation.recipes import run_recipe
from models.io_utils import atomic_write_bytes, atomic_write_json, atomic_write_text
from models.retrieval.corpus import BRIGHT_SPLITS, QUERY_TYPES
from models.stage import (
    StageRecord,
    add_config_argument,
    check_rerun,
    clear_success,
    configure_logging,
    mark_success,
    parse_flags,
    require_flags,
    run_stage,
)

logger = logging.getLogger(__name__)

STAGE = "make_tables"
INFORMATIONAL = frozenset({"output_dir", "overwrite"})

MISSING = "–"  # en dash, as the paper prints absent cells
INCOMPLETE = "*"
EXPECTED_LAYOUT = "<results_root>/<model>/<query_type>/<task>/results.json (run_src.evaluate_bright's layout)"

# query_type -> model -> task -> metric value as a fraction
Results = dict[str, dict[str, dict[str, float]]]


# ------------------------------------------------------------------------------------------------ our results


def collect_results(results_root: str | Path, metric: str) -> Results:
    """Read ``metric`` from every ``results.json`` under ``results_root`` (layout in the module docstring)."""
    root = Path(results_root)
    if not root.is_dir():
        raise FileNotFoundError(f"--results_root {root} is not a directory; expected {EXPECTED_LAYOUT}")
    results: Results = {}
    paths = sorted(root.rglob("results.json"))
    if not paths:
        raise ValueError(f"no results.json under {root}; expected {EXPECTED_LAYOUT}")
    for path in paths:
        parts = path.relative_to(root).parts
        if len(parts) != 4:
            raise ValueError(
                f"{path} is {len(parts) - 1} folder(s) below --results_root, expected 3: {EXPECTED_LAYOUT}. "
                "Point --results_root at the directory that holds the model folders."
            )
        model, query_type, task, _ = parts
        if query_type not in QUERY_TYPES:
            raise ValueError(
                f"{path}: folder {query_type!r} is not a query type ({', '.join(QUERY_TYPES)}); expected {EXPECTED_LAYOUT}"
            )
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or metric not in data:
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{path} has no {metric!r}; it holds {keys}. Pick one with --metric.")
        value = data[metric]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise ValueError(
                f"{path}: {metric} = {value!r} is not a fraction in [0, 1] as evaluate_bright writes it "
                "(tables multiply by 100 themselves)"
            )
        results.setdefault(query_type, {}).setdefault(model, {})[task] = float(value)
    logger.info("read %d results.json files under %s", len(paths), root)
    return results


def collect_recipes(results_root: str | Path) -> dict[str, str]:
    """Our model folder -> the paper row key its runs recorded (:mod:`models.evaluation.recipes`).

    Every run of a model folder must say the same; folders whose runs say nothing are left out.
    """
    recipes: dict[str, set[str]] = {}
    for path in sorted(Path(results_root).glob("*/*/*/config.json")):
        recipe = run_recipe(json.loads(path.read_text(encoding="utf-8")))
        if recipe:
            recipes.setdefault(path.parts[-4], set()).add(recipe)
    mixed = {model: sorted(found) for model, found in recipes.items() if len(found) > 1}
    if mixed:
        raise ValueError(f"runs of one model folder describe different models: {mixed}; give each its own --model_name")
    return {model: found.pop() for model, found in recipes.items()}


# ------------------------------------------------------------------------------------------------ table model


@dataclass(frozen=True)
class TableRow:
    """Our model's scores (×100, present splits only) and the paper row it is compared with, if any."""

    model: str
    scores: dict[str, float]
    paper: PaperRow | None


@dataclass(frozen=True)
class Table:
    number: str
    title: str
    query_type: str
    metric: str
    splits: tuple[str, ...]
    labels: dict[str, str]
    rows: tuple[TableRow, ...]
    reference: tuple[PaperRow, ...] = ()  # the paper's rows no run of ours is compared with


def average(scores: dict[str, float], splits: tuple[str, ...]) -> tuple[float | None, list[str]]:
    """Mean over the splits present, and the splits missing (a non-empty list means: mark it)."""
    present = [s for s in splits if s in scores]
    missing = [s for s in splits if s not in scores]
    return (sum(scores[s] for s in present) / len(present) if present else None), missing


def average_delta(row: TableRow, splits: tuple[str, ...]) -> float | None:
    """Δ of the averages: against the printed average when complete, else the paper's mean over the same splits."""
    ours, missing = average(row.scores, splits)
    if ours is None or row.paper is None:
        return None
    if not missing:
        return ours - row.paper.average
    return ours - row.paper.mean_over([s for s in splits if s in row.scores])


def build_table(number: str, results: Results, paper: PaperResults, metric: str, model_map: dict[str, str]) -> Table:
    """Rows = our models under the table's query type, sorted by name; paper rows only for the paper's metric."""
    spec = paper.tables[number]
    models = results.get(spec.query_type, {})
    rows = []
    for model in sorted(models):
        scores = {s: 100.0 * v for s, v in models[model].items() if s in paper.splits}
        if not scores:
            continue  # only extra splits (e.g. champ): they go to the extra table
        matched = spec.rows.get(model_map.get(model, "")) if metric == paper.metric else None
        rows.append(TableRow(model, scores, matched))
    used = {row.paper.key for row in rows if row.paper is not None}
    reference = tuple(r for key, r in spec.rows.items() if key not in used) if metric == paper.metric else ()
    return Table(number, spec.title, spec.query_type, metric, paper.splits, paper.split_labels, tuple(rows), reference)


def extra_splits(results: Results, query_types: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """query_type -> model -> task (×100) for tasks outside the 12 BRIGHT splits."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for query_type in query_types:
        for model, tasks in sorted(results.get(query_type, {}).items()):
            extra = {t: 100.0 * v for t, v in sorted(tasks.items()) if t not in BRIGHT_SPLITS}
            if extra:
                out.setdefault(query_type, {})[model] = extra
    return out


# ------------------------------------------------------------------------------------------------ rendering


def fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return MISSING
    text = f"{value:+.1f}" if signed else f"{value:.1f}"
    return "0.0" if text in ("-0.0", "+0.0") else text


def _cells(table: Table, row: TableRow) -> list[tuple[str, list[str]]]:
    """(row kind, 13 cells) for one model block: ours, and with a paper match also paper and Δ."""
    ours_avg, missing = average(row.scores, table.splits)
    mark = INCOMPLETE if missing and ours_avg is not None else ""
    block = [("ours", [fmt(row.scores.get(s)) for s in table.splits] + [fmt(ours_avg) + mark])]
    if row.paper is not None:
        paper = row.paper
        block.append((f"paper: {paper.label}", [fmt(paper.scores[s]) for s in table.splits] + [fmt(paper.average)]))
        deltas = [
            fmt(row.scores[s] - paper.scores[s], signed=True) if s in row.scores else MISSING for s in table.splits
        ]
        avg_delta = average_delta(row, table.splits)
        block.append(
            ("Δ (ours − paper)", deltas + [fmt(avg_delta, signed=True) + (mark if avg_delta is not None else "")])
        )
    return block


def _footnotes(table: Table) -> list[str]:
    notes = []
    for row in table.rows:
        _, missing = average(row.scores, table.splits)
        if missing:
            notes.append(
                f"`{INCOMPLETE}` {row.model}: average over {len(table.splits) - len(missing)} of {len(table.splits)} "
                f"splits (missing: {', '.join(missing)}); its Δ uses the paper's mean over the same splits."
            )
    if any(r.paper and r.paper.copied_from_bright for r in table.rows) or any(r.copied_from_bright for r in table.reference):
        notes.append("⋆ the paper copied these numbers from BRIGHT.")
    if table.metric != PAPER_METRIC:
        notes.append(f"The paper reports {PAPER_METRIC} only, so {table.metric} has no paper rows.")
    return notes


def render_markdown(table: Table) -> str:
    header = ["model", "row", *(table.labels[s] for s in table.splits), "Avg"]
    lines = [
        f"### {table.title}",
        "",
        f"{table.metric} ×100, query type `{table.query_type}`; rows without a `paper:` line have no mapped paper row.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", "---"] + ["---:"] * (len(table.splits) + 1)) + "|",
    ]
    for row in table.rows:
        for i, (kind, cells) in enumerate(_cells(table, row)):
            lines.append("| " + " | ".join([row.model if i == 0 else "", kind, *cells]) + " |")
    if not table.rows:
        lines.append(f"| (no runs under query type {table.query_type}) |" + " |" * (len(header) - 1))
    for i, paper_row in enumerate(table.reference):
        cells = [fmt(paper_row.scores[s]) for s in table.splits] + [fmt(paper_row.average)]
        lines.append("| " + " | ".join(["(paper)" if i == 0 else "", f"paper: {paper_row.label}", *cells]) + " |")
    notes = [f"- {note}" for note in _footnotes(table)]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def latex_escape(text: str) -> str:
    text = text.replace("`", "")  # Markdown code marks in shared footnotes
    replacements = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_", "$": r"\$"}
    out = "".join(replacements.get(ch, ch) for ch in text)
    return out.replace("⋆", r"$^\star$").replace("Δ", r"$\Delta$").replace("−", "$-$").replace("×", r"$\times$")


def _latex_cell(cell: str) -> str:
    return cell.replace(MISSING, "--").replace(INCOMPLETE, "$^{*}$")


def render_latex(table: Table) -> str:
    n = len(table.splits) + 1
    lines = [
        r"% generated by python -m run_src.make_tables; needs \usepackage{booktabs}",
        r"\begin{table*}[t]",
        r"\centering\small",
        r"\begin{tabular}{ll" + "r" * n + "}",
        r"\toprule",
        " & ".join(["Model", "", *(table.labels[s] for s in table.splits), "Avg"]) + r" \\",
        r"\midrule",
    ]
    for index, row in enumerate(table.rows):
        if index:
            lines.append(r"\midrule")
        for i, (kind, cells) in enumerate(_cells(table, row)):
            first = latex_escape(row.model) if i == 0 else ""
            lines.append(" & ".join([first, latex_escape(kind), *(_latex_cell(c) for c in cells)]) + r" \\")
    if table.reference:
        lines.append(r"\midrule")
    for paper_row in table.reference:
        cells = [fmt(paper_row.scores[s]) for s in table.splits] + [fmt(paper_row.average)]
        lines.append(" & ".join(["", latex_escape(f"paper: {paper_row.label}"), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    caption = " ".join([f"{table.title} ({table.metric} ×100, query type {table.query_type}).", *_footnotes(table)])
    lines.append(r"\caption{" + latex_escape(caption) + "}")
    lines += [rf"\label{{tab:bright-table{table.number}}}", r"\end{table*}"]
    return "\n".join(lines) + "\n"


def render_extra(extra: dict[str, dict[str, dict[str, float]]], metric: str) -> tuple[str, str]:
    """Markdown and LaTeX for the extra-split tables, one per query type; no averages, no paper numbers."""
    md, tex = (
        [f"## Extra splits ({metric} ×100; not in the paper)", ""],
        [r"% generated by python -m run_src.make_tables"],
    )
    for query_type, models in extra.items():
        tasks = sorted({t for scores in models.values() for t in scores})
        md += [f"### query type `{query_type}`", "", "| model | " + " | ".join(tasks) + " |"]
        md.append("|---|" + "---:|" * len(tasks))
        tex += [r"\begin{table}[t]", r"\centering\small", r"\begin{tabular}{l" + "r" * len(tasks) + "}", r"\toprule"]
        tex.append(" & ".join(["Model", *(latex_escape(t) for t in tasks)]) + r" \\")
        tex.append(r"\midrule")
        for model, scores in models.items():
            cells = [fmt(scores.get(t)) for t in tasks]
            md.append(f"| {model} | " + " | ".join(cells) + " |")
            tex.append(" & ".join([latex_escape(model), *(_latex_cell(c) for c in cells)]) + r" \\")
        md.append("")
        caption = latex_escape(f"{metric} ×100 on extra splits, query type {query_type}.")
        tex += [r"\bottomrule", r"\end{tabular}", r"\caption{" + caption + "}", r"\end{table}"]
    return "\n".join(md) + "\n", "\n".join(tex) + "\n"


def plot_table(table: Table, path: Path) -> Path:
    """Grouped bars per split and the average: each model's run solid, its paper row hatched in the same colour."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    groups = [*table.splits, "avg"]
    series: list[tuple[str, list[float], int, bool]] = []  # label, heights (nan = missing), colour index, is paper
    for colour, row in enumerate(table.rows):
        ours_avg, missing = average(row.scores, table.splits)
        heights = [row.scores.get(s, math.nan) for s in table.splits] + [math.nan if ours_avg is None else ours_avg]
        present = len(table.splits) - len(missing)
        label = row.model + (f" (avg over {present}/{len(table.splits)} splits)" if missing else "")
        series.append((label, heights, colour, False))
        if row.paper is not None:
            paper_heights = [row.paper.scores[s] for s in table.splits] + [row.paper.average]
            series.append((f"paper: {row.paper.label}", paper_heights, colour, True))
    fig, ax = plt.subplots(figsize=(max(10.0, 1.2 * len(groups)), 4.8))
    width = 0.8 / max(1, len(series))
    palette = plt.get_cmap("tab10")
    for i, (label, heights, colour, is_paper) in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        style = {"alpha": 0.45, "hatch": "//"} if is_paper else {"alpha": 0.95}
        ax.bar(xs, heights, width, label=label, color=palette(colour % 10), edgecolor="black", linewidth=0.3, **style)
    ax.set_xticks(range(len(groups)), [table.labels.get(s, s) for s in table.splits] + ["Avg"], rotation=30)
    ax.set_ylabel(f"{table.metric} ×100")
    ax.set_title(f"{table.title} (ours vs paper)")
    if series:
        ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def table_to_dict(table: Table) -> dict[str, Any]:
    rows = []
    for row in table.rows:
        ours_avg, missing = average(row.scores, table.splits)
        entry: dict[str, Any] = {"model": row.model, "ours": row.scores, "ours_average": ours_avg, "missing": missing}
        if row.paper is not None:
            entry |= {
                "paper_key": row.paper.key,
                "paper_name": row.paper.name,
                "paper": row.paper.scores,
                "paper_average": row.paper.average,
                "delta": {s: row.scores[s] - row.paper.scores[s] for s in table.splits if s in row.scores},
                "delta_average": average_delta(row, table.splits),
            }
        rows.append(entry)
    return {"number": table.number, "query_type": table.query_type, "metric": table.metric, "scale": 100, "rows": rows}


# ------------------------------------------------------------------------------------------------ stage


@dataclass(frozen=True)
class TablesConfig:
    """Resolved settings; ``config.json`` holds these fields (flag-shaped, so ``--config`` reads it back)."""

    results_root: str
    output_dir: str
    table: str
    metric: str
    paper_results: str
    model_map: tuple[str, ...]  # NAME=KEY pairs over the matches the runs' records give
    overwrite: bool = False

    @property
    def table_numbers(self) -> list[str]:
        return ["1", "2"] if self.table == "all" else [self.table]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m run_src.{STAGE}", description=__doc__.splitlines()[0])
    add_config_argument(parser)
    parser.add_argument("--results_root", help=f"root of the evaluation runs (required): {EXPECTED_LAYOUT}")
    parser.add_argument("--output_dir", help="where the tables, charts and config.json go (required)")
    parser.add_argument("--table", default="all", choices=["1", "2", "all"], help="paper table(s) to build")
    parser.add_argument("--metric", default=PAPER_METRIC, help="results.json key; paper numbers exist for NDCG@10 only")
    parser.add_argument("--paper_results", default=str(PAPER_RESULTS_PATH), help="paper numbers (JSON data file)")
    parser.add_argument(
        "--model_map",
        action="append",
        default=[],
        metavar="NAME=KEY",
        help="compare our model NAME with paper row KEY (repeatable; overrides the row its runs' records give)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace tables made with other settings")
    return parser


def parse_config(argv: list[str] | None = None) -> TablesConfig:
    parser = build_parser()
    args = parse_flags(parser, argv)
    require_flags(parser, args, "results_root", "output_dir")
    for pair in args.model_map:
        if "=" not in pair or not all(pair.split("=", 1)):
            parser.error(f"--model_map {pair!r}: expected NAME=KEY, e.g. rader=rader-qwen2.5-7b-math-llmq-cot-lexical")
    pairs = tuple(dict.fromkeys(args.model_map))
    return TablesConfig(
        args.results_root, args.output_dir, args.table, args.metric, args.paper_results, pairs, args.overwrite
    )


def make_tables(config: TablesConfig) -> list[Path]:
    """Build the requested tables and extras; returns the files written (``_SUCCESS`` last)."""
    paper = load_paper_results(config.paper_results)
    model_map = collect_recipes(config.results_root) | dict(pair.split("=", 1) for pair in config.model_map)
    known = {key for table in paper.tables.values() for key in table.rows}
    unknown = sorted(v for _, v in (pair.split("=", 1) for pair in config.model_map) if v not in known)
    if unknown:
        raise ValueError(f"--model_map names unknown paper rows {unknown}; known keys: {sorted(known)}")
    for model, recipe in sorted(model_map.items()):
        logger.info("%s: %s", model, f"paper row {recipe}" if recipe in known else f"recipe {recipe} (no paper row)")
    results = collect_results(config.results_root, config.metric)
    out = Path(config.output_dir)
    record = StageRecord(
        STAGE,
        dataclasses.asdict(config),
        informational=INFORMATIONAL,
        derived={"model_map": model_map, "tables": config.table_numbers},
    )
    if not config.overwrite:
        check_rerun(out / "config.json", record, "pass --overwrite or another --output_dir")
    out.mkdir(parents=True, exist_ok=True)
    clear_success(out)
    record.write(out / "config.json")

    written: list[Path] = []
    summary: dict[str, Any] = {}
    query_types = [paper.tables[n].query_type for n in config.table_numbers]
    for query_type in sorted(set(results) - set(query_types)):
        logger.info(
            "query type %s is in no requested table; its %d model(s) are skipped", query_type, len(results[query_type])
        )
    for number in config.table_numbers:
        table = build_table(number, results, paper, config.metric, model_map)
        if not table.rows:
            logger.warning("table %s: no model has %s results on a BRIGHT split; skipped", number, table.query_type)
            continue
        unmatched = [r.model for r in table.rows if r.paper is None]
        if unmatched and config.metric == paper.metric:
            logger.info("table %s: no paper row mapped for %s (add --model_map NAME=KEY)", number, unmatched)
        written.append(atomic_write_text(out / f"table{number}.md", render_markdown(table)))
        written.append(atomic_write_text(out / f"table{number}.tex", render_latex(table)))
        written.append(plot_table(table, out / f"table{number}.png"))
        summary[number] = table_to_dict(table)
    extra = extra_splits(results, query_types)
    if extra:
        markdown, latex = render_extra(extra, config.metric)
        written.append(atomic_write_text(out / "extra_splits.md", markdown))
        written.append(atomic_write_text(out / "extra_splits.tex", latex))
        summary["extra_splits"] = extra
    if not written:
        raise ValueError(
            f"nothing to tabulate: no results for query type(s) {query_types} under {config.results_root} "
            f"(found query types: {sorted(results)})"
        )
    written.append(atomic_write_json(out / "tables.json", summary))
    written.append(mark_success(out, {"tables": sorted(summary)}))
    return written


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    configure_logging()

    def body() -> None:
        logger.info("config: %s", dataclasses.asdict(config))
        written = make_tables(config)
        print(f"wrote {len(written)} files to {config.output_dir}: " + ", ".join(p.name for p in written))

    return run_stage(body, name=STAGE)


if __name__ == "__main__":
    sys.exit(main())
