"""Evaluate one dense encoder on RAR-b Math and Coding (paper Table 3) through the ``mteb`` package.

    python -m run_src.evaluate_rarb --model rader --model_path /models/merged_rader --output_dir outputs/rarb
    python -m run_src.evaluate_rarb --model minilm --tasks RARbMath --data_dir /data/rarb --output_dir outputs/rarb

Owns the orchestration of specs/evaluation.md §7: build the encoder (the same ``--model`` keys and
encoder flags as ``evaluate_bright``), wrap it for mteb (:mod:`models.evaluation.mteb_wrapper`, which adds the
task instruction), point each task at its data, run ``mteb.evaluate`` and write the scores. mteb does
the retrieval (exact cosine over the whole pooled corpus, top 1000) and the metrics (pytrec_eval,
averaged over queries, as BRIGHT); the headline number is ``ndcg_at_10`` on the ``test`` split.

Data: the pinned Hub datasets (the local HF cache when offline), or ``--data_dir DIR/<task name>/`` in
either layout described in :mod:`models.evaluation.rarb_data`.

Output: ``<output_dir>/<model_name>/<task>/`` with ``config.json``, ``results.json`` (mteb's scores
for the test split, ``ndcg_at_10`` first) and, with ``--save_predictions``, ``predictions.json``
(``{qid: {docid: score}}``, top 1000, readable by :func:`models.evaluation.metrics.read_run`);
``<output_dir>/<model_name>/rarb_summary.json`` maps each task to its nDCG@10. A task whose
``results.json`` exists with the same settings (every one but the informational few) is skipped; one
with other settings is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.evaluation.rarb_data import EVAL_SPLIT, RARB_TASKS, get_task
from models.evaluation.tasks import DENSE_RETRIEVERS, default_run_name, encoder_flags_for
from models.io_utils import atomic_write_json
from models.retrieval.encoder_flags import (
    INFORMATIONAL_ENCODER_FLAGS,
    NO_INSTRUCTION,
    EncoderFlags,
    add_encoder_arguments,
    check_encoder_flags,
)
from models.retrieval.model_identity import model_fingerprint
from models.settings import Settings, load_settings
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

STAGE = "evaluate_rarb"
# Recorded, never compared: which tasks this call runs, where data and results live, and speed.
INFORMATIONAL = frozenset({"tasks", "output_dir", "data_dir", "save_predictions", "overwrite", "model_path",
                           "tokenizer", *INFORMATIONAL_ENCODER_FLAGS})  # fmt: skip


@dataclass(frozen=True)
class RarbConfig:
    """Resolved settings of one RAR-b evaluation; each task's ``config.json`` records these (encoder flags flat)."""

    model: str
    model_name: str
    tasks: tuple[str, ...]
    output_dir: str
    data_dir: str | None
    instruction_template: str | None
    save_predictions: bool
    overwrite: bool
    encoder: EncoderFlags

    def task_dir(self, task: str) -> Path:
        return Path(self.output_dir) / self.model_name / task

    def settings(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "encoder"}
        return {**values, **self.encoder.as_flags()}


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m run_src.{STAGE}", description=__doc__.splitlines()[0])
    add_config_argument(parser)
    parser.add_argument(
        "--model",
        choices=sorted(DENSE_RETRIEVERS),
        help="dense retriever key (required): "
        + "; ".join(f"{k}: {v.description}" for k, v in DENSE_RETRIEVERS.items()),
    )
    parser.add_argument("--model_name", default="", help="run name (default: the --model key)")
    parser.add_argument("--tasks", nargs="+", default=list(RARB_TASKS), choices=RARB_TASKS, help="RAR-b tasks")
    parser.add_argument("--output_dir", help="root of the result directories (required)")
    parser.add_argument("--data_dir", default=None, help="local data: <dir>/<task>/ (Hub-repo copy or BEIR files)")
    parser.add_argument(
        "--instruction_template",
        default="",
        help=f"query instruction wrapper with {{instruction}} (default per text format; '{NO_INSTRUCTION}': w/o Inst.)",
    )
    parser.add_argument("--save_predictions", action="store_true", help="write the top-1000 run per task")
    parser.add_argument("--overwrite", action="store_true", help="evaluate again even if results.json exists")
    # RAR-b's instruction is the task's own (mteb metadata), so BRIGHT's --instruction_task does not apply.
    add_encoder_arguments(parser, title="dense encoder (defaults come from the --model entry)")
    return parser


