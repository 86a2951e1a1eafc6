"""Grade predictions against gold answers from a JSONL file; writes the same lines plus ``correct``.

    python -m run_src.grade_answers --input preds.jsonl --output graded.jsonl
    python -m run_src.grade_answers --input preds.jsonl --output graded.jsonl --llm_judge \
        --generator_url http://127.0.0.1:8010/v1 --model Qwen/Qwen2.5-7B-Instruct

Each input line is ``{"id": ..., "prediction": ..., "gold": ...}`` (other fields are kept). The
prediction may be a whole solution: its last ``\\boxed{}`` is the answer, and without one the
whole text is. Grading is symbolic only (:mod:`models.answers.checking`) unless ``--llm_judge``,
which asks the generator about every item the symbolic checks rejected. The output is written
atomically; a summary (n, correct, accuracy) is logged and printed as one JSON line.

The whole input is validated before anything is graded or written: a line that is not UTF-8 (named by
line and byte offset), not JSON, not an object, lacks a field, has an ``id`` that is not a string or an
integer or repeats an earlier line's ``id`` (both lines named), or holds a value the output could not carry
(``NaN``, ``Infinity``, a lone surrogate; the field named) ends the run with one error line and exit 2
(the traceback too with ``--debug``), and no output is written.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import logging
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from models.answers.checking import DEFAULT_TIMEOUT_S, GradeResult, SymbolicChecker, grade
from models.answers.judge import JudgeVerdict, judge_equivalence
from models.io_utils import atomic_write_jsonl
from models.settings import load_settings
from models.stage import (
    StageError,
    StageRecord,
    add_config_argument,
    check_rerun,
    configure_logging,
    parse_flags,
    require_flags,
    run_stage,
)

logger = logging.getLogger(__name__)

STAGE = "grade_answers"
INFORMATIONAL = frozenset({"generator_url", "num_workers", "overwrite", "quiet", "debug"})

REQUIRED_FIELDS = ("id", "prediction", "gold")


@dataclass(frozen=True)
class GradeConfig:
    input: str
    output: str
    llm_judge: bool
    generator_url: str
    model: str
    timeout_s: float
    num_workers: int
    overwrite: bool
    quiet: bool
    debug: bool


def build_parser() -> argparse.ArgumentParser:
    settings = load_settings()
    parser = argparse.ArgumentParser(prog=f"python -m run_src.{STAGE}", description=__doc__.splitlines()[0])
    add_config_argument(parser)
    parser.add_argument("--input", help="JSONL with id, prediction, gold on every line (required)")
    parser.add_argument("--output", help="JSONL to write: the input lines plus 'correct' (required)")
    parser.add_argument(
        "--llm_judge", action="store_true", help="ask the generator LLM about answers the symbolic checks rejected"
    )
    parser.add_argument(
        "--generator_url",
        default=settings.generator_url,
        help="OpenAI-compatible base URL for --llm_judge (default: $GENERATOR_URL)",
    )
    parser.add_argument(
        "--model",
        default=settings.generator_model,
        help="served model name for --llm_judge (default: $GENERATOR_MODEL)",
    )
    parser.add_argument(
        "--timeout_s",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="time limit of the symbolic check per item; a timeout counts as wrong",
    )
    parser.add_argument("--num_workers", type=int, default=1, help="symbolic worker processes")
    parser.add_argument("--overwrite", action="store_true", help="replace an output graded with other settings")
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error, not only its line")
    return parser


def parse_config(argv: list[str] | None) -> GradeConfig:
    parser = build_parser()
    args = parse_flags(parser, argv)
    require_flags(parser, args, "input", "output")
    if args.llm_judge and not args.model:
        parser.error("--llm_judge needs --model (the served model name) or GENERATOR_MODEL in the environment")
    if args.timeout_s <= 0:
        parser.error(f"--timeout_s must be > 0, got {args.timeout_s}")
    if args.num_workers < 1:
        parser.error(f"--num_workers must be >= 1, got {args.num_workers}")
    return GradeConfig(**{k: v for k, v in vars(args).items() if k != "config"})


def record_path(config: GradeConfig) -> Path:
    """``graded.jsonl`` -> ``graded.config.json`` (the stage record beside the output)."""
    output = Path(config.output)
    return output.with_name(output.name.removesuffix(".jsonl") + ".config.json")


def read_items(path: Path) -> list[dict[str, Any]]:
    """All records of ``path`` (JSONL, or ``.jsonl.gz``), validated before any grading starts.

    Raises ``FileNotFoundError``, or :class:`StageError` naming the file, the line and the field or byte.
    """
    if not path.is_file():
        raise FileNotFoundError(f"--input {path} does not exist; pass a JSONL file with id, prediction, gold")
    items: list[dict[str, Any]] = []
    line_of_id: dict[str, int] = {}
    offset = 0  # bytes before the current line (of the decompressed text for .gz)
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
            for line_no, raw in enumerate(handle, start=1):
                record = _parse_line(path, line_no, offset, raw)
                offset += len(raw)
                if record is None:
                    continue
                _check_record(path, line_no, record)
                key = str(record["id"])
                if key in line_of_id:
                    raise StageError(
                        f"{path} line {line_no}: id {record['id']!r:.80} is already the id of line {line_of_id[key]}; "
                        "every line needs its own id"
                    )
                line_of_id[key] = line_no
                items.append(record)
    except (OSError, EOFError) as err:  # e.g. a truncated or corrupt .gz
        raise StageError(f"{path} cannot be read after byte {offset}: {err}") from err
    return items


def _parse_line(path: Path, line_no: int, offset: int, raw: bytes) -> dict[str, Any] | None:
    """One line as a JSON object, ``None`` for a blank line; ``StageError`` naming what is wrong and where."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise StageError(
            f"{path} line {line_no} is not UTF-8: byte {raw[err.start]:#04x} at byte offset {offset + err.start} "
            f"({err.reason}); re-encode the file as UTF-8"
        ) from None
    if line_no == 1:
        text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise StageError(f"{path} line {line_no} is not valid JSON: {err.msg.removesuffix(' at')} at column {err.colno}") from None
    except RecursionError:
        raise StageError(f"{path} line {line_no} nests arrays or objects too deeply to read") from None
    except ValueError as err:  # an integer with more digits than Python converts
        raise StageError(f"{path} line {line_no} holds a number too long to read ({str(err).split(';')[0]})") from None
    if not isinstance(record, dict):
        raise StageError(f"{path} line {line_no} must be a JSON object, got {type(record).__name__}")
    return record


