"""The RaDeR pipeline in miniature on CHAMP: split → MCTS → queries → training set → LoRA → evaluation.

``scripts/demo.sh`` starts the servers and calls this; each stage runs the real stage module as a
subprocess (the same command a researcher would type), writes into ``--out_dir`` and leaves a marker, so
a rerun skips finished stages and a killed stage resumes through the stage's own resume logic.

The held-out CHAMP problems (a seeded split written to ``split.json``) never enter MCTS, query synthesis
or training: MCTS searches only ``--problems`` problems from the training pool, and the evaluation corpus
mirror holds only held-out problems as queries.

Trajectory filter: SmolLM2-135M almost never reaches CHAMP's gold answers, so the paper's filter (correct
trajectories) would leave nothing but lexical queries. The demo therefore keeps trajectories whose
retrievals passed self-reflection (``self_reflection_passed``) unless ``--paper_filter`` is given (use it
with a stronger ``--generator_url``/``--model``); everywhere else the paper's filter is the default.

Usage (normally through ``bash scripts/demo.sh``)::

    python -m run_src.demo --generator_url http://127.0.0.1:8010/v1 --model DIR --bm25_url http://127.0.0.1:8012
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from models.io_utils import atomic_write_json, atomic_write_jsonl, atomic_write_text, read_jsonl

logger = logging.getLogger("run_src.demo")

DEMO_MODELS = ("bm25", "minilm", "smollm2-base", "rader-smollm2")
MODEL_LABELS = {
    "bm25": "BM25",
    "minilm": "all-MiniLM-L6-v2",
    "smollm2-base": "SmolLM2-135M (untrained, EOS pooling)",
    "rader-smollm2": "RaDeR-SmolLM2 (LoRA, trained here)",
}


@dataclass(frozen=True)
class DemoConfig:
    out_dir: Path
    generator_url: str
    model: str
    bm25_url: str
    smollm2_dir: str
    champ_mirror: str
    problems: int = 6
    rollouts: int = 2
    heldout: int = 60
    seed: int = 42
    train_steps: int = 24
    paper_filter: bool = False
    device: str = "cpu"
    workers: int = 8
    # The smallest size (CI): one one-step thought and one completion per expansion, depth 3, so that 3
    # rollouts are sure to reach the root's query-generation child and run a retrieval.
    tiny_search: bool = False

    @property
    def trajectory_filter(self) -> str:
        return "correct" if self.paper_filter else "self_reflection_passed"


# --- stages ---------------------------------------------------------------------------------------------


def run_stage(config: DemoConfig, name: str, command: list[str], timings: dict[str, float]) -> None:
    """Run one stage module unless its marker exists; record its wall time."""
    marker = config.out_dir / "stages" / f"{name}.done"
    if marker.is_file():
        logger.info("[%s] finished in an earlier run, reusing its outputs", name)
        timings.setdefault(name, json.loads(marker.read_text())["seconds"])
        return
    logger.info("[%s] %s", name, " ".join(command))
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", *command], check=True)
    seconds = round(time.monotonic() - started, 1)
    timings[name] = seconds
    atomic_write_json(marker, {"seconds": seconds, "command": command})
    logger.info("[%s] done in %.0f s", name, seconds)


def write_split(config: DemoConfig) -> dict[str, Any]:
    """Seeded held-out / training split of CHAMP's linked problems, and the evaluation mirror of the held-out part."""
    path = config.out_dir / "split.json"
    mirror = Path(config.champ_mirror)
    examples = list(read_jsonl(mirror / "examples" / "champ.jsonl"))
    ids = sorted(example["id"] for example in examples)
    if path.is_file():
        split = json.loads(path.read_text())
        if split["seed"] != config.seed or len(split["heldout"]) != config.heldout:
            raise SystemExit(f"{path} was written with another --seed/--heldout; use a new --out_dir")
    else:
        if not 0 < config.heldout < len(ids):
            raise SystemExit(f"--heldout must be between 1 and {len(ids) - 1}, got {config.heldout}")
        shuffled = ids[:]
        random.Random(config.seed).shuffle(shuffled)
        heldout = sorted(shuffled[: config.heldout])
        train_pool = shuffled[config.heldout :]  # keeps the seeded order: the MCTS takes a prefix
        split = {"seed": config.seed, "heldout": heldout, "train_pool": train_pool, "source": str(mirror)}
        atomic_write_json(path, split)
    if config.problems > len(split["train_pool"]):
        raise SystemExit(f"--problems must be at most {len(split['train_pool'])}")
    heldout_ids = set(split["heldout"])
    eval_mirror = config.out_dir / "heldout_mirror"
    atomic_write_jsonl(eval_mirror / "examples" / "champ.jsonl", [e for e in examples if e["id"] in heldout_ids])
    atomic_write_jsonl(
        eval_mirror / "documents" / "champ.jsonl", list(read_jsonl(mirror / "documents" / "champ.jsonl"))
    )
    atomic_write_json(config.out_dir / "mcts_problem_ids.json", split["train_pool"][: config.problems])
    return split