def parse_config(argv: list[str] | None = None, settings: Settings | None = None) -> RarbConfig:
    """Parse flags into a resolved :class:`RarbConfig`; bad combinations exit through argparse."""
    from models.evaluation.mteb_wrapper import default_instruction_template

    settings = settings or load_settings()
    parser = build_parser(settings)
    args = parse_flags(parser, argv)
    require_flags(parser, args, "model", "output_dir")
    encoder = encoder_flags_for(args.model, EncoderFlags.from_args(args), settings)
    if not encoder.model_path:
        parser.error(f"--model {args.model} needs --model_path (a model directory or Hub id)")
    if encoder.instruction_task or encoder.query_instruction is not None:
        parser.error(
            "RAR-b uses each task's own instruction: use --instruction_template, not --instruction_task/--query_instruction"
        )
    problem = check_encoder_flags(encoder)
    if problem:
        parser.error(problem)
    if args.instruction_template == NO_INSTRUCTION:
        template: str | None = None
    else:
        template = args.instruction_template or default_instruction_template(encoder.text_format)
        if "{instruction}" not in template:
            parser.error(f"--instruction_template {template!r} must contain {{instruction}} (or be '{NO_INSTRUCTION}')")
    if args.data_dir and not Path(args.data_dir).is_dir():
        parser.error(f"--data_dir {args.data_dir} is not a directory")
    return RarbConfig(
        model=args.model,
        model_name=args.model_name or default_run_name(args.model, args.model_path, settings),
        tasks=tuple(dict.fromkeys(args.tasks)),
        output_dir=args.output_dir,
        data_dir=args.data_dir,
        instruction_template=template,
        save_predictions=args.save_predictions,
        overwrite=args.overwrite,
        encoder=encoder,
    )


# ---------------------------------------------------------------------------------------------- stage


def task_record(config: RarbConfig, derived: dict[str, Any] | None = None) -> StageRecord:
    return StageRecord(
        STAGE,
        config.settings(),
        informational=INFORMATIONAL,
        identity={"model_fingerprint": model_fingerprint(config.encoder.model_path)},
        derived=derived or {},
    )


def _done(task_dir: Path, config: RarbConfig) -> bool:
    """Whether ``task_dir`` already holds results made with the same settings (other settings: refused)."""
    if config.overwrite or not (task_dir / "results.json").is_file():
        return False
    return check_rerun(task_dir / "config.json", task_record(config), "pass --overwrite or another --model_name")


def evaluate_task(config: RarbConfig, model: Any, task_name: str) -> dict[str, Any]:
    """Run one task through mteb and write its files; returns the test-split scores."""
    import mteb

    task_dir = config.task_dir(task_name)
    task_dir.mkdir(parents=True, exist_ok=True)
    task = get_task(task_name, config.data_dir)
    instruction = model.query_instruction(task.metadata)
    derived = {"query_instruction_text": instruction, "dataset": task.metadata.dataset, "data_dir": config.data_dir}
    task_record(config, derived).write(task_dir / "config.json")
    prediction_folder = task_dir / "mteb_predictions" if config.save_predictions else None
    result = mteb.evaluate(
        model,
        task,
        cache=None,
        overwrite_strategy="always",
        prediction_folder=prediction_folder,
        encode_kwargs={"batch_size": config.encoder.encode_batch_size},
        show_progress_bar=False,
    )
    if result.exceptions:
        raise ValueError(f"mteb failed on {task_name}: {result.exceptions}")
    # mteb's calibration scores (naucs) are NaN on tiny sets; JSON has no NaN, so they become null.
    scores = {k: _finite_or_none(v) for k, v in result.task_results[0].scores[EVAL_SPLIT][0].items()}
    ordered = {"ndcg_at_10": scores["ndcg_at_10"], "main_score": scores.get("main_score"), **scores}
    if prediction_folder is not None:
        raw = json.loads(next(prediction_folder.glob("*predictions.json")).read_text(encoding="utf-8"))
        atomic_write_json(task_dir / "predictions.json", raw["default"][EVAL_SPLIT], indent=None)
    atomic_write_json(task_dir / "results.json", ordered)
    logger.info("%s %s: nDCG@10 %.5f", config.model_name, task_name, scores["ndcg_at_10"])
    return ordered


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def run_evaluation(config: RarbConfig) -> dict[str, float]:
    """Evaluate every task of ``config``; returns ``{task: ndcg_at_10}`` (also in ``rarb_summary.json``)."""
    from models.evaluation.mteb_wrapper import MtebEncoder
    from models.retrieval.encoders import build_encoder

    todo = [task for task in config.tasks if not _done(config.task_dir(task), config)]
    summary: dict[str, float] = {}
    if todo:
        encoder = build_encoder(config.encoder.encoder_config())
        model = MtebEncoder(encoder, name=config.model_name, instruction_template=config.instruction_template)
        try:
            for task in todo:
                summary[task] = float(evaluate_task(config, model, task)["ndcg_at_10"])
        finally:
            encoder.close()
    for task in config.tasks:
        if task not in summary:
            logger.info("reusing %s", config.task_dir(task) / "results.json")
            stored = json.loads((config.task_dir(task) / "results.json").read_text(encoding="utf-8"))
            summary[task] = float(stored["ndcg_at_10"])
    summary_path = Path(config.output_dir) / config.model_name / "rarb_summary.json"
    previous = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    atomic_write_json(summary_path, {**previous, **summary})
    return summary


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    configure_logging()

    def body() -> None:
        logger.info("config: %s", config.settings())
        summary = run_evaluation(config)
        print(f"{config.model_name}: " + " ".join(f"{task} nDCG@10 {score:.5f}" for task, score in summary.items()))

    return run_stage(body, name=STAGE)


if __name__ == "__main__":
    sys.exit(main())
