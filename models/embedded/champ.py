"""CHAMP (PyPI ``champ-dataset``) as a small BRIGHT-style retrieval benchmark.

Owns reading CHAMP into typed records and exporting them in the BRIGHT local-mirror layout
(DESIGN.md §3 Corpus, §4), so the embedded demo evaluates retrievers with the same loader as
the real BRIGHT splits. Problems are the queries, the 89 concept statements are the corpus,
and a problem's ``ch_list`` entries starting with ``C_`` are its gold documents (entries
starting with ``H_`` are problem-specific hints, not corpus documents).

Export layout (``<out_dir>`` is a BRIGHT mirror root that may hold other tasks too)::

    <out_dir>/examples/champ.jsonl    one BRIGHT ``examples`` row per problem, e.g.
        {"id": "P_Combinatorics_1", "query": "Let a string consist of ...", "reasoning": "",
         "gold_ids": ["C_comb_sum"], "gold_ids_long": ["N/A"], "excluded_ids": [],
         "gold_answer": "239", "category": "Combinatorics"}
    <out_dir>/documents/champ.jsonl   one ``{"id", "content"}`` row per concept
    <out_dir>/rader_champ_export.json marker written last: content hashes of both files

Problems without a linked concept keep ``gold_ids == []``; the evaluation drops them because
they cannot be scored.

Usage::

    from models.embedded.champ import load_champ, prepare_champ_mirror
    data = load_champ()
    mirror_dir = prepare_champ_mirror()
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from models.io_utils import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

CHAMP_VERSION = "v0"
TASK_NAME = "champ"
MARKER_NAME = "rader_champ_export.json"
MARKER_SCHEMA_VERSION = 1
CONCEPT_PREFIX = "C_"


@dataclass(frozen=True)
class ChampConcept:
    """One concept statement (a corpus document); ``name`` is ``None`` for unnamed concepts."""

    concept_id: str
    text: str
    category: str
    name: str | None = None

    @property
    def document_text(self) -> str:
        """The retrieval document: ``"<name>: <statement>"`` when named, else the statement.

        About 40% of CHAMP concepts carry a name ("rule of sum", "Fermat's little theorem").
        BRIGHT's theorem documents also lead with the theorem's name, and a name is the part a
        lexical or dense retriever can match against a query that mentions the technique, so
        it is kept; the name is used verbatim (CHAMP writes most names in lower case).
        """
        return f"{self.name}: {self.text}" if self.name else self.text


@dataclass(frozen=True)
class ChampProblem:
    """One competition problem; ``concept_ids`` are its gold concepts, unique and in CHAMP order."""

    problem_id: str
    text: str
    answer: str
    category: str
    concept_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ChampData:
    """All problems and concepts in CHAMP's own order."""

    problems: list[ChampProblem]
    concepts: list[ChampConcept]
    version: str = CHAMP_VERSION

    def problem(self, problem_id: str) -> ChampProblem:
        for problem in self.problems:
            if problem.problem_id == problem_id:
                return problem
        raise KeyError(f"CHAMP {self.version} has no problem {problem_id!r}")

    def concept(self, concept_id: str) -> ChampConcept:
        for concept in self.concepts:
            if concept.concept_id == concept_id:
                return concept
        raise KeyError(f"CHAMP {self.version} has no concept {concept_id!r}")

    def stats(self) -> dict[str, float | int]:
        """Counts the demo's retrieval set depends on (logged at load, asserted by tests)."""
        linked = [p for p in self.problems if p.concept_ids]
        n_links = sum(len(p.concept_ids) for p in linked)
        used = {cid for p in linked for cid in p.concept_ids}
        return {
            "problems": len(self.problems),
            "concepts": len(self.concepts),
            "linked_problems": len(linked),
            "links": n_links,
            "mean_links_per_linked_problem": n_links / len(linked) if linked else 0.0,
            "mean_links_per_problem": n_links / len(self.problems) if self.problems else 0.0,
            "used_concepts": len(used),
        }


def champ_source_path(version: str = CHAMP_VERSION) -> Path:
    """The JSON file inside the installed ``champ-dataset`` package (used in messages and hashes)."""
    return Path(str(resources.files("champ_dataset") / "dataset_files" / f"{version}.json"))


