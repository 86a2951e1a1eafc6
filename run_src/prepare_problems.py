"""Stage 0: the MCTS problem files, from the Hub or a local mirror, with ids and gold answers.

    python -m run_src.prepare_problems --dataset MATH --output_dir outputs/problems
    python -m run_src.prepare_problems --dataset MATH --source ../shared/data/math --output_dir outputs/problems
    python -m run_src.prepare_problems --dataset NUMINA_MATH --limit 10000 --output_dir outputs/problems
    python -m run_src.prepare_problems --dataset CHAMP --heldout 60 --limit 6 --output_dir outputs/problems

Writes ``<output_dir>/<dataset>/<name>.json``, the layout ``run_src.run_parallel_workers`` reads with
``--data_root <output_dir> --dataset_name <dataset> --test_json_filename <name>``: a JSON array of
``{id, problem, solution, gold_answer, ...}``, plus ``<name>.config.json`` (the stage record, with the
counts). Each problem gets

* ``id``: ``<dataset>-<first 12 hex digits of sha256(problem)>``, so it survives any reordering or merge;
* ``gold_answer``: the last ``\\boxed{}`` of its solution, as our grader reads it (``extract_boxed``);
  problems without one are left out and counted.

Datasets (spec ``specs/mcts.md`` §4):

* ``MATH`` (paper: the 7,500 training problems, shuffled): from the Hub (``EleutherAI/hendrycks_math``, the
  seven subject configs, split ``train``) or a local copy (a JSON array / JSON Lines file of ``problem,
  level, type, solution`` records, or a directory of such files). The problems are shuffled with
  ``--seed`` (recorded); default name ``shuffled_train``.
* ``NUMINA_MATH`` (paper: 10,000 NuminaMath-CoT problems drawn from orca_math, amc_aime, cn_k12, olympiads and
  aops_forum; the exact filter is unpublished). Our filter, written down: keep records whose ``source`` is
  one of those five and whose solution has an extractable ``\\boxed{}`` answer, drop repeated problem texts,
  shuffle with ``--seed`` and keep the first ``--limit`` (10,000); default name
  ``filtered_numina_math_10000``. From the Hub (``AI-MO/NuminaMath-CoT``, split ``train``) or a local copy.
* ``CHAMP`` (the embedded default, ``champ-dataset``): a seeded split of its problems into ``--heldout``
  evaluation problems and a training pool. The problem file (default name ``train_pool``) holds the first
  ``--limit`` problems of the pool; the held-out problems go to an evaluation mirror
  ``<output_dir>/CHAMP/heldout_mirror/{examples,documents}/champ.jsonl`` (``evaluate_bright --bright_dir``)
  and never into a problem file; ``<name>.split.json`` lists both sides.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import random
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.answers.extraction import extract_boxed
from models.io_utils import atomic_write_json
from models.stage import (
    StageRecord,
    add_config_argument,
    check_rerun,
    configure_logging,
    parse_flags,
    require_flags,
    run_stage,
)

logger = logging.getLogger(__name__)

STAGE = "prepare_problems"
DATASETS = ("MATH", "NUMINA_MATH", "CHAMP")
MATH_HUB = "EleutherAI/hendrycks_math"
MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)
NUMINA_HUB = "AI-MO/NuminaMath-CoT"
NUMINA_SOURCES = ("orca_math", "amc_aime", "cn_k12", "olympiads", "aops_forum")  # paper §4.1
DEFAULT_NAMES = {"MATH": "shuffled_train", "NUMINA_MATH": "filtered_numina_math_10000", "CHAMP": "train_pool"}
DEFAULT_LIMITS = {"MATH": None, "NUMINA_MATH": 10_000, "CHAMP": None}
KEPT_FIELDS = ("level", "type", "source")
INFORMATIONAL = frozenset({"output_dir", "overwrite"})


@dataclass(frozen=True)
class PrepareConfig:
    dataset: str
    source: str
    output_dir: str
    name: str
    seed: int
    limit: int | None
    heldout: int
    overwrite: bool

    @property
    def output(self) -> Path:
        return Path(self.output_dir) / self.dataset / f"{self.name}.json"

    @property
    def record_path(self) -> Path:
        return self.output.with_name(f"{self.name}.config.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m run_src.{STAGE}", description=__doc__.splitlines()[0])
    add_config_argument(parser)
    parser.add_argument("--dataset", choices=DATASETS, help="which problem set (required)")
    parser.add_argument(
        "--source", default="hf", help="hf (the Hub), hf:<repo>, or a local JSON/JSONL file or directory"
    )
    parser.add_argument("--output_dir", help="root of the problem files (stage 2's --data_root; required)")
    parser.add_argument("--name", default="", help="file stem (default: shuffled_train / filtered_numina_math_10000)")
    parser.add_argument("--seed", type=int, default=42, help="shuffle seed (recorded)")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N after shuffling (NuminaMath: 10000)")
    parser.add_argument(
        "--heldout", type=int, default=0, help="CHAMP: problems held out for evaluation (never searched)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a problem file prepared with other settings")
    return parser


def parse_config(argv: list[str] | None = None) -> PrepareConfig:
    parser = build_parser()
    args = parse_flags(parser, argv)
    require_flags(parser, args, "dataset", "output_dir")
    limit = args.limit if args.limit is not None else DEFAULT_LIMITS[args.dataset]
    if limit is not None and limit < 1:
        parser.error(f"--limit must be >= 1, got {limit}")
    if args.heldout and args.dataset != "CHAMP":
        parser.error("--heldout splits the CHAMP problems; MATH and NuminaMath come with their own test sets")
    if args.heldout < 0:
        parser.error(f"--heldout must be >= 0, got {args.heldout}")
    source = args.source
    if args.dataset == "CHAMP" and source == "hf":
        source = "champ-dataset"
    elif source != "hf" and not source.startswith("hf:") and not Path(source).exists():
        parser.error(f"--source {source}: no such file or directory (or give hf / hf:<repo>)")
    return PrepareConfig(
        dataset=args.dataset,
        source=source,
        output_dir=args.output_dir,
        name=args.name or DEFAULT_NAMES[args.dataset],
        seed=args.seed,
        limit=limit,
        heldout=args.heldout,
        overwrite=args.overwrite,
    )


# ------------------------------------------------------------------------------------------------ reading


def read_local(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSON array / JSON Lines file, or of every such file under a directory (sorted)."""
    files = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl")) if path.is_dir() else [path]
    files = [f for f in files if not f.name.endswith(".config.json")]
    if not files:
        raise FileNotFoundError(f"--source {path}: no .json or .jsonl file")
    for file in files:
        text = file.read_text(encoding="utf-8")
        try:
            rows = (
                json.loads(text)
                if file.suffix == ".json"
                else [json.loads(line) for line in text.splitlines() if line.strip()]
            )
        except json.JSONDecodeError as err:
            raise ValueError(f"{file} is not valid JSON ({err})") from err
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise ValueError(f"{file}: expected a JSON array of objects (or JSON Lines)")
        yield from rows


