"""The demo's own report: the four retrievers on the held-out CHAMP problems, as a table and a chart.

``bash scripts/demo.sh`` runs ``scripts/reproduce.sh --profile demo`` (the paper's stages in miniature on
CHAMP) and then this module, which reads what the stages wrote under ``--out_dir`` and writes

* ``results.md`` / ``results.json`` / ``results.png``: nDCG@10 and Recall@10 of BM25, all-MiniLM-L6-v2,
  base SmolLM2 and RaDeR-SmolLM2 on the held-out problems, the training samples per query type, the stage
  times (from ``reproduce/*.done``);
* ``split.json`` (the held-out / training-pool split stage 00 drew) and ``mcts_problem_ids.json`` (the
  problems the MCTS searched), which never overlap;
* ``inspect/report.md`` + ``inspect/tree_<index>.png``: :mod:`run_src.inspect_run` on the demo's MCTS run,
  the drawn search tree of a problem with a retrieval and the run's counts per action.

Usage (normally through ``bash scripts/demo.sh``)::

    python -m run_src.demo --out_dir outputs/demo
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from models.io_utils import atomic_write_json, atomic_write_text, read_jsonl
from models.stage import StageError, add_config_argument, configure_logging, parse_flags, require_flags, run_stage

logger = logging.getLogger("run_src.demo")

STAGE = "demo"
DEMO_MODELS = ("bm25", "minilm", "smollm2-base", "rader-smollm2")
MODEL_LABELS = {
    "bm25": "BM25",
    "minilm": "all-MiniLM-L6-v2",
    "smollm2-base": "SmolLM2-135M (untrained, EOS pooling)",
    "rader-smollm2": "RaDeR-SmolLM2 (LoRA, trained here)",
}


def collect_results(out_dir: Path) -> dict[str, dict[str, float]]:
    results = {}
    for model in DEMO_MODELS:
        path = out_dir / "bright" / model / "original" / "champ" / "results.json"
        if not path.is_file():
            raise StageError(f"{path} is missing: stage 06 of the demo did not finish (rerun bash scripts/demo.sh)")
        values = json.loads(path.read_text(encoding="utf-8"))
        results[model] = {"NDCG@10": values["NDCG@10"], "Recall@10": values["Recall@10"]}
    return results


def training_stats(out_dir: Path) -> dict[str, int]:
    """Sample counts per query type, read back from the training file."""
    counts: dict[str, int] = {}
    for row in read_jsonl(out_dir / "train" / "train.jsonl"):
        counts[row.get("query_type", "unknown")] = counts.get(row.get("query_type", "unknown"), 0) + 1
    return counts


def stage_times(out_dir: Path) -> dict[str, float]:
    """Seconds per stage from reproduce.sh's markers (``<NN>-<i>-<name>.done``: command, then seconds)."""
    times: dict[str, float] = {}
    for marker in sorted((out_dir / "reproduce").glob("*.done")):
        lines = marker.read_text(encoding="utf-8").splitlines()
        number, _, name = marker.stem.split("-", 2)
        times[f"{number} {name.replace('_', ' ')}"] = float(lines[1]) if len(lines) > 1 else 0.0
    return times


def write_report(out_dir: Path, trajectory_filter: str) -> str:
    """results.md, results.json and results.png under ``out_dir``; returns the Markdown table."""
    split = json.loads((out_dir / "problems" / "CHAMP" / "train_pool.split.json").read_text(encoding="utf-8"))
    searched = [item["id"] for item in json.loads((out_dir / "problems" / "CHAMP" / "train_pool.json").read_text())]
    overlap = set(searched) & set(split["heldout"])
    if overlap:
        raise StageError(f"held-out problems {sorted(overlap)[:5]} were searched; the split is broken")
    atomic_write_json(out_dir / "split.json", split)
    atomic_write_json(out_dir / "mcts_problem_ids.json", searched)
    results, stats, timings = collect_results(out_dir), training_stats(out_dir), stage_times(out_dir)
    inspected = inspect_mcts_run(out_dir)
    lines = [
        f"Held-out CHAMP problems: {len(split['heldout'])} queries over 89 concepts (seed {split['seed']}); "
        f"MCTS on {len(searched)} training problems; trajectory filter: {trajectory_filter}.",
        "",
        "| retriever | nDCG@10 | Recall@10 |",
        "|---|---:|---:|",
        *(f"| {MODEL_LABELS[m]} | {r['NDCG@10']:.4f} | {r['Recall@10']:.4f} |" for m, r in results.items()),
        "",
        "Training samples per query type: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.items())),
        "",
        "Stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()),
        "",
        f"Search tree and per-action counts of the MCTS run: {inspected['report']} "
        f"(tree of problem index {inspected['problem_index']}: {inspected['image']})",
    ]
    table = "\n".join(lines) + "\n"
    atomic_write_text(out_dir / "results.md", table)
    atomic_write_json(
        out_dir / "results.json",
        {"results": results, "training_samples": stats, "timings_s": timings, "trajectory_filter": trajectory_filter},
    )
    plot_results(results, out_dir / "results.png")
    return table


def inspect_mcts_run(out_dir: Path) -> dict[str, object]:
    """:func:`run_src.inspect_run.inspect_run` on the demo's MCTS run directory, into ``out_dir/inspect``."""
    from run_src.inspect_run import inspect_run

    runs = sorted(path.parent for path in (out_dir / "mcts" / "CHAMP").glob("*/demo/args.json"))
    if len(runs) != 1:
        raise StageError(f"expected one MCTS run under {out_dir}/mcts/CHAMP/*/demo, found {len(runs)}")
    return inspect_run(runs[0], out_dir / "inspect")


def plot_results(results: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.38
    for offset, metric in ((-width / 2, "NDCG@10"), (width / 2, "Recall@10")):
        values = [results[m][metric] for m in models]
        bars = ax.bar([i + offset for i in range(len(models))], values, width, label=metric)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(range(len(models)), [MODEL_LABELS[m].split(" (")[0] for m in models], fontsize=8)
    ax.set_ylabel("score")
    ax.set_title("Held-out CHAMP problems → concepts")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m run_src.{STAGE}", description=__doc__.split("\n\n")[0])
    add_config_argument(p)
    p.add_argument("--out_dir", help="the demo's output directory (reproduce.sh --out-dir; required)")
    p.add_argument("--trajectory_filter", default="self_reflection_passed", help="the filter stage 03 used")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_flags(parser, None if argv is None else list(argv))
    require_flags(parser, args, "out_dir")
    configure_logging()

    def body() -> None:
        table = write_report(Path(args.out_dir), args.trajectory_filter)
        print("\n" + table)
        print(f"[demo] results, chart and every stage's outputs under {args.out_dir}")

    return run_stage(body, name=STAGE)


if __name__ == "__main__":
    sys.exit(main())
