"""The stage contract every ``python -m run_src.<stage>`` follows (DESIGN.md §3), in one place.

A stage

1. reads its flags, optionally from ``--config FILE.json`` (a flat object of flag values, or a record this
   module wrote); flags given on the command line win over the file (:func:`parse_flags`);
2. writes its resolved settings beside its outputs before any compute (:meth:`StageRecord.write`);
3. refuses to rerun into outputs made with other settings, comparing *every* setting except a short,
   declared list of informational ones (worker counts, URLs, logging), and names the keys that differ and
   how to start a fresh run (:func:`check_rerun`);
4. writes its success marker last (:func:`mark_success`);
5. exits through :func:`run_stage`: 0 done, 1 failed, 2 bad flags or input, 3 finished with failed items
   that a rerun retries, 130 interrupted.

Record layout (``config.json``, ``args.json``, ... ; the file name is the stage's)::

    {"stage": "evaluate_bright", "schema_version": 1,
     "settings": {every resolved flag value},          # compared on a rerun, except "informational"
     "identity": {facts that shape the outputs: problem-set fingerprint, prompt versions, world size},
     "informational": ["encode_batch_size", ...],      # recorded, never compared
     "derived": {...}}                                  # anything else worth keeping, never compared

Usage::

    parser = argparse.ArgumentParser(); add_config_argument(parser); ...
    args = parse_flags(parser, argv)
    record = StageRecord("evaluate_bright", settings, informational=INFORMATIONAL)
    check_rerun(run_dir / "config.json", record, fresh_run="pass --overwrite or another --model_name")
    record.write(run_dir / "config.json")
    ...
    mark_success(run_dir)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from models.io_utils import atomic_write_json

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SUCCESS_MARKER = "_SUCCESS"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

EXIT_OK = 0
EXIT_FAILED = 1  # the stage ran and failed (a server died, an item could not be processed)
EXIT_USAGE = 2  # bad flags or input, refused before any compute (argparse uses 2 as well)
EXIT_PARTIAL = 3  # outputs written, but some items failed; rerunning the same command retries only those
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM


class StageError(Exception):
    """A failure the user can act on: its message is the whole report (logged without a traceback)."""


class SettingsChanged(StageError, ValueError):
    """A rerun into existing outputs with other settings."""


# ------------------------------------------------------------------------------------------------ --config


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE.json",
        help="JSON object of flag values (or a config this stage wrote); flags given on the command line win",
    )


def parse_flags(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``, with the values of ``--config FILE`` placed *before* the command line so flags win.

    File values go through argparse like typed flags (so ``choices`` and types are checked); a key that
    is no flag of the stage is refused, naming it. A flag given on the command line replaces the file's
    value even for list-valued flags.
    """
    return parser.parse_args(expand_config(parser, argv))


