"""Training records -> ``(query text, [passage texts])`` groups, exactly as Tevatron v2 samples them.

Owns loading (Hub id, local JSONL/JSON(.gz)/parquet file or directory, ``save_to_disk`` directory),
checking the record schema before any compute, group sampling (training.md §8.3) and text assembly
(§8.4). It never tokenises: that is :mod:`models.training.collator`'s job.

Record formats (§8.2), one JSON object per line::

    legacy (RaDeR): {"query_id": "q1", "query": "...",
                     "positive_passages": [{"docid": "7", "title": "", "text": "..."}],
                     "negative_passages": [{"docid": "9", "title": "", "text": "..."}, ...]}
    v2:             {"query_id": "q1", "query_text": "...",
                     "positive_document_ids": ["7"], "negative_document_ids": ["9", ...]}
                    + a corpus (--corpus_name/--corpus_path) of {"docid", "text", "title"?} rows

Group for item ``i`` (§8.3): positive = ``positives[(hash(i + seed) + epoch) % n_pos]`` first, then G-1
negatives: a seeded shuffle read through an epoch-rotating window, or ``random.choices`` (with
replacement) when there are fewer than G-1. Text: ``query_prefix + query``; ``passage_prefix + title + " "
+ text`` when the passage has a title key, else ``passage_prefix + text`` (no strip, as in training).

Usage::

    records = load_train_records(data_args)
    dataset = TrainDataset(records, data_args, text_args, seed=42)
    dataset.set_trainer(trainer)            # the epoch comes from trainer.state.epoch
    query, passages = dataset[0]
    reranker_groups = RerankerTrainDataset(records, data_args, seed=42)   # (query, [(title, text), ...])
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from torch.utils.data import Dataset

from models.training.arguments import DataArguments, TextArguments

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

T = TypeVar("T")
LEGACY_COLUMNS = ("query", "positive_passages", "negative_passages")
V2_COLUMNS = ("query_text", "positive_document_ids", "negative_document_ids")
_DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


# ------------------------------------------------------------------------------------------------ loading


def _builder_for(path: Path) -> str:
    """``json`` or ``parquet`` from a file name (``.gz`` allowed for JSON)."""
    name = path.name[: -len(".gz")] if path.name.endswith(".gz") else path.name
    builder = _DATA_SUFFIXES.get(Path(name).suffix)
    if builder is None:
        raise ValueError(f"{path}: cannot tell the format; use .jsonl, .json, .jsonl.gz, .json.gz or .parquet")
    return builder


def _load_local(path: Path, split: str, cache_dir: str | None, num_proc: int) -> datasets.Dataset:
    import datasets

    if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"{path} holds splits {sorted(loaded)}; pass --dataset_split one of them")
            return loaded[split]
        return loaded
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        files = [p for p in files if p.suffix in (".jsonl", ".json", ".parquet", ".gz")]
        if not files:
            raise FileNotFoundError(f"{path} holds no .jsonl/.json(.gz)/.parquet files and no saved dataset")
        builders = {_builder_for(p) for p in files}
        if len(builders) > 1:
            raise ValueError(f"{path} mixes JSON and parquet files; keep one format per directory")
        builder = builders.pop()
        data_files = [str(p) for p in files]
    elif path.is_file():
        builder, data_files = _builder_for(path), [str(path)]
    else:
        raise FileNotFoundError(f"dataset path {path} does not exist")
    # Local data files always form the builder's single "train" split.
    return datasets.load_dataset(builder, data_files=data_files, split="train", cache_dir=cache_dir, num_proc=num_proc)


def load_dataset_source(
    name: str | None, config: str | None, path: str | None, split: str, cache_dir: str | None, num_proc: int = 1
) -> datasets.Dataset:
    """One split from a local path (``path``, or ``name`` if it is an existing path) or the Hub (``name``)."""
    import datasets

    if path:
        if name not in (None, "json", "parquet"):
            logger.info("--dataset_path given: reading %s and ignoring dataset_name %r", path, name)
        return _load_local(Path(path), split, cache_dir, num_proc)
    if not name or name in ("json", "parquet"):
        raise ValueError("no training data: pass --dataset_path FILE_OR_DIR or --dataset_name HUB_ID_OR_PATH")
    if Path(name).exists():
        return _load_local(Path(name), split, cache_dir, num_proc)
    return datasets.load_dataset(name, config, split=split, cache_dir=cache_dir, num_proc=num_proc)


def load_train_records(data_args: DataArguments) -> datasets.Dataset:
    """The training records, sharded if asked, with their schema and negative counts checked."""
    records = load_dataset_source(
        data_args.dataset_name,
        data_args.dataset_config,
        data_args.dataset_path,
        data_args.dataset_split,
        data_args.dataset_cache_dir,
        data_args.num_proc,
    )
    if data_args.dataset_number_of_shards > 1:
        records = records.shard(num_shards=data_args.dataset_number_of_shards, index=data_args.dataset_shard_index)
    source = data_args.dataset_path or data_args.dataset_name
    record_format(records.column_names, source)
    return check_group_counts(records, data_args.train_group_size, data_args.zero_negatives, source)


def record_format(columns: Sequence[str], source: str | None = None) -> str:
    """``legacy`` or ``v2`` from the column names; an error names what is missing."""
    if "positive_passages" in columns:
        missing = [c for c in LEGACY_COLUMNS if c not in columns]
        if missing:
            raise ValueError(f"{source}: legacy Tevatron records need columns {list(LEGACY_COLUMNS)}; missing {missing}")
        return "legacy"
    if "positive_document_ids" in columns:
        missing = [c for c in V2_COLUMNS if c not in columns]
        if missing:
            raise ValueError(f"{source}: v2 Tevatron records need columns {list(V2_COLUMNS)}; missing {missing}")
        return "v2"
    raise ValueError(
        f"{source}: not a Tevatron training set (columns {sorted(columns)}); expected {list(LEGACY_COLUMNS)} "
        f"or {list(V2_COLUMNS)} (see models/training/dataset.py)"
    )


def _list_lengths(records: datasets.Dataset, column: str, source: str | None) -> list[int]:
    """Per-row lengths of a list column, read as Arrow slices without decoding the passage texts."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lengths: list[int] = []
    view = records.select_columns([column]).with_format("arrow")
    for batch in view.iter(batch_size=50_000):
        array = batch.column(column)
        if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
            raise ValueError(
                f"{source}: column {column!r} has type {array.type}, not a list; lists stored as JSON strings "
                "(e.g. from a CSV export) must be parsed into real lists first"
            )
        lengths.extend(pc.list_value_length(array).fill_null(0).to_pylist())
    return lengths