def _check_record(path: Path, line_no: int, record: dict[str, Any]) -> None:
    """Required fields with usable types, and nothing the output could not be written with."""
    for name in REQUIRED_FIELDS:
        if name not in record:
            raise StageError(
                f"{path} line {line_no} has no {name!r} field; every line needs {', '.join(REQUIRED_FIELDS)}"
            )
    item_id = record["id"]
    if isinstance(item_id, bool) or not isinstance(item_id, str | int) or item_id == "":
        raise StageError(f"{path} line {line_no}: 'id' must be a non-empty string or an integer, got {item_id!r:.60}")
    for name in ("prediction", "gold"):
        value = record[name]
        if value is not None and not isinstance(value, str | int | float):
            raise StageError(f"{path} line {line_no}: {name!r} must be a string or number, got {type(value).__name__}")
    problem = _unwritable(record)
    if problem:
        field, why = problem
        raise StageError(f"{path} line {line_no}: field {field!r} holds {why}, which the output cannot carry")


def _unwritable(record: dict[str, Any]) -> tuple[str, str] | None:
    """The first field (a dotted path) holding a non-finite number or a lone surrogate, and what it holds."""
    surrogate = "a lone surrogate (invalid Unicode)"
    stack: list[tuple[str, Any]] = [("", record)]
    while stack:  # iterative: a record may nest as deeply as the JSON reader allows
        where, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return where, str(value)
        if isinstance(value, str) and not _encodable(value):
            return where, surrogate
        if isinstance(value, dict):
            for key, inner in reversed(value.items()):
                if not _encodable(key):
                    return where or "<line>", f"a key with {surrogate}"
                stack.append((f"{where}.{key}" if where else key, inner))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", inner) for i, inner in reversed(list(enumerate(value))))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _as_text(value: Any) -> str | None:
    return None if value is None else str(value)


