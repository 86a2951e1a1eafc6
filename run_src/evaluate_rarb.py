"""Evaluate one dense encoder on RAR-b Math and Coding (paper Table 3) through the ``mteb`` package.

    python -m run_src.evaluate_rarb --model rader --model_path /models/merged_rader --output_dir outputs/rarb
    python -m run_src.evaluate_rarb --model minilm --tasks RARbMath --data_dir /data/rarb --output_dir outputs/rarb

Owns the orchestration of specs/evaluation.md §7: build the encoder (the same ``--model`` keys and
encoder flags as ``evaluate_bright``), wrap it for mteb (:mod:`models.mteb_wrapper`, which adds the
task instruction), point each task at its data, run ``mteb.evaluate`` and write the scores. mteb does
the retrieval (exact cosine over the whole pooled corpus, top 1000) and the metrics (pytrec_eval,
averaged over queries, as BRIGHT); the headline number is ``ndcg_at_10`` on the ``test`` split.

Data. Without ``--data_dir`` each task loads its pinned Hub dataset (``mteb/RARbMath`` rev
``cc879a9…``, ``mteb/RARbCode`` rev ``ed0a01c…``) through ``datasets``, which reads the local HF
cache when offline (``HF_DATASETS_OFFLINE=1``). With ``--data_dir DIR`` the task reads
``DIR/<task name>/`` instead, in either layout:

* a copy of the Hub repo: ``README.md`` whose ``configs`` name ``corpus``, ``queries`` and
  ``default`` (qrels with ``query-id``, ``corpus-id``, ``score``) as JSON Lines or Parquet files;
* BEIR files, as the RAR-b release ships them: ``corpus.jsonl`` (``_id``, ``text``, optional
  ``title``), ``queries.jsonl`` (``_id``, ``text``) and ``qrels/test.tsv`` (header line, then
  ``query-id  corpus-id  score``).

Output: ``<output_dir>/<model_name>/<task>/`` with ``config.json``, ``results.json`` (mteb's scores
for the test split, ``ndcg_at_10`` first) and, with ``--save_predictions``, ``predictions.json``
(``{qid: {docid: score}}``, top 1000, readable by :func:`models.metrics.read_run`);
``<output_dir>/<model_name>/rarb_summary.json`` maps each task to its nDCG@10. A task whose
``results.json`` exists with the same settings is skipped unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.encoders import BACKENDS, DTYPES, POOLINGS, EncoderConfig
from models.io_utils import atomic_write_json, read_jsonl
from models.settings import Settings, load_settings
from models.text_formats import PRESETS
from run_src.evaluate_bright import RETRIEVERS

logger = logging.getLogger(__name__)

CONFIG_SCHEMA_VERSION = 1
RARB_TASKS = ("RARbMath", "RARbCode")
EVAL_SPLIT = "test"
DENSE_MODELS = {name: spec for name, spec in RETRIEVERS.items() if spec.kind == "dense"}
NO_INSTRUCTION = "none"


@dataclass(frozen=True)
class RarbConfig:
    """Resolved settings of one RAR-b evaluation; each task's ``config.json`` holds these fields."""

    model: str
    model_name: str
    model_path: str
    tasks: tuple[str, ...]
    output_dir: str
    data_dir: str | None
    pooling: str
    text_format: str
    instruction_template: str | None
    query_max_len: int | None
    doc_max_len: int | None
    encode_batch_size: int
    dtype: str
    device: str
    encoder_backend: str
    encoder_url: str | None
    served_model_name: str | None
    save_predictions: bool
    overwrite: bool

    def task_dir(self, task: str) -> Path:
        return Path(self.output_dir) / self.model_name / task

    def encoder_config(self) -> EncoderConfig:
        return EncoderConfig(
            model_name_or_path=self.model_path,
            pooling=self.pooling,
            text_format=PRESETS[self.text_format],
            query_max_len=self.query_max_len,
            doc_max_len=self.doc_max_len,
            batch_size=self.encode_batch_size,
            dtype=self.dtype,
            device=self.device,
            backend=self.encoder_backend,
            server_url=self.encoder_url,
            served_model_name=self.served_model_name,
        )