def check_group_counts(records: datasets.Dataset, group_size: int, policy: str, source: str | None) -> datasets.Dataset:
    """Refuse (or, with ``policy='drop'``, remove) records that cannot form a group.

    A record needs at least one positive, and at least one negative when ``group_size > 1``: Tevatron
    samples from an empty negative list and crashes mid-run (training.md §5.3).
    """
    fmt = record_format(records.column_names, source)
    pos_col, neg_col = ("positive_passages", "negative_passages") if fmt == "legacy" else V2_COLUMNS[1:]
    n_pos = _list_lengths(records, pos_col, source)
    n_neg = _list_lengths(records, neg_col, source)
    bad = [i for i, (p, n) in enumerate(zip(n_pos, n_neg, strict=True)) if p == 0 or (group_size > 1 and n == 0)]
    short = sum(1 for n in n_neg if 0 < n < group_size - 1)
    if short:
        logger.info(
            "%d of %d records have fewer than %d negatives; their groups repeat negatives (sampled with replacement)",
            short,
            len(records),
            group_size - 1,
        )
    if not bad:
        return records
    if policy == "error":
        raise ValueError(
            f"{source}: {len(bad)} of {len(records)} records have no positive or no negative passage "
            f"(rows {bad[:10]}{' ...' if len(bad) > 10 else ''}); train_group_size {group_size} needs both. "
            "Fix the data, or pass --zero_negatives drop to skip them"
        )
    bad_set = set(bad)
    logger.warning("dropping %d of %d records without a positive or without negatives", len(bad), len(records))
    return records.select([i for i in range(len(records)) if i not in bad_set])


