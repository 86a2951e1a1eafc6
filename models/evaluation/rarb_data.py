"""RAR-b task data (paper Table 3) for mteb: the pinned Hub datasets, or a local copy.

``get_task(name, data_dir)`` returns the mteb task with its data loaded: from the pinned Hub dataset
(``mteb/RARbMath`` rev ``cc879a9…``, ``mteb/RARbCode`` rev ``ed0a01c…``; the local HF cache when offline),
or from ``<data_dir>/<name>/`` in either layout:

* a copy of the Hub repo: ``README.md`` whose ``configs`` name ``corpus``, ``queries`` and
  ``default`` (qrels with ``query-id``, ``corpus-id``, ``score``) as JSON Lines or Parquet files;
* BEIR files, as the RAR-b release ships them: ``corpus.jsonl`` (``_id``, ``text``, optional
  ``title``), ``queries.jsonl`` (``_id``, ``text``) and ``qrels/test.tsv`` (header line, then
  ``query-id  corpus-id  score``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from models.io_utils import read_jsonl

logger = logging.getLogger(__name__)

RARB_TASKS = ("RARbMath", "RARbCode")
EVAL_SPLIT = "test"


def load_local_split(task_dir: Path, split: str = EVAL_SPLIT) -> dict[str, Any]:
    """mteb's ``RetrievalSplitData`` from a local task directory (Hub-repo copy or BEIR files).

    Files are read directly, not through ``datasets.load_dataset``: its cache of a local folder is
    keyed by the folder name and was seen to serve stale rows after the files changed.
    """
    if (task_dir / "README.md").is_file():
        corpus, queries, qrels = _hub_copy_rows(task_dir, split)
    elif (task_dir / "corpus.jsonl").is_file():
        corpus, queries, qrels = _beir_rows(task_dir, split)
    else:
        raise FileNotFoundError(
            f"{task_dir} holds neither a Hub-repo copy (README.md with configs corpus/queries/default) nor BEIR "
            "files (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)"
        )
    return _split_data(corpus, queries, qrels, str(task_dir))


Rows = list[dict[str, Any]]


def _beir_rows(task_dir: Path, split: str) -> tuple[Rows, Rows, Rows]:
    qrels_path = task_dir / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise FileNotFoundError(f"{qrels_path} is missing (BEIR layout: qrels/<split>.tsv)")
    qrels: Rows = []
    lines = qrels_path.read_text(encoding="utf-8").splitlines()
    for line_no, line in enumerate(lines[1:], start=2):  # line 1 is the header
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise ValueError(f"{qrels_path} line {line_no}: expected query-id<TAB>corpus-id<TAB>score, got {line!r}")
        qrels.append({"query-id": fields[0], "corpus-id": fields[1], "score": fields[2]})
    return list(read_jsonl(task_dir / "corpus.jsonl")), list(read_jsonl(task_dir / "queries.jsonl")), qrels


def _hub_copy_rows(task_dir: Path, split: str) -> tuple[Rows, Rows, Rows]:
    """Rows of the ``corpus``, ``queries`` and ``default`` (or ``qrels``) configs named in the README."""
    configs = _readme_configs(task_dir)
    qrels_config = "default" if "default" in configs else "qrels"
    missing = [name for name in ("corpus", "queries", qrels_config) if name not in configs]
    if missing:
        raise ValueError(f"{task_dir}/README.md names no config {missing}; found {sorted(configs)}")
    return tuple(_read_rows(task_dir, configs[name], split) for name in ("corpus", "queries", qrels_config))  # type: ignore[return-value]


def _readme_configs(task_dir: Path) -> dict[str, dict[str, list[str]]]:
    """``{config: {split: [path patterns]}}`` from the README's YAML front matter (Hub dataset-card format)."""
    import yaml

    text = (task_dir / "README.md").read_text(encoding="utf-8")
    parts = text.split("---", 2)
    if not text.startswith("---") or len(parts) < 3:
        raise ValueError(f"{task_dir}/README.md has no YAML front matter between '---' lines")
    configs: dict[str, dict[str, list[str]]] = {}
    for entry in (yaml.safe_load(parts[1]) or {}).get("configs", []):
        data_files = entry.get("data_files", [])
        if isinstance(data_files, str | list) and all(isinstance(f, str) for f in _as_list(data_files)):
            configs[entry["config_name"]] = {"train": _as_list(data_files)}
        else:
            configs[entry["config_name"]] = {f["split"]: _as_list(f["path"]) for f in data_files}
    return configs


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _read_rows(task_dir: Path, splits: dict[str, list[str]], split: str) -> Rows:
    """The rows of ``split`` (or of the only split there is), from JSON Lines or Parquet files."""
    if split not in splits and len(splits) != 1:
        raise ValueError(f"{task_dir}: split {split!r} not among {sorted(splits)}")
    patterns = splits.get(split) or next(iter(splits.values()))
    paths = sorted(p for pattern in patterns for p in task_dir.glob(pattern))
    if not paths:
        raise FileNotFoundError(f"{task_dir}: no file matches {patterns}")
    rows: Rows = []
    for path in paths:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows.extend(pq.read_table(path).to_pylist())
        else:
            rows.extend(read_jsonl(path))
    return rows


def _split_data(corpus_rows: Rows, query_rows: Rows, qrel_rows: Rows, where: str) -> dict[str, Any]:
    """mteb's split dict: string ids, ``{qid: {docid: score}}`` qrels, judged queries only."""
    from datasets import Dataset

    def row_id(row: dict[str, Any], what: str, i: int) -> str:
        value = row.get("_id", row.get("id"))
        if value is None or not isinstance(row.get("text"), str):
            raise ValueError(f"{where}: {what} row {i + 1} needs '_id' (or 'id') and a string 'text'")
        return str(value)

    qrels: dict[str, dict[str, int]] = {}
    for i, row in enumerate(qrel_rows):
        try:
            qrels.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = int(row["score"])
        except (KeyError, ValueError) as err:
            raise ValueError(f"{where}: qrels row {i + 1} needs query-id, corpus-id and an integer score") from err
    corpus_ids = [row_id(row, "corpus", i) for i, row in enumerate(corpus_rows)]
    corpus = Dataset.from_dict(
        {
            "id": corpus_ids,
            "title": [str(r.get("title") or "") for r in corpus_rows],
            "text": [r["text"] for r in corpus_rows],
        }
    )
    judged = [(row_id(row, "queries", i), row["text"]) for i, row in enumerate(query_rows)]
    judged = [(qid, text) for qid, text in judged if qid in qrels]
    queries = Dataset.from_dict({"id": [qid for qid, _ in judged], "text": [text for _, text in judged]})
    logger.info("%s: %d documents, %d judged queries", where, len(corpus), len(queries))
    return {"corpus": corpus, "queries": queries, "relevant_docs": qrels, "top_ranked": None}


def get_task(name: str, data_dir: str | None) -> Any:
    """The mteb task, with its data read from ``data_dir/<name>`` when given."""
    import mteb

    task = mteb.get_task(name)
    if data_dir:
        task.dataset = {"default": {EVAL_SPLIT: load_local_split(Path(data_dir) / name)}}
        task.data_loaded = True
        return task
    try:
        task.load_data()
    except (ConnectionError, FileNotFoundError) as err:
        dataset = task.metadata.dataset
        raise FileNotFoundError(
            f"{name}: cannot load {dataset['path']} (revision {dataset['revision']}) from the Hub or the local HF "
            f"cache ({err}); download it once online, or pass --data_dir with a local copy"
        ) from err
    return task
