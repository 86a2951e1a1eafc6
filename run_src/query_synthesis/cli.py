"""Command-line helpers shared by the query-synthesis stages: ``--config`` files as flag defaults."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def apply_config_file(parser: argparse.ArgumentParser, path: str) -> None:
    """Make the JSON object in ``path`` (flag name -> value) the parser's defaults, so explicit flags win.

    An earlier run's ``config.json`` works too: its flags sit under ``"flags"``. Unknown keys are refused.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        parser.error(f"--config {path}: cannot read a JSON object ({err})")
    if not isinstance(data, dict):
        parser.error(f"--config {path} must hold a JSON object of flag values")
    data = data.get("flags", data)
    known = {action.dest for action in parser._actions} - {"help", "config"}
    unknown = sorted(set(data) - known)
    if unknown:
        parser.error(f"--config {path}: unknown keys {unknown}; known: {sorted(known)}")
    for action in parser._actions:
        if action.dest in data:
            action.required = False  # given by the file
    parser.set_defaults(**data)


def config_file_arg(argv: list[str]) -> str | None:
    """The ``--config`` value of ``argv`` (read before the full parse, whose required flags it may supply)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    return pre.parse_known_args(argv)[0].config