def load_corpus_lookup(data_args: DataArguments) -> tuple[datasets.Dataset, dict[str, int]]:
    """v2 records: the corpus rows and a ``docid -> row`` map built once at start-up."""
    if not (data_args.corpus_name or data_args.corpus_path):
        raise ValueError("v2 records (positive_document_ids) need a corpus: pass --corpus_path or --corpus_name")
    corpus = load_dataset_source(
        data_args.corpus_name,
        data_args.corpus_config,
        data_args.corpus_path,
        data_args.corpus_split,
        data_args.dataset_cache_dir,
        data_args.num_proc,
    )
    id_column = "docid" if "docid" in corpus.column_names else "doc_id"
    if id_column not in corpus.column_names or "text" not in corpus.column_names:
        raise ValueError(f"corpus {data_args.corpus_path or data_args.corpus_name} needs 'docid' and 'text' columns")
    lookup = {str(docid): row for row, docid in enumerate(corpus[id_column])}
    return corpus, lookup


# ------------------------------------------------------------------------------------------------ sampling


def sample_group(
    positives: Sequence[T],
    negatives: Sequence[T],
    item: int,
    seed: int,
    epoch: int,
    group_size: int,
    *,
    short_rng: str = "global",
    positive_no_shuffle: bool = False,
    negative_no_shuffle: bool = False,
) -> list[T]:
    """``[positive, negative_1, ..., negative_{G-1}]`` for dataset item ``item`` (training.md §8.3).

    ``short_rng='global'`` draws short lists with ``random.choices`` on the module RNG, as Tevatron does
    (HF's ``set_seed`` seeds it; the result depends on the order items are read). ``'seeded'`` uses an RNG
    keyed by ``(item, seed, epoch)`` instead, so a resumed run draws the same groups. The ``*_no_shuffle``
    switches are Tevatron's reranker options.
    """
    if not positives:
        raise ValueError(f"item {item} has no positive passage")
    hashed = hash(item + seed)  # Python's int hash: the int itself for 0 <= x < 2**61 - 1
    positive = positives[0] if positive_no_shuffle else positives[(hashed + epoch) % len(positives)]
    n_neg = group_size - 1
    if len(negatives) < n_neg:
        if not negatives:
            raise ValueError(f"item {item} has no negative passage but train_group_size is {group_size}")
        rng: Any = random if short_rng == "global" else random.Random(f"{item}:{seed}:{epoch}")
        chosen = rng.choices(negatives, k=n_neg)
    elif group_size == 1:
        chosen = []
    elif negative_no_shuffle:
        chosen = list(negatives[:n_neg])
    else:
        offset = (epoch * n_neg) % len(negatives)
        shuffled = list(negatives)
        random.Random(hashed).shuffle(shuffled)
        shuffled = shuffled * 2
        chosen = shuffled[offset : offset + n_neg]
    return [positive, *chosen]


def format_query(query: str, prefix: str) -> str:
    """``prefix + query``, unstripped (Tevatron v2 training)."""
    return prefix + query


def format_passage(passage: dict[str, Any], prefix: str) -> str:
    """``prefix + title + " " + text`` when the passage has a title, else ``prefix + text``.

    With ``title == ""`` the text starts with a space, as in Tevatron. A ``None`` title (what datasets
    fills in when only some rows have the key) counts as no title.
    """
    text = passage.get("text")
    if not isinstance(text, str):
        raise ValueError(f"passage {passage.get('docid', passage.get('doc_id'))!r} has no 'text' string")
    title = passage.get("title")
    return prefix + (f"{title} {text}" if isinstance(title, str) else text)


# ------------------------------------------------------------------------------------------------ dataset