# Settings that do not change the scores; a stored result may differ in them.
_INFORMATIONAL = frozenset(
    {"tasks", "output_dir", "data_dir", "encode_batch_size", "device", "encoder_backend", "encoder_url",
     "served_model_name", "save_predictions", "overwrite"}
)  # fmt: skip


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m run_src.evaluate_rarb", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        required=True,
        choices=sorted(DENSE_MODELS),
        help="dense retriever key: " + "; ".join(f"{k}: {v.description}" for k, v in DENSE_MODELS.items()),
    )
    parser.add_argument("--model_path", default="", help="model directory or Hub id (default: the key's)")
    parser.add_argument("--model_name", default="", help="run name (default: the --model key)")
    parser.add_argument("--tasks", nargs="+", default=list(RARB_TASKS), choices=RARB_TASKS, help="RAR-b tasks")
    parser.add_argument("--output_dir", required=True, help="root of the result directories")
    parser.add_argument("--data_dir", default=None, help="local data: <dir>/<task>/ (Hub-repo copy or BEIR files)")
    parser.add_argument(
        "--instruction_template",
        default="",
        help=f"query instruction wrapper with {{instruction}} (default per text format; '{NO_INSTRUCTION}': w/o Inst.)",
    )
    parser.add_argument("--save_predictions", action="store_true", help="write the top-1000 run per task")
    parser.add_argument("--overwrite", action="store_true", help="evaluate again even if results.json exists")
    encoder = parser.add_argument_group("dense encoder (defaults come from the --model entry)")
    encoder.add_argument("--pooling", default="", choices=["", *POOLINGS])
    encoder.add_argument("--text_format", default="", choices=["", *sorted(PRESETS)])
    encoder.add_argument("--query_max_len", type=int, default=None, help="tokens incl. EOS; default: no truncation")
    encoder.add_argument("--doc_max_len", type=int, default=None, help="tokens incl. EOS; default: no truncation")
    encoder.add_argument("--encode_batch_size", type=int, default=8)
    encoder.add_argument("--dtype", default="auto", choices=DTYPES)
    encoder.add_argument("--device", default="auto")
    encoder.add_argument("--encoder_backend", default="transformers", choices=BACKENDS)
    encoder.add_argument("--encoder_url", default=None, help="vllm-server: base URL of the embeddings server")
    encoder.add_argument("--served_model_name", default=None, help="vllm-server: model name on the server")
    return parser


def parse_config(argv: list[str] | None = None, settings: Settings | None = None) -> RarbConfig:
    """Parse flags into a resolved :class:`RarbConfig`; bad combinations exit through argparse."""
    from models.mteb_wrapper import default_instruction_template

    settings = settings or load_settings()
    parser = build_parser(settings)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    spec = DENSE_MODELS[args.model]
    model_path = args.model_path or (spec.default_model_path(settings) if spec.default_model_path else "")
    if not model_path:
        parser.error(f"--model {args.model} needs --model_path (a model directory or Hub id)")
    text_format = args.text_format or str(spec.text_format)
    if args.instruction_template == NO_INSTRUCTION:
        template: str | None = None
    else:
        template = args.instruction_template or default_instruction_template(text_format)
        if "{instruction}" not in template:
            parser.error(f"--instruction_template {template!r} must contain {{instruction}} (or be '{NO_INSTRUCTION}')")
    if args.data_dir and not Path(args.data_dir).is_dir():
        parser.error(f"--data_dir {args.data_dir} is not a directory")
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(RarbConfig) if hasattr(args, f.name)}
    resolved = dict(
        model_name=args.model_name or args.model,
        model_path=model_path,
        tasks=tuple(dict.fromkeys(args.tasks)),
        pooling=args.pooling or str(spec.pooling),
        text_format=text_format,
        instruction_template=template,
    )
    return RarbConfig(**{**flags, **resolved})


# ---------------------------------------------------------------------------------------------- data


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


# ---------------------------------------------------------------------------------------------- stage


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in _INFORMATIONAL and k not in ("schema_version", "derived")}


