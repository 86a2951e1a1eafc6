"""Look at what a search did: ``python -m run_src.inspect_run RUN_DIR [--problem ID]``.

Reads an MCTS run directory (stage 02) and writes, under ``--output_dir`` (default ``RUN_DIR/inspect``):

* ``report.md``: run-wide counts per action (requests, outputs, unparsable outputs and their share), the
  self-reflection verdicts, correct trajectories and retrieval calls; then one problem: its question and
  gold answer, the drawn tree, the rewarded path step by step, and every retrieval call's query with the
  retrieved theorems, their verdicts and reasons;
* ``tree_<index>.png``: that problem's final tree. Nodes are coloured by kind (U question, TS one-step
  thought, DA completed answer, QG query, RT retrieved theorem), sized by visits, labelled with id, visits
  and value; solution nodes have a green (correct) or red (wrong) ring; the rewarded path is drawn thick;
* ``inspect.json``: the same counts, for scripts.

The default problem is the first (by index) whose tree holds a retrieved theorem. ``--problem`` takes the
problem's dataset id or its index.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.io_utils import atomic_write_json, atomic_write_text, read_jsonl
from models.stage import StageError, add_config_argument, configure_logging, parse_flags, run_stage
from run_src.mcts.action_counts import sum_counts
from run_src.mcts.run_outputs import ANSWER_SHEET_RE

logger = logging.getLogger("run_src.inspect_run")

STAGE = "inspect_run"
KIND_COLOURS = {"U": "#4c72b0", "RU": "#4c72b0", "TS": "#8c8c8c", "DA": "#dd8452", "QG": "#8172b3", "RT": "#55a868",
                "SQ": "#937860"}  # fmt: skip
KIND_NAMES = {"U": "question", "RU": "rephrased question", "TS": "one-step thought", "DA": "completed answer",
              "QG": "query", "RT": "retrieved theorem", "SQ": "sub-question"}  # fmt: skip


# ------------------------------------------------------------------------------------------------ reading


def _problem_files(run_dir: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(index, answer sheet)`` of every finished problem, by index."""
    sheets = run_dir / "answer_sheets"
    if not sheets.is_dir():
        raise StageError(f"{run_dir} has no answer_sheets/: is it an MCTS run directory (stage 02)?")
    found = []
    for path in sorted(sheets.iterdir()):
        match = ANSWER_SHEET_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), json.loads(path.read_text(encoding="utf-8"))))
    if not found:
        raise StageError(f"{run_dir}/answer_sheets holds no finished problem yet")
    return found


def _index_width(run_dir: Path) -> int:
    record = json.loads((run_dir / "args.json").read_text(encoding="utf-8"))
    return int(record.get("derived", {}).get("index_width", 4))


