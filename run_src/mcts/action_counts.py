"""What each action asked the generator for and how much of it could be read back, per problem and per run.

A reply that no parser can read costs a branch of the tree silently (a QG generation with no theorem block
makes no query node; a verdict without true/false rejects a theorem), so every action counts its requests,
the outputs it got and the outputs it could not parse. Each unparsable output is logged at debug level
(``--verbose``) and each problem's tally at info level; the counts go into each answer sheet
(``action_counts``) and, summed, into ``run_summary.json``, whose shares the runner prints.

"Unparsable" per action: ``ost`` an empty step; ``crs`` a completion without ``\\boxed{}``; ``qg`` a
generation without a candidate theorem (free-text mode: an empty one); ``summary`` an empty summary;
``reflection`` a verdict without relevant/not relevant; ``judge`` a reply that is neither yes nor no;
``subquestion``/``rephrase`` a reply the rStar parsers reject.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

COUNTED = ("requests", "outputs", "unparsable")


class ActionCounts:
    """Per-action counters of one problem's search (thread-safe: RT sends its calls concurrently)."""

    def __init__(self, problem_id: str) -> None:
        self.problem_id = problem_id
        self._counts: dict[str, Counter[str]] = {name: Counter() for name in COUNTED}
        self._theorems: Counter[str] = Counter()
        self._lock = threading.Lock()

    def record(self, action: str, node_id: int, outputs: Iterable[str], unreadable: Iterable[bool]) -> None:
        """One request of ``action`` at ``node_id``: its outputs and, for each, whether it could not be parsed."""
        outputs, unreadable = list(outputs), list(unreadable)
        with self._lock:
            self._counts["requests"][action] += 1
            self._counts["outputs"][action] += len(outputs)
            self._counts["unparsable"][action] += sum(unreadable)
        for text, bad in zip(outputs, unreadable, strict=True):
            if bad:
                logger.debug(
                    "problem %s node %d: unparsable %s output: %r", self.problem_id, node_id, action, text[:160]
                )

    def log_tally(self) -> None:
        """One info line with the problem's unparsable outputs per action (nothing when there are none)."""
        with self._lock:
            bad = {a: (n, self._counts["outputs"][a]) for a, n in sorted(self._counts["unparsable"].items()) if n}
        if bad:
            tally = ", ".join(f"{action} {n}/{total}" for action, (n, total) in bad.items())
            logger.info("problem %s: unparsable outputs %s", self.problem_id, tally)

    def record_theorems(self, labels: Iterable[str]) -> None:
        """The verdict labels of one retrieval call (``relevant``, ``irrelevant``, ``unparsable``, ``unjudged``)."""
        with self._lock:
            self._theorems.update(labels)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "actions": {
                    action: {name: self._counts[name][action] for name in COUNTED}
                    for action in sorted(self._counts["requests"])
                },
                "theorems": dict(sorted(self._theorems.items())),
            }


def sum_counts(per_problem: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The run-wide sum of answer sheets' ``action_counts``, with each action's unparsable share."""
    actions: dict[str, Counter[str]] = {}
    theorems: Counter[str] = Counter()
    for counts in per_problem:
        for action, values in counts.get("actions", {}).items():
            actions.setdefault(action, Counter()).update({k: int(v) for k, v in values.items()})
        theorems.update({k: int(v) for k, v in counts.get("theorems", {}).items()})
    return {
        "actions": {
            action: {**{name: values[name] for name in COUNTED},
                     "unparsable_share": round(values["unparsable"] / values["outputs"], 4) if values["outputs"] else 0.0}
            for action, values in sorted(actions.items())
        },  # fmt: skip
        "theorems": dict(sorted(theorems.items())),
    }


def format_shares(summary: Mapping[str, Any]) -> str:
    """One line per action: ``qg: 3/40 outputs unparsable (7.5%)``."""
    lines = [
        f"{action}: {values['unparsable']}/{values['outputs']} outputs unparsable ({100 * values['unparsable_share']:.1f}%)"
        for action, values in summary.get("actions", {}).items()
    ]
    return "\n".join(lines) if lines else "no generator outputs"
