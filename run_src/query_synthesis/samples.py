"""Retrieval nodes -> query records for each query type (spec ``specs/training.md`` §4), and the LLM requests
the two generated types need.

* q_CoT (§4.1): question + partial solution strictly before the query node.
* q_question (§4.2): the question itself, paired with the node's positive.
* q_llmq (§4.3): an LLM query from the question, the partial solution and the retrieved theorem (by default
  the MCTS summary of it, the spec's [REC]; ``theorem_source`` can pick its corpus statement or the QG
  node's hypothesised theorem, the reference code's choice).
* q_lexical (§4.4): an LLM query from the theorem alone, per unique positive.

How many samples each type makes is a :class:`SynthesisMix`: ``samples_per_node`` requests per node for
q_llmq (per unique positive for q_lexical), and a de-duplication key per type (:data:`DEDUP_KEYS`):
``text`` merges samples with the same problem, positive and query text (negative pools and node ids united);
``node`` keeps one per retrieval node; ``occurrence`` one per selected trajectory through the node, the
reading of Table 9 under which q_llmq outnumbers q_CoT about 2.5 : 1 (spec §6.2 [INFERRED]).

Query ids: ``<node_id>:cot``, ``<node_id>:llmq`` (later samples ``<node_id>:llmq:<j>``),
``<problem_id>:<theorem_id>:question`` (``text`` key) or ``<node_id>:question``, and
``lexical:<corpus split>:<theorem_id>:<j>``, where ``node_id`` is ``<dataset>:<source_id>:<qg node>:<theorem_id>``;
occurrence copies of q_CoT / q_question add ``:<j>``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from models.llm.client import SamplingParams
from models.retrieval.corpus import Corpus
from models.retrieval.theorem_text import statement_for_prompt
from run_src.query_synthesis.generation import GenerationOutcome, GenerationRequest, request_seed
from run_src.query_synthesis.lexical import LexicalRetrieval
from run_src.query_synthesis.llm_queries import (
    QueryChecks,
    QueryPrompts,
    llmq_fields,
    parse_query_reply,
    theorem_name,
)
from run_src.query_synthesis.records import (
    DEDUP_KEYS,
    QUERY_TYPES,
    REASONING_TYPES,
    QueryRecord,
    normalize_query,
    ordered_union,
)
from run_src.query_synthesis.trajectories import RetrievalNode

logger = logging.getLogger(__name__)

THEOREM_SOURCES = ("retrieved_raw", "retrieved_summary", "qg_candidate")
CorpusKey = tuple[str, str]


# q_llmq once per trajectory occurrence of its node and q_question once per node (so it mirrors q_CoT, as
# Table 9's equal counts suggest); q_CoT and q_lexical merged by text; one LLM sample each.
DEFAULT_DEDUP_KEYS = {"llmq": "occurrence", "cot": "text", "question": "node", "lexical": "text"}
DEFAULT_SAMPLES = {"llmq": 1, "lexical": 1}


@dataclass(frozen=True)
class SynthesisMix:
    """Samples per node and the de-duplication key of each query type (``--samples_per_node``, ``--dedup_key``);
    types not named keep :data:`DEFAULT_SAMPLES` / :data:`DEFAULT_DEDUP_KEYS`."""

    samples_per_node: dict[str, int] = field(default_factory=dict)
    dedup_key: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in self.samples_per_node.items():
            if name not in ("llmq", "lexical"):
                raise ValueError(
                    f"--samples_per_node {name}={value}: only llmq and lexical are sampled; q_CoT and q_question "
                    "are fixed texts (use --dedup_key occurrence to repeat them per trajectory)"
                )
            if value < 1:
                raise ValueError(f"--samples_per_node {name}={value}: must be >= 1")
        for name, key in self.dedup_key.items():
            if name not in QUERY_TYPES or key not in DEDUP_KEYS:
                raise ValueError(f"--dedup_key {name}={key}: types {list(QUERY_TYPES)}, keys {list(DEDUP_KEYS)}")
            if name not in REASONING_TYPES and key == "occurrence":
                raise ValueError("--dedup_key lexical=occurrence: lexical queries come from theorems, not trajectories")

    def samples(self, query_type: str) -> int:
        return self.samples_per_node.get(query_type, DEFAULT_SAMPLES.get(query_type, 1))

    def key(self, query_type: str) -> str:
        return self.dedup_key.get(query_type, DEFAULT_DEDUP_KEYS[query_type])

    def copies(self, node: RetrievalNode, query_type: str) -> int:
        """Samples of ``query_type`` made from ``node``."""
        occurrences = max(len(node.trajectories), 1) if self.key(query_type) == "occurrence" else 1
        return self.samples(query_type) * occurrences

    def dedupe(self, records: Iterable[QueryRecord], query_type: str) -> list[QueryRecord]:
        """Merge text duplicates when the type's key is ``text``; otherwise keep every record."""
        key = self.key(query_type)
        records = [replace(r, dedup_key=key) for r in records]
        return merge_duplicates(records) if key == "text" else records

    def as_dict(self) -> dict[str, Any]:
        return {
            "samples_per_node": {t: self.samples(t) for t in ("llmq", "lexical")},
            "dedup_key": {t: self.key(t) for t in QUERY_TYPES},
        }