class TrainDataset(Dataset):
    """Map-style dataset of ``(query text, [G passage texts])``, positive first."""

    def __init__(
        self,
        records: datasets.Dataset,
        data_args: DataArguments,
        text_args: TextArguments,
        seed: int,
        corpus: tuple[datasets.Dataset, dict[str, int]] | None = None,
        *,
        honour_no_shuffle: bool = False,
    ) -> None:
        self.records = records
        self.data_args = data_args
        self.text_args = text_args
        self.seed = seed
        self.format = record_format(records.column_names)
        if self.format == "v2" and corpus is None:
            raise ValueError("v2 records need the corpus (load_corpus_lookup)")
        self.corpus = corpus
        self.honour_no_shuffle = honour_no_shuffle
        if not honour_no_shuffle and (data_args.positive_passage_no_shuffle or data_args.negative_passage_no_shuffle):
            logger.warning("--*_passage_no_shuffle only affect the reranker; the retriever samples as Tevatron does")
        self._epoch_source: Callable[[], float | None] = lambda: 0
        self.trainer: Any = None

    def set_trainer(self, trainer: Any) -> None:
        """Read the epoch from ``trainer.state.epoch`` (Tevatron's ``dataset.trainer = trainer``)."""
        self.trainer = trainer
        self._epoch_source = lambda: trainer.state.epoch

    def set_epoch(self, epoch: int) -> None:
        """A fixed epoch, for use without a trainer (tests, offline inspection)."""
        self._epoch_source = lambda: epoch

    @property
    def epoch(self) -> int:
        return int(self._epoch_source() or 0)

    def __len__(self) -> int:
        return len(self.records)

    def _passages(self, row: dict[str, Any], key: str) -> list[dict[str, Any]]:
        if self.format == "legacy":
            return list(row[key] or [])
        corpus, lookup = self.corpus  # type: ignore[misc]
        out = []
        for docid in row[key] or []:
            if str(docid) not in lookup:
                raise KeyError(f"document id {docid!r} of query {row.get('query_id')!r} is not in the corpus")
            out.append(corpus[lookup[str(docid)]])
        return out

    def __getitem__(self, item: int) -> tuple[str, list[str]]:
        query, group = self.sample(item)
        prefix = self.text_args.passage_prefix
        return format_query(query, self.text_args.query_prefix), [format_passage(p, prefix) for p in group]

    def sample(self, item: int) -> tuple[str, list[dict[str, Any]]]:
        """The raw query and the passage rows of item ``item``'s group, positive first."""
        row = self.records[item]
        if self.format == "legacy":
            query, positives, negatives = row["query"], row["positive_passages"], row["negative_passages"]
        else:
            query = row["query_text"]
            positives = row["positive_document_ids"]
            negatives = row["negative_document_ids"]
        args = self.data_args
        group = sample_group(
            positives or [],
            negatives or [],
            item,
            self.seed,
            self.epoch,
            args.train_group_size,
            short_rng=args.short_negatives_rng,
            positive_no_shuffle=self.honour_no_shuffle and args.positive_passage_no_shuffle,
            negative_no_shuffle=self.honour_no_shuffle and args.negative_passage_no_shuffle,
        )
        if self.format == "v2":  # sample ids first, then look up only the chosen documents
            group = self._passages({"ids": group, "query_id": row.get("query_id")}, "ids")
        return query, group


class RerankerTrainDataset(TrainDataset):
    """Groups for the pointwise reranker: ``(query, [(title, text), ...])``, positive first (training.md §12.3).

    Sampling is the retriever's, with Tevatron's reranker-only ``--positive_passage_no_shuffle`` and
    ``--negative_passage_no_shuffle`` honoured. Texts stay raw: prefixes, the title and the separator are the
    model's pair format (``models.reranking.pointwise.format_pair``), the one inference uses too.
    """

    def __init__(
        self,
        records: datasets.Dataset,
        data_args: DataArguments,
        seed: int,
        corpus: tuple[datasets.Dataset, dict[str, int]] | None = None,
    ) -> None:
        # Prefixes belong to the reranker's pair format, so the text arguments here are the empty defaults.
        super().__init__(records, data_args, TextArguments(), seed, corpus, honour_no_shuffle=True)

    def __getitem__(self, item: int) -> tuple[str, list[tuple[str, str]]]:  # type: ignore[override]
        query, group = self.sample(item)
        return query, [passage_title_and_text(p) for p in group]


def passage_title_and_text(passage: dict[str, Any]) -> tuple[str, str]:
    """``(title or "", text)`` of a passage row; a missing or ``None`` title is empty."""
    text = passage.get("text")
    if not isinstance(text, str):
        raise ValueError(f"passage {passage.get('docid', passage.get('doc_id'))!r} has no 'text' string")
    title = passage.get("title")
    return (title if isinstance(title, str) else ""), text