def load_tree(run_dir: Path, index: int) -> dict[str, Any]:
    path = run_dir / "trees" / f"{index:0{_index_width(run_dir)}d}.json"
    if not path.is_file():
        raise StageError(f"{path} is missing: the run was made before trees were saved; search the problem again")
    return json.loads(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------ counting


def run_counts(run_dir: Path) -> dict[str, Any]:
    """Run-wide counts from the answer sheets, trees and hard-negative logs."""
    width = _index_width(run_dir)
    problems = _problem_files(run_dir)
    kinds: Counter[str] = Counter()
    verdicts: Counter[str] = Counter()
    retrieval_calls = solutions = correct = problems_solved = 0
    for index, _sheet in problems:
        tree = load_tree(run_dir, index)
        kinds.update(node["kind"] for node in tree["nodes"])
        solved = [node for node in tree["nodes"] if node["solution"]]
        solutions += len(solved)
        correct += sum(node.get("correct", False) for node in solved)
        problems_solved += any(node.get("correct", False) for node in solved)
        retrieval_calls += sum("retrieval" in node for node in tree["nodes"])
        for record in read_jsonl(run_dir / "hard_negatives" / f"{index:0{width}d}.jsonl"):
            verdicts[record.get("verdict") or ("relevant" if record["LLM_relevance_label"] else "irrelevant")] += 1
    actions = sum_counts(sheet.get("action_counts", {}) for _, sheet in problems)
    return {
        "problems": len(problems),
        "problems_with_a_correct_solution": problems_solved,
        "nodes": dict(sorted(kinds.items())),
        "retrieval_calls": retrieval_calls,
        "accepted_theorems": kinds.get("RT", 0),
        "logged_verdicts": dict(sorted(verdicts.items())),
        "solutions": solutions,
        "correct_solutions": correct,
        **actions,
    }


def rewarded_path(tree: dict[str, Any]) -> list[dict[str, Any]]:
    """Root → the best solution node: a correct one first, then the highest value, then the most visits."""
    nodes = {node["id"]: node for node in tree["nodes"]}
    solutions = [node for node in tree["nodes"] if node["solution"]]
    if not solutions:
        return []
    best = max(solutions, key=lambda n: (n.get("correct", False), n["value"] or 0.0, n["visits"], -n["id"]))
    path = [best]
    while path[-1]["parent"] is not None:
        path.append(nodes[path[-1]["parent"]])
    return path[::-1]


# ------------------------------------------------------------------------------------------------ drawing


def _layout(tree: dict[str, Any]) -> dict[int, tuple[float, float]]:
    """Leaves spread left to right in pre-order, parents centred over their children, depth downwards."""
    children: dict[int | None, list[int]] = {}
    for node in tree["nodes"]:
        children.setdefault(node["parent"], []).append(node["id"])
    depth = {node["id"]: node["depth"] for node in tree["nodes"]}
    positions: dict[int, tuple[float, float]] = {}
    next_leaf = [0.0]

    def place(node_id: int) -> float:
        kids = children.get(node_id, [])
        if not kids:
            x = next_leaf[0]
            next_leaf[0] += 1.0
        else:
            xs = [place(kid) for kid in kids]
            x = (xs[0] + xs[-1]) / 2
        positions[node_id] = (x, -float(depth[node_id]))
        return x

    for root in children.get(None, []):
        place(root)
    return positions


def draw_tree(tree: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    positions = _layout(tree)
    on_path = {node["id"] for node in rewarded_path(tree)}
    nodes = tree["nodes"]
    width = max(6.0, min(40.0, 0.45 * (max((x for x, _ in positions.values()), default=0) + 2)))
    height = max(3.5, 1.3 * (max((-y for _, y in positions.values()), default=0) + 1))
    fig, ax = plt.subplots(figsize=(width, height))
    for node in nodes:
        if node["parent"] is None:
            continue
        (x0, y0), (x1, y1) = positions[node["parent"]], positions[node["id"]]
        both = node["id"] in on_path and node["parent"] in on_path
        ax.plot([x0, x1], [y0, y1], color="#c44e52" if both else "#bbbbbb", lw=3 if both else 1, zorder=1)
    max_visits = max((node["visits"] for node in nodes), default=1) or 1
    label_all = len(nodes) <= 80
    for node in nodes:
        x, y = positions[node["id"]]
        size = 120 + 600 * (node["visits"] / max_visits)
        ring = "none"
        if node["solution"]:
            ring = "#2ca02c" if node.get("correct") else "#d62728"
        ax.scatter([x], [y], s=size, c=KIND_COLOURS.get(node["kind"], "#999999"), edgecolors=ring, linewidths=2.5,
                   zorder=2)  # fmt: skip
        value = "-" if node["value"] is None else f"{node['value']:.2f}"
        label = f"{node['kind']}{node['id']}\nN{node['visits']} V{value}" if label_all else node["kind"]
        ax.annotate(label, (x, y), xytext=(0, -14), textcoords="offset points", ha="center", va="top", fontsize=6)
    handles = [Line2D([0], [0], marker="o", ls="", color=colour, label=KIND_NAMES[kind])
               for kind, colour in KIND_COLOURS.items() if any(n["kind"] == kind for n in nodes)]  # fmt: skip
    handles.append(Line2D([0], [0], color="#c44e52", lw=3, label="rewarded path"))
    ax.legend(handles=handles, fontsize=7, loc="upper right", frameon=False)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ report


def _cell(text: Any, limit: int = 160) -> str:
    text = "" if text is None else " ".join(str(text).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return text.replace("|", "\\|")


def choose_problem(problems: list[tuple[int, dict[str, Any]]], run_dir: Path, wanted: str | None) -> int:
    if wanted is not None:
        for index, sheet in problems:
            if wanted in (str(sheet.get("source_id")), str(index)):
                return index
        raise StageError(f"--problem {wanted}: no finished problem with that id or index in {run_dir}")
    for index, _ in problems:
        if any(node["kind"] == "RT" for node in load_tree(run_dir, index)["nodes"]):
            return index
    return problems[0][0]


def problem_section(run_dir: Path, index: int, sheet: dict[str, Any], image: str) -> list[str]:
    tree = load_tree(run_dir, index)
    lines = [
        f"## Problem {sheet.get('source_id')} (index {index})",
        "",
        f"**Question.** {_cell(sheet.get('problem'), 2000)}",
        "",
        f"**Gold answer.** `{sheet.get('gold_answer')}` — {sheet.get('num_correct_solutions', 0)} of "
        f"{sheet.get('num_solutions', 0)} solutions correct, {len(tree['nodes'])} nodes.",
        "",
        f"![search tree]({image})",
        "",
        "### Rewarded path",
        "",
    ]
    path = rewarded_path(tree)
    if not path:
        lines.append("No solution node was reached.")
    else:
        lines += ["| step | node | visits | value | text |", "|---|---|---:|---:|---|"]
        for step, node in enumerate(path):
            value = "" if node["value"] is None else f"{node['value']:.2f}"
            lines.append(f"| {step} | {node['kind']}{node['id']} | {node['visits']} | {value} | {_cell(node['text'])} |")
        last = path[-1]
        lines += ["", f"Final answer is {'correct' if last.get('correct') else 'wrong'}."]
    lines += ["", "### Retrieval calls", ""]
    calls = [node for node in tree["nodes"] if "retrieval" in node]
    if not calls:
        lines.append("No query node was expanded into a retrieval.")
    for node in calls:
        call = node["retrieval"]
        lines += [f"**QG{node['id']}** ({call['retriever']}): {_cell(call['query'], 400)}", "",
                  "| rank | theorem | score | verdict | reason | summary |", "|---:|---|---:|---|---|---|"]  # fmt: skip
        for c in call["candidates"]:
            score = "" if c["score"] is None else f"{c['score']:.3f}"
            lines.append(f"| {c['rank'] or ''} | {c['theorem_id']} | {score} | {c['label'] or 'unjudged'} | "
                         f"{_cell(c['reason'], 120)} | {_cell(c['summary'], 120)} |")  # fmt: skip
        lines.append("")
    return lines


def counts_section(counts: dict[str, Any]) -> list[str]:
    lines = [
        f"Problems: {counts['problems']} ({counts['problems_with_a_correct_solution']} with a correct solution); "
        f"solutions {counts['solutions']} ({counts['correct_solutions']} correct); retrieval calls "
        f"{counts['retrieval_calls']}; accepted theorems (RT nodes) {counts['accepted_theorems']}.",
        "",
        "Nodes per kind: " + ", ".join(f"{KIND_NAMES.get(k, k)} {v}" for k, v in counts["nodes"].items()),
        "",
        "Self-reflection verdicts logged: " + (", ".join(f"{k} {v}" for k, v in counts["logged_verdicts"].items())
                                              or "none"),  # fmt: skip
        "",
        "| action | requests | outputs | unparsable | share |",
        "|---|---:|---:|---:|---:|",
    ]
    for action, values in counts.get("actions", {}).items():
        lines.append(f"| {action} | {values['requests']} | {values['outputs']} | {values['unparsable']} | "
                     f"{100 * values['unparsable_share']:.1f}% |")  # fmt: skip
    return lines


def inspect_run(run_dir: Path, output_dir: Path, problem: str | None = None) -> dict[str, Any]:
    """Write the report; returns ``{"counts", "problem_index", "report", "image"}``."""
    problems = _problem_files(run_dir)
    counts = run_counts(run_dir)
    index = choose_problem(problems, run_dir, problem)
    sheet = dict(problems)[index]
    image = f"tree_{index}.png"
    title = f"{sheet.get('source_id')}: final tree after the last rollout"
    draw_tree(load_tree(run_dir, index), output_dir / image, title)
    record = json.loads((run_dir / "args.json").read_text(encoding="utf-8"))
    settings = record.get("settings", {})
    lines = [
        f"# MCTS run {run_dir.name}",
        "",
        f"Generator `{settings.get('model_ckpt')}`, retriever `{settings.get('retriever')}`, "
        f"{settings.get('num_rollouts')} rollouts, depth {settings.get('max_depth_allowed')}, prompt shape "
        f"`{settings.get('prompt_shape', 'chat_turns')}`, seed {settings.get('seed')}.",
        "",
        "## The whole run",
        "",
        *counts_section(counts),
        "",
        *problem_section(run_dir, index, sheet, image),
    ]
    report = output_dir / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    result = {"counts": counts, "problem_index": index, "report": str(report), "image": str(output_dir / image)}
    atomic_write_json(output_dir / "inspect.json", result)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m run_src.{STAGE}", description=__doc__.split("\n\n")[0])
    add_config_argument(p)
    p.add_argument("run_dir", nargs="?", help="an MCTS run directory (the one holding args.json)")
    p.add_argument("--problem", default=None, help="dataset id or index of the problem to draw")
    p.add_argument("--output_dir", default=None, help="default: RUN_DIR/inspect")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_flags(parser, None if argv is None else list(argv))
    if not args.run_dir:
        parser.error("RUN_DIR is required: the MCTS run directory (the one holding args.json)")
    configure_logging()

    def body() -> None:
        run_dir = Path(args.run_dir)
        if not (run_dir / "args.json").is_file():
            raise StageError(f"{run_dir}/args.json is missing: pass the MCTS run directory itself")
        result = inspect_run(run_dir, Path(args.output_dir) if args.output_dir else run_dir / "inspect", args.problem)
        print(f"[inspect_run] report {result['report']} (tree of problem index {result['problem_index']})")

    return run_stage(body, name=STAGE)


if __name__ == "__main__":
    sys.exit(main())