def parse_type_values(pairs: Iterable[str], flag: str, cast: type = str) -> dict[str, Any]:
    """``["llmq=2", "lexical=3"]`` → ``{"llmq": 2, "lexical": 3}``; ``ValueError`` naming ``flag`` otherwise."""
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"{flag} takes TYPE=VALUE pairs, got {pair!r}")
        try:
            values[name.strip()] = cast(value.strip())
        except ValueError as err:
            raise ValueError(f"{flag} {pair}: {err}") from err
    return values


def _copy_id(base: str, j: int) -> str:
    """The first sample keeps the plain id (and with it its seed and any cached completion)."""
    return base if j == 0 else f"{base}:{j}"


def _corpus_key(corpus: dict[str, str]) -> CorpusKey:
    return (corpus["source"], corpus["split"])


def merge_duplicates(records: Iterable[QueryRecord]) -> list[QueryRecord]:
    """One record per (type, problem, positive, query text); usable records win over failed ones, then the
    smallest query id. Negative pools, relevant ids and node ids of merged records are united."""
    groups: dict[tuple[str, str, str, str], list[QueryRecord]] = {}
    singles: list[QueryRecord] = []
    for record in records:
        if record.status != "ok" or not record.query.strip():
            singles.append(record)
            continue
        key = (
            record.query_type,
            record.problem_id or record.corpus["split"],
            record.positive_id,
            normalize_query(record.query),
        )
        groups.setdefault(key, []).append(record)
    merged: list[QueryRecord] = []
    for group in groups.values():
        group.sort(key=lambda r: r.query_id)
        first = group[0]
        if len(group) > 1:
            relevant = ordered_union(*(r.relevant_ids for r in group))
            negatives = [d for d in ordered_union(*(r.negative_ids for r in group)) if d not in set(relevant)]
            first = replace(
                first,
                negative_ids=negatives,
                relevant_ids=relevant,
                node_ids=ordered_union(*(r.node_ids for r in group)),
            )
        merged.append(first)
    return merged + singles


def _reasoning_record(node: RetrievalNode, query_type: str, query_id: str, query: str) -> QueryRecord:
    return QueryRecord(
        query_id=query_id,
        query_type=query_type,
        status="ok" if query.strip() else "empty_query",
        query=query,
        positive_id=node.theorem_id,
        source=node.dataset,
        corpus=dict(node.corpus),
        negative_ids=list(node.negative_ids),
        relevant_ids=list(node.relevant_ids),
        problem_id=node.problem_id,
        node_ids=[node.node_id],
    )


def cot_records(nodes: Iterable[RetrievalNode], mix: SynthesisMix | None = None) -> list[QueryRecord]:
    mix = mix or SynthesisMix()
    records = [
        _reasoning_record(n, "cot", _copy_id(f"{n.node_id}:cot", j), n.cot_query)
        for n in nodes
        for j in range(mix.copies(n, "cot"))
    ]
    return mix.dedupe(records, "cot")


def question_records(nodes: Iterable[RetrievalNode], mix: SynthesisMix | None = None) -> list[QueryRecord]:
    mix = mix or SynthesisMix()
    by_text = mix.key("question") == "text"
    records = [
        _reasoning_record(
            n,
            "question",
            f"{n.problem_id}:{n.theorem_id}:question" if by_text else _copy_id(f"{n.node_id}:question", j),
            n.question.strip(),
        )
        for n in nodes
        for j in range(mix.copies(n, "question"))
    ]
    return mix.dedupe(records, "question")


