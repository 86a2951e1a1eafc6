"""What the training drivers share before and after ``trainer.train()``: arguments from flags and JSON
files, the output-directory and resume rules, logging per rank, and the written run configuration.

* Arguments: flags, one Tevatron-style JSON file as the only argument, or ``--config FILE.json`` plus
  flags (flags win), through :mod:`models.stage`. A JSON value is the flag's value; unknown keys fail.
* Output directory (training.md §10.2): a non-empty ``--output_dir`` is refused unless
  ``--overwrite_output_dir`` or ``--resume_from_checkpoint``; the last ``checkpoint-*`` in it is resumed
  (``--no_auto_resume`` turns that off). ``--resume_from_checkpoint last`` asks for it explicitly.
* ``train_config.json`` in the output directory: the stage record (every parsed option, the world size)
  plus derived facts (records, resume point, library versions), written by rank 0 before training
  starts; a rerun into the directory with other settings is refused.

Usage::

    parsed = parse_arguments(HfArgumentParser(CLASSES), argv)
    resume = prepare_output_dir(training_args)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser, TrainingArguments

from models.stage import (
    StageRecord,
    add_config_argument,
    check_rerun,
    expand_config,
    jsonable,
    mark_success,
)

logger = logging.getLogger(__name__)

STAGE_RECORD = "train_config.json"
_RESUME_LAST = ("last", "true", "True")
# Options that change logging, checkpoint bookkeeping or where things go, never the trained weights.
TRAINING_INFORMATIONAL = (
    "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "auto_resume", "logging_dir", "logging_strategy",
    "logging_steps", "logging_first_step", "log_level", "log_level_replica", "log_on_each_node", "report_to",
    "run_name", "disable_tqdm", "save_strategy", "save_steps", "save_total_limit", "save_only_model",
    "save_on_each_node", "dataloader_num_workers", "dataloader_pin_memory", "local_rank", "hub_token",
)


def parse_arguments(parser: HfArgumentParser, argv: Sequence[str] | None = None) -> tuple[Any, ...]:
    """Parse flags into the parser's dataclasses; ``--config FILE.json`` (or a lone ``FILE.json`` argument,
    Tevatron style) supplies flag values, and flags given on the command line win (:mod:`models.stage`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith(".json") and not argv[0].startswith("-"):
        argv = ["--config", *argv]
    if "--config" not in parser._option_string_actions:
        add_config_argument(parser)  # listed in --help; expand_config consumes it before HF parses
    tokens = expand_config(parser, argv)
    parsed = parser.parse_args_into_dataclasses(args=tokens, look_for_args_file=False)
    return tuple(parsed[: len(parser.dataclass_types)])  # HF appends a Namespace for "config" itself


def setup_logging(training_args: TrainingArguments) -> None:
    """INFO on the main process, WARNING elsewhere (STYLE §3.6). transformers stays at WARNING except its
    Trainer (run summary, checkpoints), so model configs are not dumped on every load."""
    import transformers

    level = logging.INFO if training_args.process_index == 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    transformers.utils.logging.set_verbosity(logging.WARNING)
    logging.getLogger("transformers.trainer").setLevel(level)


def init_distributed(training_args: TrainingArguments) -> None:
    """Set up torch.distributed (reading ``.device`` does) and, under DeepSpeed, its comm layer, before the
    model loads: ZeRO-3 partitions weights while they load (``zero.Init``) and needs the world size.

    On GPUs HF initialises DeepSpeed's comm itself; with ``--use_cpu`` it sets up a gloo group through
    accelerate only, so ``deepspeed.comm`` is wrapped around that group here.
    """
    logger.info(
        "process %d of %d on %s; precision %s",
        training_args.process_index,
        training_args.world_size,
        training_args.device,
        "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32",
    )
    if training_args.deepspeed and training_args.world_size > 1:
        import deepspeed
        import deepspeed.comm as ds_comm

        if not ds_comm.is_initialized():
            deepspeed.init_distributed()


def prepare_output_dir(training_args: Any, record: StageRecord | None = None) -> str | None:
    """Apply the output-directory rules; return the checkpoint to resume from, if any.

    Training into a directory an earlier run left (``--overwrite_output_dir`` or a resume) is refused when
    that run's ``train_config.json`` holds other settings than ``record`` (the informational ones aside).
    """
    from transformers.trainer_utils import get_last_checkpoint

    if not training_args.output_dir:
        raise ValueError("--output_dir is required")
    output_dir = Path(training_args.output_dir)
    requested = training_args.resume_from_checkpoint
    non_empty = output_dir.is_dir() and any(output_dir.iterdir())
    if non_empty and not (training_args.overwrite_output_dir or requested):
        raise ValueError(
            f"--output_dir {output_dir} is not empty. Pass --overwrite_output_dir to train into it (its last "
            "checkpoint-* is resumed), --resume_from_checkpoint PATH|last to resume, or another --output_dir"
        )
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output_dir {output_dir} exists and is not a directory")
    if record is not None and non_empty:
        check_rerun(output_dir / STAGE_RECORD, record, "train into another --output_dir, or delete this one")
    if requested:
        if requested in _RESUME_LAST:
            last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
            if last is None:
                raise ValueError(f"--resume_from_checkpoint {requested}: no checkpoint-* in {output_dir}")
            return last
        if not Path(requested).is_dir():
            raise ValueError(f"--resume_from_checkpoint {requested} is not a directory")
        return str(requested)
    if training_args.auto_resume and output_dir.is_dir():
        last = get_last_checkpoint(str(output_dir))
        if last is not None:
            logger.info("resuming from %s (the last checkpoint in --output_dir)", last)
        return last
    return None


def library_versions() -> dict[str, str]:
    import importlib.metadata as metadata

    versions = {}
    for name in ("torch", "transformers", "peft", "accelerate", "deepspeed", "datasets"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def run_record(parts: dict[str, Any], training_args: TrainingArguments, stage: str) -> StageRecord:
    """The stage record of a training run: every option of every argument class, flat (they are one
    parser's flags), and the world size, which sets the global batch and the in-batch negatives."""
    settings: dict[str, Any] = {}
    for obj in parts.values():
        settings.update(jsonable(obj))
    settings.update(json.loads(training_args.to_json_string()))
    return StageRecord(
        stage,
        settings,
        informational=frozenset(TRAINING_INFORMATIONAL) & set(settings),
        identity={"world_size": training_args.world_size},
    )


def write_run_config(output_dir: str | Path, record: StageRecord, derived: dict[str, Any]) -> Path:
    """``<output_dir>/train_config.json``: the record plus what the run found (records, versions, argv)."""
    record.derived = {**derived, "versions": library_versions(), "argv": sys.argv}
    return record.write(Path(output_dir) / STAGE_RECORD)


@dataclasses.dataclass
class TrainingRun:
    """What both drivers have once flags, output directory and training records check out."""

    model_args: Any
    lora_args: Any
    data_args: Any
    text_args: Any
    training_args: Any
    record: StageRecord
    resume: str | None
    records: Any  # the training records (a ``datasets.Dataset``)
    corpus: Any  # the passage lookup of Tevatron v2 records, else None

    @property
    def parts(self) -> dict[str, Any]:
        return {"model": self.model_args, "lora": self.lora_args, "data": self.data_args, "text": self.text_args}


def start_training_run(argument_classes: Sequence[type], argv: Sequence[str] | None, stage: str) -> TrainingRun:
    """Parse the flags, set up logging and the process group, apply the output-directory rules (refusing a
    rerun with other settings), seed, and read the training records.

    ``ValueError``/``FileNotFoundError`` mean bad flags or input; the drivers report them and exit 2.
    """
    from transformers import HfArgumentParser, set_seed

    from models.training.dataset import load_corpus_lookup, load_train_records, record_format

    try:
        model_args, lora_args, data_args, text_args, training_args = parse_arguments(
            HfArgumentParser(argument_classes), argv
        )
    except ValueError:
        logging.basicConfig(level=logging.INFO)
        raise
    setup_logging(training_args)
    init_distributed(training_args)
    parts = {"model": model_args, "lora": lora_args, "data": data_args, "text": text_args}
    record = run_record(parts, training_args, stage)
    resume = prepare_output_dir(training_args, record)
    set_seed(training_args.seed)
    records = load_train_records(data_args)
    corpus = load_corpus_lookup(data_args) if record_format(records.column_names) == "v2" else None
    return TrainingRun(model_args, lora_args, data_args, text_args, training_args, record, resume, records, corpus)


def record_training_run(run: TrainingRun, trainer: Any, dataset: Any, **derived: Any) -> None:
    """Log the training set and, on rank 0, write ``train_config.json`` (the record plus what was found)."""
    if run.training_args.dataloader_num_workers > 0:
        logger.warning("dataloader workers hold a copy of the dataset: the epoch-dependent group sampling stays at 0")
    logger.info(
        "training set: %d records (%s format), group size %d",
        len(dataset),
        dataset.format,
        run.data_args.train_group_size,
    )
    if trainer.is_world_process_zero():
        facts = {
            "world_size": run.training_args.world_size,
            "records": len(dataset),
            "record_format": dataset.format,
            "resume_from_checkpoint": run.resume,
            "deepspeed_scheduler": run.training_args.uses_deepspeed_scheduler(),
            **derived,
        }
        write_run_config(run.training_args.output_dir, run.record, facts)


def train_and_mark_success(trainer: Any, output_dir: str | Path, resume: str | None) -> None:
    """Train (resuming from ``resume``), save the model and trainer state, then write ``_SUCCESS`` with a summary."""
    started = time.monotonic()
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    if trainer.is_world_process_zero():
        trainer.save_state()
        summary = {
            "global_step": trainer.state.global_step,
            "train_loss": result.training_loss,
            "wall_s": round(time.monotonic() - started, 1),
            "resumed_from": resume,
        }
        mark_success(output_dir, summary)
        print(f"trained {trainer.state.global_step} steps, mean loss {result.training_loss:.4f} -> {output_dir}")
    _close_process_group()


def _close_process_group() -> None:
    """Leave torch.distributed together: a rank that exits while the other still holds the gloo/NCCL group
    can abort in its C++ threads at interpreter exit ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