def load_champ(version: str = CHAMP_VERSION) -> ChampData:
    """Read CHAMP through the package's typed loader and check its links.

    Raises ``FileNotFoundError`` when the package or version is missing and ``ValueError``
    when a problem links a concept that is not in the dataset.
    """
    source = champ_source_path(version)
    if not source.is_file():
        raise FileNotFoundError(f"CHAMP {version} not found at {source}; install it with `pip install champ-dataset`")
    import champ_dataset  # deferred: parsing the 72 MB file takes seconds

    dataset = champ_dataset.load(version)
    concepts = [
        ChampConcept(concept_id=c.identifier, text=c.text, category=c.category, name=c.name or None)
        for c in dataset.concepts.values()
    ]
    known = {c.concept_id for c in concepts}
    problems: list[ChampProblem] = []
    for p in dataset.problems.values():
        concept_ids = list(dict.fromkeys(ch for ch in p.ch_list if ch.startswith(CONCEPT_PREFIX)))
        missing = [cid for cid in concept_ids if cid not in known]
        if missing:
            raise ValueError(f"{source}: problem {p.identifier} ch_list links unknown concepts {missing}")
        problems.append(
            ChampProblem(
                problem_id=p.identifier,
                text=p.text,
                answer=p.answer,
                category=p.category,
                concept_ids=concept_ids,
            )
        )
    data = ChampData(problems=problems, concepts=concepts, version=version)
    _check_unique_ids(data, source)
    stats = data.stats()
    logger.info(
        "loaded CHAMP %s: %d problems (%d link a concept, %d links), %d concepts (%d linked)",
        version,
        stats["problems"],
        stats["linked_problems"],
        stats["links"],
        stats["concepts"],
        stats["used_concepts"],
    )
    return data


def _check_unique_ids(data: ChampData, source: Path) -> None:
    for kind, ids in (
        ("problem", [p.problem_id for p in data.problems]),
        ("concept", [c.concept_id for c in data.concepts]),
    ):
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"{source}: duplicate {kind} ids {dupes[:5]}")


def example_record(problem: ChampProblem) -> dict[str, Any]:
    """A BRIGHT ``examples`` row for one problem (CHAMP has no GPT-4 reasoning or long docs)."""
    return {
        "id": problem.problem_id,
        "query": problem.text,
        "reasoning": "",
        "gold_ids": list(problem.concept_ids),
        "gold_ids_long": ["N/A"],
        "excluded_ids": [],
        "gold_answer": problem.answer,
        "category": problem.category,
    }


def document_record(concept: ChampConcept) -> dict[str, str]:
    """A BRIGHT ``documents`` row for one concept."""
    return {"id": concept.concept_id, "content": concept.document_text}


def _jsonl_bytes(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records).encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _export_is_current(out_dir: Path, payloads: dict[str, bytes]) -> bool:
    """True when the marker and both files already hold exactly ``payloads``."""
    marker_path = out_dir / MARKER_NAME
    if not marker_path.is_file():
        return False
    try:
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        logger.warning("%s is unreadable; re-exporting CHAMP", marker_path)
        return False
    expected = {rel: _sha256(data) for rel, data in payloads.items()}
    if not isinstance(marker, dict) or marker.get("files") != expected:
        return False
    for rel, digest in expected.items():
        path = out_dir / rel
        if not path.is_file() or _sha256(path.read_bytes()) != digest:
            logger.warning("%s differs from its export marker; re-exporting CHAMP", path)
            return False
    return True


def export_champ_mirror(out_dir: Path, data: ChampData | None = None) -> Path:
    """Write CHAMP as BRIGHT mirror files under ``out_dir`` and return ``out_dir``.

    Idempotent: when ``rader_champ_export.json`` already records the same content hashes and
    the files match them, nothing is written. Each file is written atomically and the marker
    last, so a killed export is redone on the next call.
    """
    out_dir = Path(out_dir)
    data = data if data is not None else load_champ()
    examples_rel = f"examples/{TASK_NAME}.jsonl"
    documents_rel = f"documents/{TASK_NAME}.jsonl"
    payloads = {
        examples_rel: _jsonl_bytes([example_record(p) for p in data.problems]),
        documents_rel: _jsonl_bytes([document_record(c) for c in data.concepts]),
    }
    if _export_is_current(out_dir, payloads):
        logger.info("CHAMP mirror at %s is up to date", out_dir)
        return out_dir
    for rel, payload in payloads.items():
        atomic_write_bytes(out_dir / rel, payload)
    marker = {
        "schema_version": MARKER_SCHEMA_VERSION,
        "task": TASK_NAME,
        "source": {"package": "champ-dataset", "version": data.version},
        "counts": {"examples": len(data.problems), "documents": len(data.concepts)},
        "files": {rel: _sha256(payload) for rel, payload in payloads.items()},
    }
    atomic_write_json(out_dir / MARKER_NAME, marker)
    logger.info("exported CHAMP to %s: %d examples, %d documents", out_dir, len(data.problems), len(data.concepts))
    return out_dir


def prepare_champ_mirror(assets_dir: Path | None = None) -> Path:
    """Export CHAMP under ``<assets_dir>/bright_mirror/`` (default: settings' assets dir)."""
    if assets_dir is None:
        from models.settings import load_settings

        assets_dir = load_settings().assets_dir
    return export_champ_mirror(Path(assets_dir) / "bright_mirror")


def source_with_champ(source: str, split: str) -> str:
    """``source`` unchanged, except that split ``champ`` falls back to the embedded CHAMP mirror
    when ``source`` (a Hub name, a mirror directory or a file) does not hold it."""
    if split == "champ" and not any((Path(source) / "documents").glob("champ.jsonl*")):
        return str(prepare_champ_mirror())
    return source
