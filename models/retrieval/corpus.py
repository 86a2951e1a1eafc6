"""Corpora and BRIGHT query examples from the Hub, a local JSONL mirror, or one JSONL/JSON file.

Owns the step from stored rows to :class:`Corpus` (document ids and texts in dataset order, the order
every index and embedding cache follows) and :class:`Example` (one query with its gold and excluded
ids). Ids are always the dataset's own strings, never row numbers (DESIGN.md §3, Corpus).

Sources (the ``source`` argument):

* ``"hf"`` — the Hub dataset ``xlangai/BRIGHT`` through ``datasets.load_dataset(repo, config, split=...,
  revision=...)``; ``datasets`` itself honours ``HF_HOME`` / ``HF_DATASETS_CACHE`` and offline mode
  (``HF_HUB_OFFLINE=1``). Stages pin the revision (:data:`BRIGHT_REVISION`, ``--bright_revision``).
* ``"hf:<repo id or directory>"`` — the same code path for another repo or a local copy: a directory laid
  out like the Hub repo (``README.md`` with ``configs`` + ``<config>/<split>-*.parquet``), or one where
  ``<dir>/<config>/`` was written by ``DatasetDict.save_to_disk`` (read with ``load_from_disk``).
* a directory — a local mirror ``<dir>/<config>/<split>.jsonl`` or ``.jsonl.gz`` (e.g.
  ``<dir>/examples/aops.jsonl.gz``, ``<dir>/documents/aops.jsonl.gz``, ``<dir>/gpt4_reason/aops.jsonl``).
* a file — ``.jsonl`` / ``.jsonl.gz`` (one record per line) or ``.json`` (a list of records).

Configs: ``documents`` (or ``long_documents`` with ``long_context=True``) for corpora; ``examples`` for
queries, plus a reasoning config (``gpt4_reason`` …) whose ``query`` replaces the original one by id
(specs/evaluation.md §1.1, §2.2).

Usage::

    corpus = load_corpus("hf", "biology", revision=BRIGHT_REVISION)
    examples = load_examples("/data/bright", "biology", query_type="gpt4_reason")
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.io_utils import read_jsonl

logger = logging.getLogger(__name__)

BRIGHT_HF_REPO = "xlangai/BRIGHT"
# The xlangai/BRIGHT commit the stages load unless --bright_revision says otherwise: the one mteb's per-split
# BRIGHT tasks pin. Revisions differ in corpus size (aops / theoremqa_questions 188,002 vs 188,177 documents,
# specs/evaluation.md §10.16), which moves BM25 weights, the embedding caches and the hybrid, so every run
# records the revision it loaded and the corpus size it saw.
BRIGHT_REVISION = "3066d29c9651a576c8aba4832d249807b181ecae"
# The 12 BRIGHT tasks; each config's splits are these names (specs/evaluation.md §1.2).
BRIGHT_SPLITS = (
    "biology",
    "earth_science",
    "economics",
    "psychology",
    "robotics",
    "stackoverflow",
    "sustainable_living",
    "leetcode",
    "pony",
    "aops",
    "theoremqa_questions",
    "theoremqa_theorems",
)
# Splits that have a `long_documents` config (specs/evaluation.md §1.1).
LONG_DOCUMENT_SPLITS = (
    "biology",
    "earth_science",
    "economics",
    "psychology",
    "robotics",
    "stackoverflow",
    "sustainable_living",
    "pony",
)
# LLM-reasoning query configs: same rows as `examples`, `query` holds the generated reasoning (§1.1).
REASONING_QUERY_TYPES = (
    "gpt4_reason",
    "llama3-70b_reason",
    "claude-3-opus_reason",
    "grit_reason",
    "Gemini-1.0_reason",
)
QUERY_TYPES = ("original", *REASONING_QUERY_TYPES)

# BRIGHT's "no value" marker in id lists: excluded_ids == ["N/A"] means "exclude nothing" and
# gold_ids_long == ["N/A"] means "this split has no long documents" (specs/evaluation.md §1.1, §2.2).
NA = "N/A"

_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")


@dataclass(frozen=True)
class Corpus:
    """Documents in dataset order; ``doc_ids[i]`` is the id of ``texts[i]``.

    ``name`` labels caches and logs (``biology``, ``biology_long``, a file's stem); ``source`` says where
    the rows came from and is only used in messages. Empty texts are allowed (BRIGHT has some).
    """

    name: str
    doc_ids: list[str] = field(repr=False)
    texts: list[str] = field(repr=False)
    source: str = field(default="", compare=False)
    _positions: dict[str, int] = field(init=False, repr=False, compare=False)
    _fingerprint: str | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"corpus {self.name!r}" + (f" from {self.source}" if self.source else "")
        if len(self.doc_ids) != len(self.texts):
            raise ValueError(f"{where}: {len(self.doc_ids)} ids but {len(self.texts)} texts")
        for i, (doc_id, text) in enumerate(zip(self.doc_ids, self.texts, strict=True)):
            if not isinstance(doc_id, str) or not isinstance(text, str):
                raise ValueError(
                    f"{where}: document {i} has id {type(doc_id).__name__} and text {type(text).__name__}; "
                    "both must be str"
                )
        positions = {doc_id: i for i, doc_id in enumerate(self.doc_ids)}
        if len(positions) != len(self.doc_ids):
            duplicated = [doc_id for doc_id, n in Counter(self.doc_ids).items() if n > 1]
            raise ValueError(
                f"{where}: {len(duplicated)} document ids occur more than once (first: {duplicated[:5]}); "
                "ids must be unique — deduplicate the source or pick another id field"
            )
        object.__setattr__(self, "_positions", positions)

    def __len__(self) -> int:
        return len(self.doc_ids)

    def fingerprint(self) -> str:
        """sha256 over ids and texts in order; caches compare it to refuse stale indexes.

        Each string is length-prefixed so that no two different corpora hash alike; the name and
        source are not hashed, so the same documents loaded from the Hub or a mirror match.
        """
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for doc_id, text in zip(self.doc_ids, self.texts, strict=True):
                for value in (doc_id, text):
                    data = value.encode("utf-8")
                    digest.update(struct.pack("<Q", len(data)))
                    digest.update(data)
            # Frozen dataclass: computed once on demand (hashing 400k documents takes a second).
            object.__setattr__(self, "_fingerprint", digest.hexdigest())
        return self._fingerprint

    def index_of(self, doc_id: str) -> int:
        """Row of ``doc_id``; ``KeyError`` naming the corpus if it is not there."""
        try:
            return self._positions[doc_id]
        except KeyError:
            raise KeyError(f"document id {doc_id!r} is not in corpus {self.name!r} ({len(self)} documents)") from None

    def text_of(self, doc_id: str) -> str:
        return self.texts[self.index_of(doc_id)]

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._positions


@dataclass(frozen=True)
class Example:
    """One BRIGHT query with its labels, ``"N/A"`` placeholders removed from the id lists.

    ``excluded_ids`` drops every ``"N/A"`` (BRIGHT skips that literal when removing excluded documents)
    and ``gold_ids_long`` drops it too (``["N/A"]`` marks splits without long documents), so both lists
    can be used as plain id sets. ``gold_answer`` and ``reasoning`` keep ``"N/A"`` verbatim (aops,
    leetcode, pony and TheoremQA answers; pony reasoning): the spec gives them no special meaning.
    Lists otherwise keep the dataset's order and duplicates (theoremqa_questions repeats gold ids; build
    qrels as a set).
    """

    query_id: str
    query: str
    gold_ids: list[str]
    excluded_ids: list[str] = field(default_factory=list)
    gold_answer: str = ""
    reasoning: str = ""
    gold_ids_long: list[str] = field(default_factory=list)


def corpus_name(source: str | Path, split: str | None, long_context: bool = False) -> str:
    """The name :func:`load_corpus` gives a corpus (caches are named after it), without loading it."""
    if str(source) not in ("hf",) and not str(source).startswith("hf:") and Path(source).is_file():
        return split or _file_stem(Path(source))
    return f"{split}_long" if long_context else str(split)


def load_corpus(
    source: str | Path,
    split: str | None = None,
    long_context: bool = False,
    *,
    id_field: str = "id",
    text_field: str = "content",
    revision: str | None = None,
    cache_dir: str | None = None,
) -> Corpus:
    """Read a corpus in dataset order from ``source`` (see the module docstring).

    ``split`` is required for Hub and mirror sources; for a file it only names the corpus.
    ``long_context`` selects the ``long_documents`` config. ``revision`` pins a Hub revision and
    ``cache_dir`` overrides the ``datasets`` cache (defaults come from ``HF_HOME``).
    """
    config = "long_documents" if long_context else "documents"
    rows, where, file_source = _load_rows(source, config, split, revision=revision, cache_dir=cache_dir)
    doc_ids: list[str] = []
    texts: list[str] = []
    for row_no, row in enumerate(rows, start=1):
        doc_ids.append(_id_value(row, id_field, where, row_no))
        texts.append(_str_value(row, text_field, where, row_no, fix="pass text_field=<the field with the text>"))
    name = corpus_name(source, split, long_context) if not file_source else (split or _file_stem(Path(source)))
    corpus = Corpus(name=name, doc_ids=doc_ids, texts=texts, source=where)
    logger.info("loaded corpus %s: %d documents from %s", corpus.name, len(corpus), where)
    return corpus


def load_examples(
    source: str | Path,
    split: str | None = None,
    query_type: str = "original",
    *,
    revision: str | None = None,
    cache_dir: str | None = None,
) -> list[Example]:
    """Read a split's examples; reasoning query types swap in their config's ``query`` by query id.

    BRIGHT loads the whole example from the ``<query_type>`` config; its ids, gold and excluded ids are
    the same as ``examples`` (specs/evaluation.md §1.1), so we keep the ``examples`` labels and take only
    ``query`` from the reasoning config. That also works for a mirror whose reasoning files hold just
    ``id`` and ``query``; differing labels in a full reasoning row are logged as a warning.
    """
    if query_type not in QUERY_TYPES:
        raise ValueError(f"unknown query_type {query_type!r}; choose one of {list(QUERY_TYPES)}")
    rows, where, file_source = _load_rows(source, "examples", split, revision=revision, cache_dir=cache_dir)
    examples = [_example_from_row(row, where, row_no) for row_no, row in enumerate(rows, start=1)]
    _check_unique_query_ids(examples, where)
    if query_type != "original":
        if file_source:
            raise ValueError(
                f"query_type {query_type!r} needs a source with configs (hf, hf:<dir> or a mirror directory), "
                f"not the single file {where}; put the reasoning text in the file's `query` field instead"
            )
        examples = _replace_queries(examples, source, split, query_type, revision=revision, cache_dir=cache_dir)
    for example in examples:
        overlap = set(example.gold_ids) & set(example.excluded_ids)
        if overlap:
            # BRIGHT asserts this too (specs/evaluation.md §2.2 step 4): an excluded gold doc could never be found.
            raise ValueError(
                f"{where}: query {example.query_id!r} lists {sorted(overlap)[:5]} in both gold_ids and excluded_ids"
            )
    logger.info("loaded %d examples (%s queries) from %s", len(examples), query_type, where)
    return examples


def _replace_queries(
    examples: list[Example],
    source: str | Path,
    split: str | None,
    query_type: str,
    *,
    revision: str | None,
    cache_dir: str | None,
) -> list[Example]:
    rows, where, _ = _load_rows(source, query_type, split, revision=revision, cache_dir=cache_dir)
    queries: dict[str, str] = {}
    labels: dict[str, Example] = {}
    for row_no, row in enumerate(rows, start=1):
        query_id = _id_value(row, "id", where, row_no)
        if query_id in queries:
            raise ValueError(f"{where}: query id {query_id!r} occurs more than once (row {row_no})")
        queries[query_id] = _str_value(row, "query", where, row_no, fix="each row needs `id` and `query`")
        if "gold_ids" in row:
            labels[query_id] = _example_from_row(row, where, row_no)
    missing = [example.query_id for example in examples if example.query_id not in queries]
    if missing:
        raise ValueError(
            f"{where} has no {query_type} query for {len(missing)} of {len(examples)} examples "
            f"(first: {missing[:5]}); the reasoning config must cover every query id of `examples`"
        )
    extra = len(set(queries) - {example.query_id for example in examples})
    if extra:
        logger.warning("%s: %d query ids are not in `examples` and are ignored", where, extra)
    differing = sum(
        1
        for example in examples
        if example.query_id in labels
        and (
            set(labels[example.query_id].gold_ids) != set(example.gold_ids)
            or set(labels[example.query_id].excluded_ids) != set(example.excluded_ids)
        )
    )
    if differing:
        logger.warning(
            "%s: %d examples have gold/excluded ids that differ from `examples`; using the `examples` labels",
            where,
            differing,
        )
    return [dataclasses.replace(example, query=queries[example.query_id]) for example in examples]


def _check_unique_query_ids(examples: list[Example], where: str) -> None:
    counts = Counter(example.query_id for example in examples)
    duplicated = [query_id for query_id, n in counts.items() if n > 1]
    if duplicated:
        raise ValueError(f"{where}: query ids occur more than once (first: {duplicated[:5]}); ids must be unique")


def _example_from_row(row: dict[str, Any], where: str, row_no: int) -> Example:
    """Unknown fields are ignored (BRIGHT is external and has gained fields over time)."""
    fix = "examples need `id`, `query` and `gold_ids`"
    return Example(
        query_id=_id_value(row, "id", where, row_no),
        query=_str_value(row, "query", where, row_no, fix=fix),
        gold_ids=_id_list(row, "gold_ids", where, row_no, required=True),
        excluded_ids=_without_na(_id_list(row, "excluded_ids", where, row_no)),
        gold_answer=_str_value(row, "gold_answer", where, row_no, fix=fix, default=""),
        reasoning=_str_value(row, "reasoning", where, row_no, fix=fix, default=""),
        gold_ids_long=_without_na(_id_list(row, "gold_ids_long", where, row_no)),
    )


def _without_na(ids: list[str]) -> list[str]:
    return [i for i in ids if i != NA] if NA in ids else ids


def _missing_field(row: dict[str, Any], name: str, where: str, row_no: int, fix: str) -> ValueError:
    return ValueError(f"{where} record {row_no} has no field {name!r} (fields: {sorted(row)}); {fix}")


def _id_value(row: dict[str, Any], name: str, where: str, row_no: int) -> str:
    if name not in row:
        raise _missing_field(row, name, where, row_no, fix="pass id_field=<the field with the id>")
    value = row[name]
    # Integer ids (common in other JSONL corpora) become their decimal string; anything else is an error.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"{where} record {row_no}: field {name!r} must be a string id, got {type(value).__name__}")
    return value


def _str_value(row: dict[str, Any], name: str, where: str, row_no: int, *, fix: str, default: str | None = None) -> str:
    if name not in row:
        if default is not None:
            return default
        raise _missing_field(row, name, where, row_no, fix)
    value = row[name]
    if not isinstance(value, str):
        raise ValueError(f"{where} record {row_no}: field {name!r} must be a string, got {type(value).__name__}")
    return value


def _id_list(row: dict[str, Any], name: str, where: str, row_no: int, *, required: bool = False) -> list[str]:
    if name not in row:
        if required:
            raise _missing_field(row, name, where, row_no, fix="examples need `id`, `query` and `gold_ids`")
        return []
    value = row[name]
    if not isinstance(value, list):
        raise ValueError(f"{where} record {row_no}: field {name!r} must be a list of ids, got {type(value).__name__}")
    if set(map(type, value)) <= {str}:  # fast path: aops/theoremqa rows list thousands of excluded ids
        return list(value)
    out: list[str] = []
    for item in value:
        if isinstance(item, int) and not isinstance(item, bool):
            item = str(item)
        if not isinstance(item, str):
            raise ValueError(f"{where} record {row_no}: {name!r} holds a {type(item).__name__}, expected string ids")
        out.append(item)
    return out


# ---------------------------------------------------------------------------------------------- sources


def _load_rows(
    source: str | Path,
    config: str,
    split: str | None,
    *,
    revision: str | None,
    cache_dir: str | None,
) -> tuple[list[dict[str, Any]], str, bool]:
    """Rows of ``config``/``split`` from any source, a label for messages, and whether it was one file."""
    text = str(source)
    if text == "hf" or text.startswith("hf:"):
        repo = BRIGHT_HF_REPO if text == "hf" else text[3:]
        if not repo:
            raise ValueError("source 'hf:' needs a repo id or directory after the colon, e.g. 'hf:/data/BRIGHT'")
        _require_split(split, text)
        if Path(repo).exists():
            revision = None  # a local copy is whatever revision was copied; there is nothing to pin
        label = f"{repo}@{revision[:12]}" if revision else repo
        return (
            _hf_rows(repo, config, split, revision=revision, cache_dir=cache_dir),
            f"{label} [{config}/{split}]",
            False,
        )
    path = Path(source)
    if path.is_dir():
        _require_split(split, text)
        mirror_file = _mirror_file(path, config, split)
        return list(read_jsonl(mirror_file)), str(mirror_file), False
    if path.is_file():
        return _file_rows(path), str(path), True
    raise FileNotFoundError(
        f"source {text!r} is neither 'hf', 'hf:<repo or dir>', an existing mirror directory nor an existing "
        f"JSONL/JSON file"
    )


def add_bright_revision_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, default: str) -> None:
    """``--bright_revision``, the same flag on every stage that loads BRIGHT (``default``: settings or the pin)."""
    parser.add_argument(
        "--bright_revision",
        default=default or BRIGHT_REVISION,
        help=f"xlangai/BRIGHT commit, branch or tag for 'hf' sources (default {BRIGHT_REVISION[:12]}, "
        "$BRIGHT_REVISION); local mirrors and 'hf:<dir>' copies ignore it",
    )


def resolve_revision(flag: str | None, recorded: dict[str, str | None]) -> str:
    """The revision a later stage loads: its ``--bright_revision`` if given, else the one its inputs recorded
    (``{input: revision}``; they must agree), else the pin. Inputs from before revisions were recorded say None."""
    if flag:
        return flag
    known = {where: rev for where, rev in recorded.items() if rev}
    if len(set(known.values())) > 1:
        listed = "; ".join(f"{where}: {rev}" for where, rev in known.items())
        raise ValueError(f"inputs were made from different BRIGHT revisions ({listed}); pass --bright_revision")
    return next(iter(known.values()), BRIGHT_REVISION)


def revision_applies(source: str | Path) -> bool:
    """Whether ``--bright_revision`` selects what ``source`` loads (a Hub repo id, not a local copy)."""
    text = str(source)
    if text == "hf":
        return True
    return text.startswith("hf:") and not Path(text[3:]).exists()


def _require_split(split: str | None, source: str) -> None:
    if not split:
        raise ValueError(f"source {source!r} has one split per task; pass split= (e.g. one of {list(BRIGHT_SPLITS)})")


def _hf_rows(
    repo: str, config: str, split: str, *, revision: str | None, cache_dir: str | None
) -> list[dict[str, Any]]:
    import datasets  # deferred: importing datasets takes about a second and mirrors do not need it

    saved = Path(repo) / config
    if (saved / "dataset_dict.json").is_file():
        dataset_dict = datasets.load_from_disk(str(saved))
        if split not in dataset_dict:
            raise FileNotFoundError(f"{saved} has no split {split!r} (splits: {sorted(dataset_dict)})")
        return dataset_dict[split].to_list()
    try:
        dataset = datasets.load_dataset(repo, config, split=split, revision=revision, cache_dir=cache_dir)
    except ValueError as err:
        message = str(err)
        if "Unknown split" in message or "not found" in message:  # datasets lists what exists
            raise FileNotFoundError(f"{repo}: no config/split {config}/{split}: {message}") from err
        raise ValueError(f"{repo} [{config}/{split}]: {message}") from err
    except (FileNotFoundError, ConnectionError) as err:
        raise FileNotFoundError(
            f"cannot load {repo} [{config}/{split}]: {err}. Offline? Point HF_HOME at a cache that holds it, "
            "or use a local mirror directory / 'hf:<dir>' source"
        ) from err
    return dataset.to_list()


def _mirror_file(root: Path, config: str, split: str) -> Path:
    config_dir = root / config
    if not config_dir.is_dir():
        configs = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise FileNotFoundError(
            f"mirror {root} has no config folder {config!r} (configs there: {configs}); expected "
            f"{config_dir}/{split}.jsonl or .jsonl.gz{_hf_layout_hint(root)}"
        )
    plain, gz = config_dir / f"{split}.jsonl", config_dir / f"{split}.jsonl.gz"
    if plain.is_file():
        if gz.is_file():
            logger.warning("both %s and %s exist; reading %s", plain.name, gz.name, plain)
        return plain
    if gz.is_file():
        return gz
    splits = sorted({_file_stem(p) for p in config_dir.iterdir() if p.name.endswith(_JSONL_SUFFIXES)})
    raise FileNotFoundError(
        f"mirror {config_dir} has no split {split!r} ({split}.jsonl[.gz]); splits there: {splits}"
        f"{_hf_layout_hint(root)}"
    )


def _hf_layout_hint(root: Path) -> str:
    """Point at the 'hf:' source when a directory holds a Hugging Face dataset instead of JSONL."""
    if any(root.glob("*/*.parquet")) or any(root.glob("*/dataset_dict.json")):
        return f"; {root} looks like a Hugging Face dataset directory: use source 'hf:{root}'"
    return ""


def _file_rows(path: Path) -> list[dict[str, Any]]:
    if path.name.endswith(_JSONL_SUFFIXES):
        return list(read_jsonl(path))
    if path.suffix == ".json":
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
            raise ValueError(f"{path} must hold a JSON list of objects (one per record)")
        return data
    raise ValueError(f"{path}: expected a .jsonl, .jsonl.gz or .json file")


def _file_stem(path: Path) -> str:
    name = path.name
    for suffix in (".jsonl.gz", ".jsonl", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
