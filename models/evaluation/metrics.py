"""Ranking metrics exactly as BRIGHT computes them, and run files in and out; knows nothing about BRIGHT.

Owns one function, :func:`evaluate_run`, that turns qrels + a run into BRIGHT's 25 numbers
(specs/evaluation.md §2.3): ``pytrec_eval`` with ``ndcg_cut``/``map_cut``/``recall``/``P`` at every
cut-off and uncut ``recip_rank``, averaged over the queries pytrec_eval returns and rounded with
``round(x, 5)``. The arithmetic is delegated to pytrec_eval (trec_eval's C code) rather than
re-implemented, because its semantics are the reference: ties are ranked by document id in
*descending* string order whatever the dict order, and a query counts only if it is a key of the run
*and* has at least one judgement in the qrels (an empty ``{}`` ranking counts, with zeros; a query
absent from the run is dropped silently, unlike ``trec_eval -c``).

Also reads runs in the three formats this project meets (BRIGHT ``score.json``, 6-column TREC,
Tevatron's 3-column ``qid docid score``) and writes TREC runs whose rank column agrees with the order
trec_eval will evaluate.

Usage::

    from models.evaluation.metrics import evaluate_run, read_run
    aggregate, per_query = evaluate_run(qrels, read_run("score.json"))
    aggregate["NDCG@10"]
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

from models.io_utils import atomic_write_text

logger = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]
MissingQueries = Literal["drop", "zero"]

# BRIGHT run.py calculate_retrieval_metrics(k_values=[1, 5, 10, 25, 50, 100]) (specs/evaluation.md §2.3).
DEFAULT_K_VALUES: tuple[int, ...] = (1, 5, 10, 25, 50, 100)
# Our result key prefix -> pytrec_eval measure family, in BRIGHT's output order (MRR comes last).
_FAMILIES: tuple[tuple[str, str], ...] = (("NDCG", "ndcg_cut"), ("MAP", "map_cut"), ("Recall", "recall"), ("P", "P"))
MRR_KEY = "MRR"
RUN_FORMATS = ("score_json", "trec", "tevatron")


def metric_keys(k_values: Sequence[int] = DEFAULT_K_VALUES) -> list[str]:
    """Result keys in BRIGHT's order: ``NDCG@k`` …, ``MAP@k`` …, ``Recall@k`` …, ``P@k`` …, ``MRR``."""
    return [f"{prefix}@{k}" for prefix, _ in _FAMILIES for k in k_values] + [MRR_KEY]


def trec_measure_name(key: str) -> str:
    """pytrec_eval's per-query name for a result key: ``NDCG@10`` -> ``ndcg_cut_10``, ``MRR`` -> ``recip_rank``."""
    if key == MRR_KEY:
        return "recip_rank"
    prefix, _, k = key.partition("@")
    for ours, family in _FAMILIES:
        if prefix == ours and k.isdigit():
            return f"{family}_{k}"
    raise ValueError(f"unknown metric key {key!r}; expected one of NDCG@k, MAP@k, Recall@k, P@k, MRR")


