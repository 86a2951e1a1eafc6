"""What the training drivers share before and after ``trainer.train()``: arguments from flags and JSON
files, the output-directory and resume rules, logging per rank, and the written run configuration.

* Arguments: flags, one Tevatron-style JSON file as the only argument, or ``--config FILE.json`` plus
  flags (flags win). A JSON value is the flag's value; unknown keys fail like unknown flags.
* Output directory (training.md §10.2): a non-empty ``--output_dir`` is refused unless
  ``--overwrite_output_dir`` or ``--resume_from_checkpoint``; the last ``checkpoint-*`` in it is resumed
  (``--no_auto_resume`` turns that off). ``--resume_from_checkpoint last`` asks for it explicitly.
* ``train_config.json`` in the output directory: every parsed option plus derived facts (world size,
  records, resume point, library versions), written by rank 0 before training starts.

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

from models.io_utils import atomic_write_json

logger = logging.getLogger(__name__)

RUN_CONFIG_FILE = "train_config.json"
SUCCESS_MARKER = "_SUCCESS"
_RESUME_LAST = ("last", "true", "True")


def _json_to_argv(data: dict[str, Any], source: str) -> list[str]:
    argv: list[str] = []
    for key, value in data.items():
        if value is None:
            continue
        flag = f"--{key}"
        if isinstance(value, bool):
            argv += [flag, "true" if value else "false"]
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        elif isinstance(value, dict):
            argv += [flag, json.dumps(value)]
        elif isinstance(value, (str, int, float)):
            argv += [flag, str(value)]
        else:
            raise ValueError(f"{source}: value of {key!r} must be a string, number, bool, list or object")
    return argv


def expand_config_files(argv: Sequence[str]) -> list[str]:
    """Replace ``--config FILE`` (or a lone ``FILE.json`` argument, Tevatron style) by the file's flags,
    placed before the other flags so those win."""
    argv = list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        argv = ["--config", argv[0]]
    expanded: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--config" or token.startswith("--config="):
            path = token.split("=", 1)[1] if "=" in token else (argv[i + 1] if i + 1 < len(argv) else "")
            if not path:
                raise ValueError("--config needs a JSON file path")
            try:
                data = json.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                raise ValueError(f"--config {path}: cannot read a JSON object ({err})") from err
            if not isinstance(data, dict):
                raise ValueError(f"--config {path} must hold a JSON object of flag values")
            data.pop("_comment", None)
            expanded += _json_to_argv(data, path)
            i += 1 if "=" in token else 2
            continue
        rest.append(token)
        i += 1
    return expanded + rest


def parse_arguments(parser: HfArgumentParser, argv: Sequence[str] | None = None) -> tuple[Any, ...]:
    """Parse flags (with ``--config`` files expanded) into the parser's dataclasses."""
    tokens = expand_config_files(sys.argv[1:] if argv is None else argv)
    return parser.parse_args_into_dataclasses(args=tokens, look_for_args_file=False)


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


def prepare_output_dir(training_args: Any) -> str | None:
    """Apply the output-directory rules; return the checkpoint to resume from, if any."""
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


def write_run_config(
    output_dir: str | Path, parts: dict[str, Any], derived: dict[str, Any], training_args: TrainingArguments
) -> Path:
    """``<output_dir>/train_config.json``: every option (``parts`` are dataclasses) plus ``derived``."""
    data: dict[str, Any] = {name: dataclasses.asdict(obj) for name, obj in parts.items()}
    data["training"] = json.loads(training_args.to_json_string())
    data["derived"] = {**derived, "versions": library_versions(), "argv": sys.argv}
    path = Path(output_dir) / RUN_CONFIG_FILE
    atomic_write_json(path, data)
    return path


def mark_success(output_dir: str | Path, summary: dict[str, Any]) -> None:
    """``_SUCCESS`` last, so downstream stages (merge) know the directory is complete."""
    atomic_write_json(Path(output_dir) / SUCCESS_MARKER, summary)


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