def expand_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> list[str]:
    """``argv`` with the values of its ``--config FILE`` turned into flags placed first (see :func:`parse_flags`);
    for parsers that are not parsed by :func:`parse_flags` itself (``HfArgumentParser``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    if not known.config:
        return argv
    values = read_config_values(known.config, parser)
    given = _dests_on_command_line(parser, rest)
    return _values_to_argv(parser, {k: v for k, v in values.items() if k not in given}, known.config) + rest


def require_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    """``parser.error`` for the first of ``names`` that neither the command line nor ``--config`` gave.

    Stages declare such flags without ``required=True`` so that a config file can supply them.
    """
    for name in names:
        if getattr(args, name) in (None, "", [], ()):
            parser.error(f"--{name} is required")


def read_config_values(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The flag values in ``path``: a flat object, or the ``settings`` of a record a stage wrote."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        parser.error(f"--config {path}: cannot read a JSON object ({err})")
    if not isinstance(data, dict):
        parser.error(f"--config {path} must hold a JSON object of flag values")
    if "stage" in data and isinstance(data.get("settings"), dict):
        data = data["settings"]  # a record written by StageRecord.write
    known = {a.dest for a in parser._actions if a.option_strings and a.dest not in ("help", "config")}
    if "config" in data and "config" not in known and isinstance(data["config"], dict):
        data = data["config"]  # older stage records kept their settings under "config"
    data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_comment" keys document a file
    unknown = sorted(set(data) - known)
    if unknown:
        parser.error(f"--config {path}: unknown keys {unknown}; the flags of this stage are {sorted(known)}")
    return data


def _dests_on_command_line(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    options = parser._option_string_actions
    given: set[str] = set()
    for token in argv:
        if not token.startswith("-") or token == "--":
            continue
        name = token.split("=", 1)[0]
        action = options.get(name)
        if action is None and parser.allow_abbrev:  # argparse's unique-prefix matching
            matches = [a for option, a in options.items() if option.startswith(name)]
            action = matches[0] if len({id(a) for a in matches}) == 1 else None
        if action is not None:
            given.add(action.dest)
    return given


def _values_to_argv(parser: argparse.ArgumentParser, values: Mapping[str, Any], source: str) -> list[str]:
    by_dest = {a.dest: a for a in parser._actions if a.option_strings}
    argv: list[str] = []

    def scalar(dest: str, value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (str, int, float)):
            return str(value)
        if isinstance(value, dict):  # e.g. an inline DeepSpeed config
            return json.dumps(value)
        parser.error(f"--config {source}: {dest!r} must be a string, number, object or a list of them, got {value!r}")

    for dest, value in values.items():
        if value is None:
            continue
        action = by_dest[dest]
        flag = next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])
        if isinstance(action, (argparse.BooleanOptionalAction, argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if not isinstance(value, bool):
                parser.error(f"--config {source}: {dest!r} must be true or false, got {value!r}")
            if isinstance(action, argparse.BooleanOptionalAction):
                argv.append(flag if value else f"--no-{flag[2:]}")
            elif value is (action.const is True):
                argv.append(flag)
        elif isinstance(action, argparse._StoreConstAction):
            if value == action.const:
                argv.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for item in value if isinstance(value, list) else [value]:
                argv += [flag, scalar(dest, item)]
        elif action.nargs in ("+", "*") or isinstance(action.nargs, int) or isinstance(value, list):
            argv += [flag, *(scalar(dest, item) for item in (value if isinstance(value, list) else [value]))]
        else:
            argv += [flag, scalar(dest, value)]
    return argv


# ------------------------------------------------------------------------------------------------ records


def jsonable(value: Any) -> Any:
    """Settings as plain JSON: dataclasses to dicts, tuples and sets to lists, paths to strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    return value