def evaluate_run(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    *,
    missing_queries: MissingQueries = "drop",
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """BRIGHT's metrics of ``run`` against ``qrels``: ``(aggregate, per_query)``.

    ``aggregate`` maps :func:`metric_keys` to means over the evaluated queries, each rounded to 5
    decimals (BRIGHT's ``results.json``). ``per_query`` maps every evaluated query id to the same
    keys, unrounded. ``missing_queries="drop"`` is BRIGHT (queries of the qrels absent from the run
    are left out of the means); ``"zero"`` scores them 0 everywhere, as ``trec_eval -c`` does.

    Raises ``ValueError`` for non-finite scores, non-integer labels or when no query can be evaluated.
    """
    ks = _check_k_values(k_values)
    if missing_queries not in ("drop", "zero"):
        raise ValueError(f"missing_queries must be 'drop' or 'zero', got {missing_queries!r}")
    clean_qrels = _validated_qrels(qrels)
    clean_run = _validated_run(run)
    missing = [qid for qid, judged in clean_qrels.items() if judged and qid not in clean_run]
    if missing:
        if missing_queries == "zero":
            for qid in missing:
                clean_run[qid] = {}  # pytrec_eval scores an empty ranking as 0 on every measure
        logger.warning(
            "%d of %d judged queries are missing from the run (first: %s); %s",
            len(missing),
            sum(1 for judged in clean_qrels.values() if judged),
            missing[:5],
            "scored as 0" if missing_queries == "zero" else "left out of the means, as pytrec_eval does",
        )

    import pytrec_eval  # deferred: only evaluation needs the C extension

    cut = ",".join(str(k) for k in ks)
    measures = {f"{family}.{cut}" for _, family in _FAMILIES} | {"recip_rank"}
    scores = pytrec_eval.RelevanceEvaluator(clean_qrels, measures).evaluate(clean_run)
    if not scores:
        raise ValueError(
            f"no query can be evaluated: none of the run's {len(clean_run)} query ids has a judgement in the "
            f"qrels ({len(clean_qrels)} queries); check that both use the same query ids"
        )

    keys = metric_keys(ks)
    per_query = {qid: {key: float(values[trec_measure_name(key)]) for key in keys} for qid, values in scores.items()}
    # REF: BRIGHT sums with `+=` in pytrec_eval's query order, divides, then round(x, 5); the same
    # order and operations give bit-identical means (math.fsum or numpy could flip a 5th decimal).
    totals = dict.fromkeys(keys, 0.0)
    for values in per_query.values():
        for key in keys:
            totals[key] += values[key]
    aggregate = {key: round(totals[key] / len(per_query), 5) for key in keys}
    return aggregate, per_query


def _check_k_values(k_values: Sequence[int]) -> list[int]:
    ks = list(k_values)
    if not ks or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in ks) or len(set(ks)) != len(ks):
        raise ValueError(f"k_values must be distinct positive ints, got {ks!r}")
    return ks


def _validated_qrels(qrels: Mapping[str, Mapping[str, int]]) -> Qrels:
    out: Qrels = {}
    for qid, judged in qrels.items():
        labels: dict[str, int] = {}
        for doc_id, label in judged.items():
            # pytrec_eval needs ints; a float label such as 1.0 is accepted, 0.5 is not (trec_eval is integral).
            if isinstance(label, bool) or not isinstance(label, int | float) or label != int(label):
                raise ValueError(f"qrels: query {qid!r} doc {doc_id!r} has label {label!r}; labels must be integers")
            labels[str(doc_id)] = int(label)
        out[str(qid)] = labels
    return out


def _validated_run(run: Mapping[str, Mapping[str, float]]) -> Run:
    out: Run = {}
    for qid, ranking in run.items():
        scores: dict[str, float] = {}
        for doc_id, score in ranking.items():
            if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
                raise ValueError(
                    f"run: query {qid!r} doc {doc_id!r} has score {score!r}; scores must be finite numbers"
                )
            scores[str(doc_id)] = float(score)
        out[str(qid)] = scores
    return out


# ---------------------------------------------------------------------------------------------- run files