def read_hub(dataset: str, source: str) -> Iterator[dict[str, Any]]:
    """The Hub copy (``hf`` = the default repo, ``hf:<repo or dir>`` another one) through ``datasets``."""
    from datasets import load_dataset

    repo = source[3:] if source.startswith("hf:") else (MATH_HUB if dataset == "MATH" else NUMINA_HUB)
    try:
        if dataset == "MATH":
            for subject in MATH_SUBJECTS:
                yield from load_dataset(repo, subject, split="train")
        else:
            yield from load_dataset(repo, split="train")
    except (ConnectionError, FileNotFoundError, ValueError) as err:
        raise FileNotFoundError(
            f"cannot load {repo} from the Hub or the local HF cache ({err}); pass --source with a local copy"
        ) from err


def problem_id(dataset: str, problem: str) -> str:
    return f"{dataset}-{hashlib.sha256(problem.encode('utf-8')).hexdigest()[:12]}"


def prepare(config: PrepareConfig, rows: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The problem list and why records were left out (counts by reason)."""
    dropped: Counter[str] = Counter()
    seen: set[str] = set()
    items: list[dict[str, Any]] = []
    for row in rows:
        problem, solution = row.get("problem"), row.get("solution")
        if not isinstance(problem, str) or not problem.strip() or not isinstance(solution, str):
            dropped["no_problem_or_solution"] += 1
            continue
        if config.dataset == "NUMINA_MATH" and row.get("source") not in NUMINA_SOURCES:
            dropped["other_source"] += 1
            continue
        gold = extract_boxed(solution)
        if not gold:
            dropped["no_boxed_answer"] += 1
            continue
        if problem in seen:
            dropped["repeated_problem"] += 1
            continue
        seen.add(problem)
        extra = {key: row[key] for key in KEPT_FIELDS if key in row}
        items.append({"id": problem_id(config.dataset, problem), "problem": problem, "solution": solution,
                      "gold_answer": gold, **extra})  # fmt: skip
    random.Random(config.seed).shuffle(items)
    if config.limit is not None and len(items) > config.limit:
        dropped["beyond_limit"] += len(items) - config.limit
        items = items[: config.limit]
    return items, dict(sorted(dropped.items()))


def champ_split(config: PrepareConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """CHAMP: the training-pool problems (first ``--limit``), and the split written beside them.

    The held-out problems are a seeded draw over every CHAMP problem id; their evaluation mirror holds them
    as BRIGHT-style examples (with their gold concepts) and the full concept corpus.
    """
    from models.embedded.champ import prepare_champ_mirror
    from models.io_utils import atomic_write_jsonl, read_jsonl
    from run_src.mcts.problems import champ_items

    mirror = prepare_champ_mirror() if config.source == "champ-dataset" else Path(config.source)
    examples = list(read_jsonl(mirror / "examples" / "champ.jsonl"))
    ids = sorted(example["id"] for example in examples)
    if not 0 <= config.heldout < len(ids):
        raise ValueError(f"--heldout must be between 0 and {len(ids) - 1}, got {config.heldout}")
    shuffled = ids[:]
    random.Random(config.seed).shuffle(shuffled)
    heldout, pool = sorted(shuffled[: config.heldout]), shuffled[config.heldout :]
    by_id = {item["id"]: item for item in champ_items()}
    problems = [{**by_id[pid], "id": pid} for pid in pool if pid in by_id]
    if config.limit is not None:
        problems = problems[: config.limit]
    eval_mirror = config.output.parent / "heldout_mirror"
    if heldout:
        kept = set(heldout)
        atomic_write_jsonl(eval_mirror / "examples" / "champ.jsonl", [e for e in examples if e["id"] in kept])
        atomic_write_jsonl(
            eval_mirror / "documents" / "champ.jsonl", list(read_jsonl(mirror / "documents" / "champ.jsonl"))
        )
    split = {"seed": config.seed, "heldout": heldout, "train_pool": pool, "source": str(mirror),
             "heldout_mirror": str(eval_mirror) if heldout else None}  # fmt: skip
    atomic_write_json(config.output.with_name(f"{config.name}.split.json"), split)
    return problems, split


def run(config: PrepareConfig) -> dict[str, Any]:
    record = StageRecord(STAGE, dataclasses.asdict(config), informational=INFORMATIONAL)
    if not config.overwrite:
        check_rerun(config.record_path, record, "pass --overwrite or another --name")
    if config.dataset == "CHAMP":
        items, split = champ_split(config)
        counts: dict[str, Any] = {"problems": len(items), "heldout": len(split["heldout"]), "dropped": {}}
        record.derived = counts
        record.write(config.record_path)
        atomic_write_json(config.output, items, indent=1)
        logger.info("wrote %d CHAMP problems to %s; %d held out", len(items), config.output, len(split["heldout"]))
        return counts
    local = config.source != "hf" and not config.source.startswith("hf:")
    rows = read_local(Path(config.source)) if local else read_hub(config.dataset, config.source)
    items, dropped = prepare(config, rows)
    if not items:
        raise ValueError(f"--source {config.source} gave no usable {config.dataset} problem (dropped: {dropped})")
    counts = {"problems": len(items), "dropped": dropped, "by_type": dict(Counter(i.get("type", "") for i in items))}
    record.derived = counts
    record.write(config.record_path)
    atomic_write_json(config.output, items, indent=1)
    logger.info("wrote %d %s problems to %s (dropped %s)", len(items), config.dataset, config.output, dropped)
    return counts


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    configure_logging()

    def body() -> None:
        counts = run(config)
        print(f"{config.dataset}: {counts['problems']} problems -> {config.output} (dropped {counts['dropped']})")

    return run_stage(body, name=STAGE)


if __name__ == "__main__":
    sys.exit(main())