@dataclasses.dataclass
class StageRecord:
    """What a stage writes beside its outputs and compares on a rerun (layout in the module docstring)."""

    stage: str
    settings: dict[str, Any]
    informational: frozenset[str] = frozenset()
    identity: dict[str, Any] = dataclasses.field(default_factory=dict)
    derived: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if dataclasses.is_dataclass(self.settings):
            self.settings = jsonable(self.settings)
        self.settings = jsonable(self.settings)
        unknown = sorted(set(self.informational) - set(self.settings))
        if unknown:
            raise ValueError(f"{self.stage}: informational keys {unknown} are not settings of the stage")

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "schema_version": SCHEMA_VERSION,
            "settings": self.settings,
            "identity": jsonable(self.identity),
            "informational": sorted(self.informational),
            "derived": jsonable(self.derived),
        }

    def write(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    def compared(self) -> dict[str, Any]:
        """The values a rerun must match: settings minus the informational keys, plus the identity."""
        values = {k: v for k, v in self.settings.items() if k not in self.informational}
        values.update({f"identity.{k}": v for k, v in jsonable(self.identity).items()})
        return values


def read_record(path: str | Path) -> dict[str, Any]:
    """A record written by :meth:`StageRecord.write`; ``StageError`` naming the file when unreadable."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StageError(f"{path} is not a readable stage record ({err}); move it aside to start afresh") from err
    if not isinstance(data, dict) or "settings" not in data:
        raise StageError(f"{path} was not written by this version of the stage (no 'settings'); move it aside")
    return data


def differences(stored: Mapping[str, Any], record: StageRecord) -> list[tuple[str, Any, Any]]:
    """``(key, stored value, new value)`` for every compared key that differs; informational keys of
    either run are skipped."""
    skip = set(record.informational) | set(stored.get("informational", ()))
    old = {k: v for k, v in stored.get("settings", {}).items() if k not in skip}
    old.update({f"identity.{k}": v for k, v in stored.get("identity", {}).items()})
    new = {k: v for k, v in record.compared().items() if k not in skip}
    missing = object()
    found = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            found.append((key, None if a is missing else a, None if b is missing else b))
    return found


def describe_differences(found: Iterable[tuple[str, Any, Any]], limit: int = 200) -> str:
    parts = []
    for key, old, new in found:
        name = key.removeprefix("identity.") if key.startswith("identity.") else f"--{key}"
        parts.append(f"{name}: stored {_short(old, limit)}, now {_short(new, limit)}")
    return "; ".join(parts)


def _short(value: Any, limit: int) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_rerun(path: str | Path, record: StageRecord, fresh_run: str) -> bool:
    """Refuse a rerun whose settings differ from those stored at ``path``.

    Returns ``True`` when ``path`` exists and matches (a resume or a reuse), ``False`` when there is no
    earlier run. ``fresh_run`` says how to start a separate run ("pass --overwrite", "use a new
    --run_name"); it ends the :class:`SettingsChanged` message.
    """
    path = Path(path)
    if not path.is_file():
        return False
    stored = read_record(path)
    if stored.get("stage") not in (None, record.stage):
        raise SettingsChanged(f"{path} belongs to stage {stored.get('stage')!r}, not {record.stage!r}; {fresh_run}")
    found = differences(stored, record)
    if found:
        raise SettingsChanged(
            f"{path.parent} holds the outputs of a run with other settings ({describe_differences(found)}). "
            f"Rerun with the stored settings to resume, or {fresh_run}"
        )
    return True


def mark_success(directory: str | Path, summary: Mapping[str, Any] | None = None, name: str = SUCCESS_MARKER) -> Path:
    """The success marker, written last: downstream stages trust a directory only when it exists."""
    return atomic_write_json(Path(directory) / name, jsonable(dict(summary or {})))


def clear_success(directory: str | Path, name: str = SUCCESS_MARKER) -> None:
    """Remove the marker before a (re)run starts writing, so a killed rerun never looks finished."""
    (Path(directory) / name).unlink(missing_ok=True)


def is_finished(directory: str | Path, name: str = SUCCESS_MARKER) -> bool:
    return (Path(directory) / name).is_file()


# ------------------------------------------------------------------------------------------------ main()


def configure_logging(quiet: bool = False, verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format=LOG_FORMAT)  # a no-op where handlers exist (pytest, a caller)
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "openai", "urllib3"):  # one INFO line per request drowns the progress bars
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_stage(body: Callable[[], int | None], *, name: str, debug: bool = False) -> int:
    """Run a stage's body and map what ends it to the project's exit codes.

    :class:`StageError`, ``ValueError``, ``FileNotFoundError`` and ``ConnectionError`` are the user's to fix:
    one error line (the traceback only at DEBUG level or with ``debug``) and exit 2 (``StageError`` and
    input errors) or 1 (connection failures). Ctrl-C exits 130. Anything else is a bug and propagates.
    """
    log = logging.getLogger(f"run_src.{name}")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM (a scheduler's kill) winds down like Ctrl-C
    try:
        code = body()
    except KeyboardInterrupt:
        log.warning("%s interrupted; rerun the same command to resume", name)
        return EXIT_INTERRUPTED
    except (StageError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as err:
        log.debug("%s failed", name, exc_info=True)
        if debug:
            log.exception("%s failed", name)
        log.error("%s", err)
        return EXIT_USAGE
    except ConnectionError as err:
        log.debug("%s failed", name, exc_info=True)
        log.error("%s", err)
        return EXIT_FAILED
    return EXIT_OK if code is None else int(code)