def read_run(path: str | os.PathLike[str]) -> Run:
    """Read a run as ``{query_id: {doc_id: score}}``, documents in file order; ``.gz`` is read transparently.

    The format is detected from the content: a JSON object is BRIGHT's ``score.json``; otherwise
    whitespace-separated lines with 6 columns are TREC (``qid Q0 docid rank score tag``) and with 3
    columns Tevatron (``qid docid score``). Every line must match the first one's format, scores
    must be finite numbers, and a document may appear once per query (trec_eval rejects duplicates).
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"run file {source} does not exist")
    text = _read_text(source)
    stripped = text.lstrip()
    if not stripped:
        raise ValueError(f"run file {source} is empty")
    run = _parse_score_json(text, source) if stripped.startswith("{") else _parse_text_run(text, source)
    logger.info("read run %s: %d queries, %d documents", source, len(run), sum(len(d) for d in run.values()))
    return run


def detect_run_format(path: str | os.PathLike[str]) -> str:
    """``score_json``, ``trec`` or ``tevatron`` (see :func:`read_run`); ``ValueError`` otherwise."""
    source = Path(path)
    text = _read_text(source).lstrip()
    if text.startswith("{"):
        return "score_json"
    for line_no, line in _content_lines(text, 1):
        return _text_format(line.split(), source, line_no)
    raise ValueError(f"run file {source} is empty")


def write_trec_run(run: Mapping[str, Mapping[str, float]], path: str | os.PathLike[str], tag: str = "rader") -> Path:
    """Write a 6-column TREC run atomically, documents ranked as trec_eval ranks them.

    Within a query: score descending, ties by document id descending (trec_eval's order, so the rank
    column is the rank that gets evaluated). Scores are written with ``repr`` and read back exactly.
    """
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"tag must be a non-empty string without whitespace, got {tag!r}")
    lines: list[str] = []
    for qid, ranking in _validated_run(run).items():
        _check_token(qid, "query id")
        ranked = sorted(ranking.items(), key=lambda item: (item[1], item[0]), reverse=True)
        for rank, (doc_id, score) in enumerate(ranked, start=1):
            _check_token(doc_id, f"doc id of query {qid!r}")
            lines.append(f"{qid} Q0 {doc_id} {rank} {score!r} {tag}\n")
    return atomic_write_text(path, "".join(lines))


def _check_token(value: str, what: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{what} {value!r} is empty or contains whitespace; TREC run files cannot hold it")


def _read_text(source: Path) -> str:
    opener = gzip.open if source.suffix == ".gz" else open
    try:
        with opener(source, "rt", encoding="utf-8") as handle:
            return handle.read()
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as err:
        raise ValueError(f"run file {source} is not UTF-8 text ({err}); expected score.json, TREC or Tevatron") from err


def _parse_score_json(text: str, source: Path) -> Run:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"run file {source} looks like score.json but is not valid JSON: {err.msg} at line {err.lineno} "
            f"column {err.colno}"
        ) from err
    fix = "score.json must map query id -> {doc id: score}"
    run: Run = {}
    for qid, ranking in data.items():
        if not isinstance(ranking, dict):
            raise ValueError(f"run file {source}: query {qid!r} holds a {type(ranking).__name__}; {fix}")
        scores: dict[str, float] = {}
        for doc_id, score in ranking.items():
            if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
                raise ValueError(
                    f"run file {source}: query {qid!r} doc {doc_id!r} has score {score!r}; {fix} (finite numbers)"
                )
            scores[doc_id] = float(score)  # JSON ints (BRIGHT rerank files hold 0 and -1) become floats
        run[qid] = scores
    return run


def _content_lines(text: str, first_line_no: int) -> Iterator[tuple[int, str]]:
    for line_no, line in enumerate(text.splitlines(), start=first_line_no):
        if line.strip():
            yield line_no, line


def _text_format(columns: list[str], source: Path, line_no: int) -> str:
    if len(columns) == 6:
        return "trec"
    if len(columns) == 3:
        return "tevatron"
    raise ValueError(
        f"run file {source} line {line_no} has {len(columns)} columns; expected 6 (TREC: qid Q0 docid rank score "
        "tag), 3 (Tevatron: qid docid score) or a score.json object"
    )


def _parse_text_run(text: str, source: Path) -> Run:
    run: Run = {}
    run_format: str | None = None
    for line_no, line in _content_lines(text, 1):
        columns = line.split()
        if run_format is None:
            run_format = _text_format(columns, source, line_no)
            logger.debug("run file %s: %s format", source, run_format)
        expected = 6 if run_format == "trec" else 3
        if len(columns) != expected:
            raise ValueError(
                f"run file {source} line {line_no} has {len(columns)} columns but the file is {run_format} "
                f"({expected} columns, from its first line): {line.strip()[:200]!r}"
            )
        if run_format == "trec":
            qid, _, doc_id, rank, score_text, _ = columns
            if not rank.lstrip("-").isdigit():
                raise ValueError(f"run file {source} line {line_no}: rank {rank!r} (column 4) is not an integer")
        else:
            qid, doc_id, score_text = columns
        try:
            score = float(score_text)
        except ValueError:
            raise ValueError(f"run file {source} line {line_no}: score {score_text!r} is not a number") from None
        if not math.isfinite(score):
            raise ValueError(f"run file {source} line {line_no}: score {score_text!r} is not finite")
        ranking = run.setdefault(qid, {})
        if doc_id in ranking:
            raise ValueError(f"run file {source} line {line_no}: document {doc_id!r} appears twice for query {qid!r}")
        ranking[doc_id] = score
    return run