def mcts_command(config: DemoConfig) -> list[str]:
    return [
        "run_src.run_parallel_workers", "--dataset_name", "CHAMP", "--api", "vllm-server",
        "--model_ckpt", config.model, "--generator_urls", config.generator_url,
        "--problem_ids", str(config.out_dir / "mcts_problem_ids.json"),
        "--retriever", "bm25", "--bm25_url", config.bm25_url, "--corpus", config.champ_mirror, "--task", "champ",
        "--LLM_candidate_theorems", "--retrieval_selfreasoning", "--bool_goldanswer_reward",
        "--disable_a3", "--disable_a4", "--disable_a5",
        "--num_rollouts", str(config.rollouts), "--max_depth_allowed", "3" if config.tiny_search else "4",
        "--num_a1_steps", "1" if config.tiny_search else "2", "--mcts_num_last_votes", "1" if config.tiny_search else "2",
        "--topk_rt", "3", "--seed", str(config.seed),
        # CPU-sized generations: SmolLM2 rambles to the limit, and every token costs ~10 ms here.
        "--max_tokens", "128", "--ost_max_tokens", "64", "--qg_max_tokens", "192",
        "--summary_max_tokens", "64", "--reflection_max_tokens", "48",
        "--num_workers", str(config.workers), "--run_outputs_root", str(config.out_dir / "mcts"), "--run_name", "demo",
    ]  # fmt: skip


def mcts_run_dir(config: DemoConfig) -> Path:
    return config.out_dir / "mcts" / "CHAMP" / Path(config.model.rstrip("/")).name / "demo"


def queries_command(config: DemoConfig) -> list[str]:
    return [
        "run_src.generate_queries", "--run_dirs", str(mcts_run_dir(config)),
        "--output_dir", str(config.out_dir / "queries"), "--query_types", "llmq", "cot", "question", "lexical",
        "--trajectory_filter", config.trajectory_filter, "--model", config.model, "--base_url", config.generator_url,
        "--seed", str(config.seed), "--llmq_max_tokens", "96", "--lexical_max_tokens", "64", "--lexical_per_theorem", "3",
        "--dense_model_path", str(minilm_dir()), "--dense_text_format", "plain",
        "--cache_root", str(config.out_dir / "cache"),
    ]  # fmt: skip


def dataset_command(config: DemoConfig) -> list[str]:
    return [
        "run_src.build_training_data", "--queries_dir", str(config.out_dir / "queries"),
        "--output", str(training_file(config)), "--min_negatives", "1", "--seed", str(config.seed),
        "--cache_root", str(config.out_dir / "cache"),
    ]  # fmt: skip


def training_file(config: DemoConfig) -> Path:
    return config.out_dir / "train" / "train.jsonl"


CPU_TRAINING_CONFIG = Path(__file__).resolve().parent.parent / "tevatron_configs" / "smollm2-135m-cpu.json"


def train_command(config: DemoConfig) -> list[str]:
    """RaDeR's recipe (EOS pooling, normalised, InfoNCE at 0.01, LoRA on every projection) at CPU size."""
    return [
        "run_src.train_retriever", "--config", str(CPU_TRAINING_CONFIG),
        "--model_name_or_path", config.smollm2_dir, "--dataset_path", str(training_file(config)),
        "--output_dir", str(config.out_dir / "model" / "lora"), "--overwrite_output_dir",
        "--max_steps", str(config.train_steps), "--seed", str(config.seed),
        *(["--use_cpu", "false"] if config.device == "cuda" else []),
    ]  # fmt: skip


def merge_command(config: DemoConfig) -> list[str]:
    return [
        "run_src.merge_lora", "--adapter", str(config.out_dir / "model" / "lora"),
        "--output_dir", str(merged_dir(config)), "--dtype", "float32", "--overwrite",
    ]  # fmt: skip


def merged_dir(config: DemoConfig) -> Path:
    return config.out_dir / "model" / "rader-smollm2"


def eval_commands(config: DemoConfig) -> dict[str, list[str]]:
    common = [
        "--task", "champ", "--bright_dir", str(config.out_dir / "heldout_mirror"),
        "--output_dir", str(config.out_dir / "eval"), "--cache_root", str(config.out_dir / "cache" / "eval"),
    ]  # fmt: skip
    dense = ["--device", config.device]
    return {
        "bm25": ["run_src.evaluate_bright", "--model", "bm25", *common],
        "minilm": ["run_src.evaluate_bright", "--model", "minilm", *common, *dense],
        "smollm2-base": [
            "run_src.evaluate_bright",
            "--model",
            "rader",
            "--model_path",
            config.smollm2_dir,
            "--model_name",
            "smollm2-base",
            *common,
            *dense,
        ],  # fmt: skip
        "rader-smollm2": [
            "run_src.evaluate_bright",
            "--model",
            "rader",
            "--model_path",
            str(merged_dir(config)),
            "--model_name",
            "rader-smollm2",
            *common,
            *dense,
        ],  # fmt: skip
    }