@dataclass(frozen=True)
class LLMQuerySettings:
    """How the two LLM query types are requested and checked (paper values: Table 8, spec §4.3–§4.4)."""

    model: str
    llmq_params: SamplingParams = field(
        default_factory=lambda: SamplingParams(max_tokens=512, temperature=0.8, top_p=0.95, top_k=40)
    )
    lexical_params: SamplingParams = field(
        default_factory=lambda: SamplingParams(max_tokens=256, temperature=1.0, top_p=0.95)
    )
    seed: int = 0
    theorem_source: str = "retrieved_summary"
    max_theorem_chars: int = 3000
    min_query_words: int = 3
    max_query_words: int = 96
    reject_theorem_name: bool = True
    mix: SynthesisMix = field(default_factory=SynthesisMix)

    def __post_init__(self) -> None:
        if self.theorem_source not in THEOREM_SOURCES:
            raise ValueError(f"theorem_source must be one of {THEOREM_SOURCES}, got {self.theorem_source!r}")


def _theorem_for_llmq(node: RetrievalNode, corpus: Corpus, source: str) -> str | None:
    if source == "retrieved_summary" and node.summary:
        return node.summary
    if source == "qg_candidate" and node.qg_candidate:
        return node.qg_candidate
    return corpus.text_of(node.theorem_id) if node.theorem_id in corpus else None


def _generation_info(
    request: GenerationRequest, completion: dict[str, Any] | None, error: str | None
) -> dict[str, Any]:
    return {
        "model": request.model,
        "prompt": dict(request.prompt),
        "params": request.params_dict(),
        "text": completion.get("text") if completion else None,
        "finish_reason": completion.get("finish_reason") if completion else None,
        "error": error,
    }


@dataclass
class LLMQPlan:
    """The q_llmq requests, plus records that failed before any request (theorem missing from the corpus)."""

    requests: dict[str, GenerationRequest] = field(default_factory=dict)  # by query id
    nodes: dict[str, RetrievalNode] = field(default_factory=dict)  # by query id
    failed: list[QueryRecord] = field(default_factory=list)


def plan_llmq(
    nodes: Iterable[RetrievalNode], corpora: dict[CorpusKey, Corpus], prompts: QueryPrompts, settings: LLMQuerySettings
) -> LLMQPlan:
    plan = LLMQPlan()
    for node in nodes:
        theorem = _theorem_for_llmq(node, corpora[_corpus_key(node.corpus)], settings.theorem_source)
        for j in range(settings.mix.copies(node, "llmq")):
            query_id = _copy_id(f"{node.node_id}:llmq", j)
            if theorem is None:
                record = _reasoning_record(node, "llmq", query_id, "")
                plan.failed.append(replace(record, status="positive_missing_from_corpus"))
                continue
            params = replace(settings.llmq_params, seed=request_seed(settings.seed, query_id))
            fields_ = llmq_fields(node.question, node.context, theorem, settings.max_theorem_chars)
            plan.requests[query_id] = GenerationRequest(
                query_id, "llmq", settings.model, prompts.llmq.render(**fields_), params, prompts.llmq.identity()
            )
            plan.nodes[query_id] = node
    return plan


def llmq_records(
    plan: LLMQPlan,
    outcome: GenerationOutcome,
    corpora: dict[CorpusKey, Corpus],
    prompts: QueryPrompts,
    settings: LLMQuerySettings,
) -> list[QueryRecord]:
    records = list(plan.failed)
    for query_id, request in plan.requests.items():
        node = plan.nodes[query_id]
        base = _reasoning_record(node, "llmq", query_id, "")
        completion = outcome.completions.get(query_id)
        if completion is None:
            error = outcome.failures.get(query_id, "no completion")
            records.append(replace(base, status="llm_error", generation=_generation_info(request, None, error)))
            continue
        corpus = corpora[_corpus_key(node.corpus)]
        raw = corpus.text_of(node.theorem_id) if node.theorem_id in corpus else ""
        checks = QueryChecks(
            min_words=settings.min_query_words,
            max_words=settings.max_query_words,
            forbidden=prompts.example_queries("llmq"),
            copy_sources=(node.question, statement_for_prompt(raw)),
            theorem_name=theorem_name(raw) if settings.reject_theorem_name else None,
        )
        parsed = parse_query_reply(completion.get("text") or "", checks)
        records.append(
            replace(
                base, status=parsed.status, query=parsed.query, generation=_generation_info(request, completion, None)
            )
        )
    return settings.mix.dedupe(records, "llmq")