def _done(task_dir: Path, config: RarbConfig) -> bool:
    """Whether ``task_dir`` already holds results made with the same scoring settings."""
    results, stored = task_dir / "results.json", task_dir / "config.json"
    if config.overwrite or not results.is_file() or not stored.is_file():
        return False
    old = _identity(json.loads(stored.read_text(encoding="utf-8")))
    new = _identity(json.loads(json.dumps(dataclasses.asdict(config))))
    if old != new:
        differing = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        raise ValueError(
            f"{results} was produced with other settings ({', '.join(differing)}); pass --overwrite or --model_name"
        )
    return True


def evaluate_task(config: RarbConfig, model: Any, task_name: str) -> dict[str, Any]:
    """Run one task through mteb and write its files; returns the test-split scores."""
    import mteb

    task_dir = config.task_dir(task_name)
    task_dir.mkdir(parents=True, exist_ok=True)
    task = get_task(task_name, config.data_dir)
    instruction = model.query_instruction(task.metadata)
    derived = {"query_instruction_text": instruction, "dataset": task.metadata.dataset, "data_dir": config.data_dir}
    atomic_write_json(
        task_dir / "config.json",
        {"schema_version": CONFIG_SCHEMA_VERSION, **dataclasses.asdict(config), "derived": derived},
    )
    prediction_folder = task_dir / "mteb_predictions" if config.save_predictions else None
    result = mteb.evaluate(
        model,
        task,
        cache=None,
        overwrite_strategy="always",
        prediction_folder=prediction_folder,
        encode_kwargs={"batch_size": config.encode_batch_size},
        show_progress_bar=False,
    )
    if result.exceptions:
        raise ValueError(f"mteb failed on {task_name}: {result.exceptions}")
    # mteb's calibration scores (naucs) are NaN on tiny sets; JSON has no NaN, so they become null.
    scores = {k: _finite_or_none(v) for k, v in result.task_results[0].scores[EVAL_SPLIT][0].items()}
    ordered = {"ndcg_at_10": scores["ndcg_at_10"], "main_score": scores.get("main_score"), **scores}
    if prediction_folder is not None:
        raw = json.loads(next(prediction_folder.glob("*predictions.json")).read_text(encoding="utf-8"))
        atomic_write_json(task_dir / "predictions.json", raw["default"][EVAL_SPLIT], indent=None)
    atomic_write_json(task_dir / "results.json", ordered)
    logger.info("%s %s: nDCG@10 %.5f", config.model_name, task_name, scores["ndcg_at_10"])
    return ordered


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def run_evaluation(config: RarbConfig) -> dict[str, float]:
    """Evaluate every task of ``config``; returns ``{task: ndcg_at_10}`` (also in ``rarb_summary.json``)."""
    from models.encoders import build_encoder
    from models.mteb_wrapper import MtebEncoder

    todo = [task for task in config.tasks if not _done(config.task_dir(task), config)]
    summary: dict[str, float] = {}
    if todo:
        encoder = build_encoder(config.encoder_config())
        model = MtebEncoder(encoder, name=config.model_name, instruction_template=config.instruction_template)
        try:
            for task in todo:
                summary[task] = float(evaluate_task(config, model, task)["ndcg_at_10"])
        finally:
            encoder.close()
    for task in config.tasks:
        if task not in summary:
            logger.info("reusing %s", config.task_dir(task) / "results.json")
            stored = json.loads((config.task_dir(task) / "results.json").read_text(encoding="utf-8"))
            summary[task] = float(stored["ndcg_at_10"])
    summary_path = Path(config.output_dir) / config.model_name / "rarb_summary.json"
    previous = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    atomic_write_json(summary_path, {**previous, **summary})
    return summary


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = parse_config(argv)
    logger.info("config: %s", dataclasses.asdict(config))
    try:
        summary = run_evaluation(config)
    except (ValueError, FileNotFoundError) as err:
        logger.debug("RAR-b evaluation failed", exc_info=True)
        logger.error("%s", err)
        return 2
    print(f"{config.model_name}: " + " ".join(f"{task} nDCG@10 {score:.5f}" for task, score in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