def grade_items(items: list[dict[str, Any]], config: GradeConfig) -> list[GradeResult]:
    """Symbolic grades in input order (threads share a pool of ``num_workers`` worker processes)."""
    with SymbolicChecker(num_workers=config.num_workers) as checker:

        def grade_one(record: dict[str, Any]) -> GradeResult:
            gold = _as_text(record["gold"])
            if gold is None:
                return GradeResult(False, None, "", "", "no_answer")
            return grade(_as_text(record["prediction"]), gold, timeout_s=config.timeout_s, checker=checker)

        with ThreadPoolExecutor(max_workers=config.num_workers) as pool:
            return list(pool.map(grade_one, items))


async def _judge_rejected(
    items: list[dict[str, Any]], results: list[GradeResult], config: GradeConfig
) -> tuple[list[GradeResult], dict[int, JudgeVerdict], int]:
    """Re-judge rejected items that have an answer (the judge sees the item's ``question`` when it has one);
    returns the new results, the verdicts by item index and the failure count."""
    from models.llm.client import LLMServiceError, config_from_settings
    from models.llm.factory import build_llm_client

    client = build_llm_client(
        config_from_settings(load_settings(), "openai-compatible", model=config.model, base_url=config.generator_url)
    )
    todo = [
        i for i, r in enumerate(results) if not r.correct and r.extracted is not None and items[i]["gold"] is not None
    ]
    logger.info("asking the LLM judge about %d of %d items", len(todo), len(items))
    failures = 0

    async def judge_one(index: int) -> JudgeVerdict | None:
        nonlocal failures
        item = items[index]
        try:
            return await judge_equivalence(
                client,
                question=_as_text(item.get("question")) or "",
                completion=_as_text(item["prediction"]) or "",
                prediction=results[index].extracted or "",
                gold=str(item["gold"]),
            )
        except LLMServiceError as err:  # one failed request must not end the run
            failures += 1
            logger.warning("LLM judge failed on id %s: %s", item["id"], err)
            return None

    try:
        answers = await asyncio.gather(*(judge_one(i) for i in todo))
    finally:
        await client.aclose()
    verdicts = {index: answer for index, answer in zip(todo, answers, strict=True) if answer is not None}
    updated = list(results)
    for index, verdict in verdicts.items():
        if verdict.equivalent:
            old = results[index]
            updated[index] = GradeResult(
                True, old.extracted, old.normalized_prediction, old.normalized_gold, "llm_judge"
            )
    return updated, verdicts, failures


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    configure_logging(quiet=config.quiet)
    return run_stage(lambda: grade_file(config), name=STAGE, debug=config.debug)


def grade_file(config: GradeConfig) -> None:
    """The stage: validate every line, grade, write the output and its record, print the summary."""
    logger.info("config: %s", asdict(config))
    record = StageRecord(STAGE, asdict(config), informational=INFORMATIONAL)
    if not config.overwrite:
        check_rerun(record_path(config), record, "pass --overwrite or another --output")
    items = read_items(Path(config.input))
    logger.info("read %d items from %s", len(items), config.input)
    results = grade_items(items, config)
    judge_failures = 0
    verdicts: dict[int, JudgeVerdict] = {}
    symbolic_correct = sum(r.correct for r in results)
    if config.llm_judge:
        results, verdicts, judge_failures = asyncio.run(_judge_rejected(items, results, config))
    rows = [
        {**item, "correct": r.correct, **({"judge": verdicts[i].as_dict()} if i in verdicts else {})}
        for i, (item, r) in enumerate(zip(items, results, strict=True))
    ]
    atomic_write_jsonl(config.output, rows)
    n_correct = sum(r.correct for r in results)
    summary = {"n": len(items), "correct": n_correct, "accuracy": n_correct / len(items) if items else 0.0}
    methods: dict[str, int] = {}
    for r in results:
        methods[r.method] = methods.get(r.method, 0) + 1
    record.derived = {"summary": summary, "methods": methods, "judge_failures": judge_failures}
    record.write(record_path(config))
    logger.info(
        "graded %d items: %d correct (%d symbolic, %d by the judge, %d judge failures); methods %s; wrote %s",
        len(items),
        n_correct,
        symbolic_correct,
        n_correct - symbolic_correct,
        judge_failures,
        methods,
        config.output,
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