def minilm_dir() -> Path:
    from models.embedded.assets import minilm_path

    return minilm_path()


# --- report ---------------------------------------------------------------------------------------------


def training_stats(config: DemoConfig) -> dict[str, Any]:
    """Sample counts per query type, read back from the training file."""
    counts: dict[str, int] = {}
    for row in read_jsonl(training_file(config)):
        counts[row.get("query_type", "unknown")] = counts.get(row.get("query_type", "unknown"), 0) + 1
    return counts


def collect_results(config: DemoConfig) -> dict[str, dict[str, float]]:
    results = {}
    for model in DEMO_MODELS:
        path = config.out_dir / "eval" / model / "original" / "champ" / "results.json"
        values = json.loads(path.read_text())
        results[model] = {"NDCG@10": values["NDCG@10"], "Recall@10": values["Recall@10"]}
    return results


def write_report(config: DemoConfig, results: dict[str, dict[str, float]], split: dict[str, Any],
                 stats: dict[str, int], timings: dict[str, float]) -> str:  # fmt: skip
    """results.md, results.json and results.png under ``out_dir``; returns the Markdown table."""
    lines = [
        f"Held-out CHAMP problems: {len(split['heldout'])} queries over 89 concepts (seed {split['seed']}); "
        f"MCTS on {config.problems} training problems, {config.rollouts} rollouts; trajectory filter: "
        f"{config.trajectory_filter}.",
        "",
        "| retriever | nDCG@10 | Recall@10 |",
        "|---|---:|---:|",
        *(f"| {MODEL_LABELS[m]} | {r['NDCG@10']:.4f} | {r['Recall@10']:.4f} |" for m, r in results.items()),
        "",
        "Training samples per query type: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.items())),
        "",
        "Stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()),
    ]
    table = "\n".join(lines) + "\n"
    atomic_write_text(config.out_dir / "results.md", table)
    atomic_write_json(
        config.out_dir / "results.json",
        {"results": results, "training_samples": stats, "timings_s": timings, "config": _json(asdict(config))},
    )
    plot_results(results, config.out_dir / "results.png")
    return table


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


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# --- main -----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m run_src.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out_dir", default="outputs/demo")
    p.add_argument("--generator_url", required=True, help="OpenAI-compatible /v1 URL of the generator")
    p.add_argument("--model", required=True, help="served generator model name")
    p.add_argument("--bm25_url", required=True, help="BM25 server over the CHAMP concepts")
    p.add_argument("--smollm2_dir", required=True, help="SmolLM2-135M-Instruct folder (retriever base)")
    p.add_argument("--champ_mirror", required=True, help="CHAMP mirror directory (models.embedded.assets)")
    p.add_argument("--problems", type=int, default=6, help="training problems searched by the MCTS")
    p.add_argument("--rollouts", type=int, default=2)
    p.add_argument("--heldout", type=int, default=60, help="held-out problems for the evaluation")
    p.add_argument("--train_steps", type=int, default=24)
    p.add_argument("--workers", type=int, default=8, help="concurrent MCTS searches")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where training and dense encoding run")
    p.add_argument("--paper_filter", action="store_true", help="keep only correct trajectories (paper)")
    p.add_argument("--tiny_search", action="store_true", help="depth 3, one sample per action (the CI size)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = DemoConfig(
        out_dir=Path(args.out_dir), generator_url=args.generator_url, model=args.model, bm25_url=args.bm25_url,
        smollm2_dir=args.smollm2_dir, champ_mirror=args.champ_mirror, problems=args.problems, rollouts=args.rollouts,
        heldout=args.heldout, seed=args.seed, train_steps=args.train_steps, paper_filter=args.paper_filter, tiny_search=args.tiny_search,
        workers=args.workers, device=args.device,
    )  # fmt: skip
    config.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(config.out_dir / "demo_config.json", _json(asdict(config)))
    timings: dict[str, float] = {}
    split = write_split(config)
    logger.info(
        "split: %d held-out problems (never searched or trained on), MCTS on %d of %d training problems",
        len(split["heldout"]), config.problems, len(split["train_pool"]),
    )  # fmt: skip
    run_stage(config, "mcts", mcts_command(config), timings)
    logger.info("trajectory filter for query synthesis: %s", config.trajectory_filter)
    run_stage(config, "queries", queries_command(config), timings)
    run_stage(config, "dataset", dataset_command(config), timings)
    stats = training_stats(config)
    logger.info("training samples per query type: %s", stats)
    run_stage(config, "train", train_command(config), timings)
    run_stage(config, "merge", merge_command(config), timings)
    for model, command in eval_commands(config).items():
        run_stage(config, f"eval-{model}", command, timings)
    table = write_report(config, collect_results(config), split, stats, timings)
    print("\n" + table)
    print(f"[demo] results, chart and every stage's outputs under {config.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