@dataclass(frozen=True)
class LexicalTarget:
    """One lexical query to write: theorem ``theorem_id`` of corpus ``corpus_key``, sample ``j``."""

    query_id: str
    corpus_key: CorpusKey
    theorem_id: str
    sources: tuple[str, ...]  # datasets whose nodes used the theorem


def plan_lexical(nodes: Iterable[RetrievalNode], per_theorem: int) -> list[LexicalTarget]:
    """``per_theorem`` targets per unique positive theorem of the selected nodes, ordered by corpus and id."""
    datasets: dict[tuple[CorpusKey, str], set[str]] = {}
    for node in nodes:
        datasets.setdefault((_corpus_key(node.corpus), node.theorem_id), set()).add(node.dataset)
    return [
        LexicalTarget(f"lexical:{key[1]}:{theorem_id}:{j}", key, theorem_id, tuple(sorted(sources)))
        for (key, theorem_id), sources in sorted(datasets.items())
        for j in range(per_theorem)
    ]


def lexical_requests(
    targets: Iterable[LexicalTarget],
    corpora: dict[CorpusKey, Corpus],
    prompts: QueryPrompts,
    settings: LLMQuerySettings,
) -> dict[str, GenerationRequest]:
    """Requests for targets whose theorem is in the corpus (the others become failed records later)."""
    requests: dict[str, GenerationRequest] = {}
    for target in targets:
        corpus = corpora[target.corpus_key]
        if target.theorem_id not in corpus:
            continue
        theorem = statement_for_prompt(corpus.text_of(target.theorem_id), settings.max_theorem_chars)
        params = replace(settings.lexical_params, seed=request_seed(settings.seed, target.query_id))
        requests[target.query_id] = GenerationRequest(
            target.query_id,
            "lexical",
            settings.model,
            prompts.lexical.render(theorem=theorem),
            params,
            prompts.lexical.identity(),
        )
    return requests


def parse_lexical(
    targets: Iterable[LexicalTarget],
    requests: dict[str, GenerationRequest],
    outcome: GenerationOutcome,
    corpora: dict[CorpusKey, Corpus],
    prompts: QueryPrompts,
    settings: LLMQuerySettings,
) -> list[QueryRecord]:
    """Lexical records with their parsed query (retrieval fields still empty)."""
    records: list[QueryRecord] = []
    for target in targets:
        base = QueryRecord(
            query_id=target.query_id,
            query_type="lexical",
            status="ok",
            query="",
            positive_id=target.theorem_id,
            source="+".join(target.sources),
            corpus={"source": target.corpus_key[0], "split": target.corpus_key[1]},
            relevant_ids=[target.theorem_id],
        )
        request = requests.get(target.query_id)
        if request is None:
            records.append(replace(base, status="positive_missing_from_corpus"))
            continue
        completion = outcome.completions.get(target.query_id)
        if completion is None:
            error = outcome.failures.get(target.query_id, "no completion")
            records.append(replace(base, status="llm_error", generation=_generation_info(request, None, error)))
            continue
        theorem = corpora[target.corpus_key].text_of(target.theorem_id)
        checks = QueryChecks(
            min_words=settings.min_query_words,
            max_words=settings.max_query_words,
            forbidden=prompts.example_queries("lexical"),
            copy_sources=(statement_for_prompt(theorem),),
            copy_window_words=16,  # lexical queries may reuse the theorem's terms, not whole sentences
        )
        parsed = parse_query_reply(completion.get("text") or "", checks)
        generation = _generation_info(request, completion, None)
        records.append(replace(base, status=parsed.status, query=parsed.query, generation=generation))
    return records


def attach_retrieval(
    records: list[QueryRecord], retrievals: dict[str, LexicalRetrieval], mix: SynthesisMix | None = None
) -> list[QueryRecord]:
    """Copy BM25 rank and candidates onto the lexical records that have them, then de-duplicate per ``mix``."""
    updated = [
        replace(r, bm25_rank=found.bm25_rank, bm25_ids=found.bm25_ids, dense_ids=found.dense_ids)
        if (found := retrievals.get(r.query_id)) is not None
        else r
        for r in records
    ]
    return (mix or SynthesisMix()).dedupe(updated, "lexical")
