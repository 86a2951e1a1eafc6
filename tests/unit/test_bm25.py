"""BM25 with BRIGHT's semantics (specs/evaluation.md §3.1), pinned against the formula written out here.

Expected scores are computed in this file from hand-tokenised bags of words, independently of
``models.retrieval.bm25``::

    idf(t) = ln(N + 1) - ln(df + 0.5)
    w(t)   = idf(t) * tf / (tf + k1 * (1 - b + b * |x| / avgdl))    (documents and queries alike)
    score  = sum_t w_q(t) * w_d(t)

The index stores float32 weights (as gensim does), hence the 1e-6 relative tolerance. Tests using
the ``lucene`` fixture run pyserini's analyser in a JVM started once per test session.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from models.retrieval import bm25 as bm25_module
from models.retrieval.bm25 import BM25Index, build_or_load_bm25
from models.retrieval.corpus import Corpus, load_corpus
from models.retrieval.text_analysis import LuceneEnglishAnalyzer, WhitespaceAnalyzer, default_analyzer

REPO_ROOT = Path(__file__).resolve().parents[2]
MINI = REPO_ROOT / "tests" / "resources" / "bright_mini"
K1, B = 0.9, 0.4

# d0..d4 with the whitespace analyser: bags and lengths by hand.
#   d0 {apple: 2, banana: 1}  |d0| = 3        df: apple 1, banana 2, cherry 2, date 2, elder 1
#   d1 {banana: 1, cherry: 1} |d1| = 2        N = 5, tokens = 3 + 2 + 4 + 2 + 0 = 11, avgdl = 2.2
#   d2 {cherry: 3, date: 1}   |d2| = 4
#   d3 {date: 1, elder: 1}    |d3| = 2
#   d4 {} (empty document)    |d4| = 0
TOY_TEXTS = ["apple banana apple", "banana cherry", "cherry cherry cherry date", "date elder", ""]
TOY_IDS = ["d0", "d1", "d2", "d3", "d4"]
AVGDL = 11 / 5
IDF_DF1 = math.log(6) - math.log(1.5)  # = ln 4
IDF_DF2 = math.log(6) - math.log(2.5)  # = ln 2.4


def weight(idf: float, tf: int, length: int) -> float:
    return idf * tf / (tf + K1 * (1 - B + B * length / AVGDL))


@pytest.fixture(scope="module")
def toy() -> BM25Index:
    return BM25Index.build(Corpus("toy", TOY_IDS, TOY_TEXTS), K1, B, analyzer=WhitespaceAnalyzer(), show_progress=False)


@pytest.fixture(scope="session")
def lucene() -> LuceneEnglishAnalyzer:
    # scripts/setup_env.sh installs the JDK and pyserini, so a missing analyser is a failure, not a skip.
    analyzer = default_analyzer()
    analyzer.analyze("warm up the JVM")
    return analyzer


# ---------------------------------------------------------------------------------------------- formula


def test_scores_match_the_formula_with_query_side_weighting(toy: BM25Index) -> None:
    # Query "apple cherry cherry zzz": zzz is out of vocabulary and dropped, so the bag is
    # {apple: 1, cherry: 2} with |q| = 3 (in-vocabulary tokens only).
    wq_apple = weight(IDF_DF1, 1, 3)
    wq_cherry = weight(IDF_DF2, 2, 3)
    expected = [
        wq_apple * weight(IDF_DF1, 2, 3),  # d0: apple tf 2, |d0| = 3
        wq_cherry * weight(IDF_DF2, 1, 2),  # d1: cherry tf 1, |d1| = 2
        wq_cherry * weight(IDF_DF2, 3, 4),  # d2: cherry tf 3, |d2| = 4
        0.0,
        0.0,
    ]
    # Numbers spelled out once, so a change of formula cannot hide behind the helper above.
    assert expected[0] == pytest.approx(
        1.386294361 * 1 / (1 + 0.9 * (0.6 + 0.4 * 3 / 2.2)) * 1.386294361 * 2 / (2 + 0.9 * (0.6 + 0.4 * 3 / 2.2))
    )
    assert expected[:3] == pytest.approx([0.62442102, 0.27085111, 0.36172183], rel=1e-7)

    scores = toy.score_all("apple cherry cherry zzz")
    assert scores.dtype == np.float32
    assert scores.tolist() == pytest.approx(expected, rel=1e-6)
    hits = toy.search("apple cherry cherry zzz", k=3)
    assert [doc_id for doc_id, _ in hits] == ["d0", "d2", "d1"]
    assert [score for _, score in hits] == pytest.approx([expected[0], expected[2], expected[1]], rel=1e-6)


def test_query_terms_are_weighted_not_counted(toy: BM25Index) -> None:
    once, twice = toy.score_all("cherry"), toy.score_all("cherry cherry")
    # Classic BM25 would double the score; query-side weighting saturates tf with |q| = 1 vs 2.
    ratio = weight(IDF_DF2, 2, 2) / weight(IDF_DF2, 1, 1)
    assert twice[1] / once[1] == pytest.approx(ratio, rel=1e-6)
    assert ratio != pytest.approx(2.0)


def test_out_of_vocabulary_query_terms_change_nothing(toy: BM25Index) -> None:
    np.testing.assert_array_equal(toy.score_all("cherry zzz yyy xxx"), toy.score_all("cherry"))
    all_oov = toy.search("zzz", k=5)
    # No matching term: every score is 0 and the order is the corpus order, as BRIGHT's stable sort gives.
    assert all_oov == [(doc_id, 0.0) for doc_id in TOY_IDS]


def test_excluded_ids_are_removed_before_the_cut(toy: BM25Index, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="models.retrieval.bm25"):
        hits = toy.search("apple cherry", k=3, excluded_ids=["d0", "N/A", "not-a-doc", "d0"])
    assert [doc_id for doc_id, _ in hits] == ["d2", "d1", "d3"]
    assert "1 excluded ids are not in corpus toy" in caplog.text
    assert len(toy.search("apple", k=10, excluded_ids=["d1", "d2"])) == 3


def test_ties_keep_corpus_order() -> None:
    index = BM25Index.build(
        Corpus("ties", ["a", "b", "c", "d", "e"], ["x y", "z", "x y", "x y", "w"]),
        analyzer=WhitespaceAnalyzer(),
        show_progress=False,
    )
    assert [doc_id for doc_id, _ in index.search("x", k=2)] == ["a", "c"]
    assert [doc_id for doc_id, _ in index.search("x", k=5)] == ["a", "c", "d", "b", "e"]


def _scipy_scores(index: BM25Index, query: str) -> np.ndarray:
    """gensim's way: the query row times the float32 weighted term-document matrix."""
    tokens = index.analyzer.analyze_batch([query])
    rows = index._query_rows(tokens)
    row = sp.csr_matrix((rows.weights, rows.term_ids, rows.indptr), shape=(1, len(index.vocabulary)))
    tf = index.term_freqs
    lengths = np.asarray(tf.sum(axis=1)).ravel()
    weights = index._weights(tf.data, np.repeat(lengths, np.diff(tf.indptr)), index.idf[tf.indices]).astype(np.float32)
    term_doc = sp.csr_matrix((weights, tf.indices, tf.indptr), tf.shape).T.tocsr()
    term_doc.sort_indices()
    return np.asarray((row @ term_doc).toarray(), dtype=np.float32)[0]


def _scipy_reference(index: BM25Index, query: str, k: int, excluded: set[str]) -> list[tuple[str, float]]:
    """The full score vector stably sorted (BRIGHT's ranking), excluded ids removed before the cut."""
    scores = _scipy_scores(index, query)
    order = [i for i in np.argsort(-scores, kind="stable") if index.corpus.doc_ids[i] not in excluded][:k]
    return [(index.corpus.doc_ids[i], float(scores[i])) for i in order]


def test_kernel_equals_the_scipy_product_and_a_stable_sort_bit_for_bit() -> None:
    """Random Zipf corpus with duplicate documents (ties), exclusions, k above the number of matches."""
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    probs = 1 / np.arange(1, 301)
    probs /= probs.sum()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(0, 40)), p=probs)) for _ in range(1500)]
    texts += texts[:200]  # exact duplicates tie on every query
    ids = [f"d{i}" for i in range(len(texts))]
    index = BM25Index.build(Corpus("zipf", ids, texts), analyzer=WhitespaceAnalyzer(), show_progress=False)
    queries = [" ".join(rng.choice(words, size=int(rng.integers(1, 12)), p=probs)) for _ in range(60)]
    queries += ["w299 w298", "absent", "w0 w0 w1"]
    for k in (1, 10, 1000, len(texts) + 5):
        excluded = [set(rng.choice(ids, size=int(rng.integers(0, 20)))) for _ in queries]
        got = index.search_batch(queries, k, excluded)
        for query, ex, hits in zip(queries, excluded, got, strict=True):
            assert hits == _scipy_reference(index, query, k, ex), (query, k)
    for query in queries[:10]:
        np.testing.assert_array_equal(index.score_all(query), _scipy_scores(index, query))


def test_term_ids_follow_gensim_doc2bow_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A document's unseen terms get the next ids in sorted order (gensim's Dictionary), chunk after chunk."""
    monkeypatch.setattr(bm25_module, "_ANALYSIS_CHUNK_DOCS", 7)
    rng = np.random.default_rng(1)
    words = [f"t{i}" for i in range(120)]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(0, 15)))) for _ in range(50)]
    index = BM25Index.build(Corpus("order", [str(i) for i in range(50)], texts), analyzer=WhitespaceAnalyzer(), show_progress=False)
    vocabulary: list[str] = []
    for text in texts:
        vocabulary.extend(sorted(set(text.split()) - set(vocabulary)))
    assert index.vocabulary == vocabulary
    for row, text in enumerate(texts):
        bag = Counter(index.term_ids[token] for token in text.split())
        got = index.term_freqs[row]
        assert dict(zip(got.indices.tolist(), got.data.tolist(), strict=True)) == bag
        assert got.indices.tolist() == sorted(bag)


def test_search_batch_equals_search(toy: BM25Index) -> None:
    queries = ["apple", "cherry date", "zzz", "banana banana elder"]
    excluded = [["d0"], [], ["N/A"], ["d3"]]
    assert toy.search_batch(queries, 4, excluded) == [
        toy.search(q, 4, e) for q, e in zip(queries, excluded, strict=True)
    ]
    with pytest.raises(ValueError, match="k must be a positive int"):
        toy.search("apple", 0)
    with pytest.raises(ValueError, match="2 entries for 1 queries"):
        toy.search_batch(["apple"], 3, [[], []])


# ---------------------------------------------------------------------------------------------- cache


def test_save_load_round_trip(toy: BM25Index, tmp_path: Path) -> None:
    toy.save(tmp_path / "bm25")
    meta = json.loads((tmp_path / "bm25" / "meta.json").read_text())
    assert meta["corpus_fingerprint"] == toy.corpus.fingerprint()
    assert (meta["k1"], meta["b"], meta["analyzer"], meta["num_terms"]) == (K1, B, "whitespace-lowercase", 5)
    loaded = BM25Index.load(tmp_path / "bm25", toy.corpus, analyzer=WhitespaceAnalyzer())
    assert loaded.vocabulary == toy.vocabulary
    np.testing.assert_array_equal(loaded.score_all("apple cherry date"), toy.score_all("apple cherry date"))


def test_mismatched_cache_is_refused(toy: BM25Index, tmp_path: Path) -> None:
    toy.save(tmp_path)
    edited = Corpus("toy", TOY_IDS, [*TOY_TEXTS[:-1], "fig"])
    with pytest.raises(ValueError, match="corpus_fingerprint: cached"):
        BM25Index.load(tmp_path, edited, analyzer=WhitespaceAnalyzer())
    with pytest.raises(ValueError, match=r"k1: cached 0\.9, wanted 1\.2.*delete the directory"):
        BM25Index.load(tmp_path, toy.corpus, k1=1.2, analyzer=WhitespaceAnalyzer())

    class OtherAnalyzer(WhitespaceAnalyzer):
        @property
        def name(self) -> str:
            return "other"

    with pytest.raises(ValueError, match="analyzer: cached 'whitespace-lowercase', wanted 'other'"):
        BM25Index.load(tmp_path, toy.corpus, analyzer=OtherAnalyzer())
    with pytest.raises(FileNotFoundError, match="meta.json missing"):
        BM25Index.load(tmp_path / "empty", toy.corpus, analyzer=WhitespaceAnalyzer())


def test_build_or_load_builds_once_then_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = Corpus("toy", TOY_IDS, TOY_TEXTS)
    first = build_or_load_bm25(corpus, tmp_path / "toy", analyzer=WhitespaceAnalyzer())

    def no_rebuild(*args, **kwargs):
        raise AssertionError("a valid cache must be loaded, not rebuilt")

    monkeypatch.setattr(bm25_module.BM25Index, "build", no_rebuild)
    second = build_or_load_bm25(corpus, tmp_path / "toy", analyzer=WhitespaceAnalyzer())
    np.testing.assert_array_equal(first.score_all("date"), second.score_all("date"))
    with pytest.raises(ValueError, match="b: cached 0.4, wanted 0.75"):
        build_or_load_bm25(corpus, tmp_path / "toy", b=0.75, analyzer=WhitespaceAnalyzer())


# ---------------------------------------------------------------------------------------------- Lucene


def test_lucene_analyser_tokens(lucene: LuceneEnglishAnalyzer) -> None:
    # Lower-case, possessives, English stop words (are, they, the), Porter stems (quickli, run).
    assert lucene.analyze("The Cats' owner's dogs are RUNNING quickly, aren't they?") == [
        "cat",
        "owner",
        "dog",
        "run",
        "quickli",
        "aren't",
    ]
    texts = ["Dogs run; dogs bark.", "", "the of and", "x qqxbrightdocseparatorxqq y", "emoji 😀 ok", "U.S.A. 3.14"]
    assert lucene.analyze_batch(texts) == [lucene.analyze(text) for text in texts]
    assert lucene.name.startswith("lucene-english-porter-stopwords:pyserini-")


def test_lucene_bm25_scores_pinned(lucene: LuceneEnglishAnalyzer) -> None:
    # Lucene tokens by hand:             bag                               |d|
    texts = [
        "The cats are running.",  # {cat: 1, run: 1}                        2
        "A cat sat on the mat.",  # {cat: 1, sat: 1, mat: 1}                3
        "Dogs run; dogs bark.",  # {dog: 2, run: 1, bark: 1}                4
        "Birds' feathers",  # {bird: 1, feather: 1}                         2
    ]
    index = BM25Index.build(Corpus("pets", ["p0", "p1", "p2", "p3"], texts), analyzer=lucene, show_progress=False)
    n, avgdl = 4, (2 + 3 + 4 + 2) / 4  # df: cat 2, run 2, dog 1

    def w(df: int, tf: int, length: int) -> float:
        idf = math.log(n + 1) - math.log(df + 0.5)
        return idf * tf / (tf + K1 * (1 - B + B * length / avgdl))

    # "Running dogs and cats" -> {run: 1, dog: 1, cat: 1}, |q| = 3 ("and" is a stop word).
    q_run, q_dog, q_cat = w(2, 1, 3), w(1, 1, 3), w(2, 1, 3)
    expected = [
        q_cat * w(2, 1, 2) + q_run * w(2, 1, 2),
        q_cat * w(2, 1, 3),
        q_run * w(2, 1, 4) + q_dog * w(1, 2, 4),
        0.0,
    ]
    assert index.score_all("Running dogs and cats").tolist() == pytest.approx(expected, rel=1e-6)


def test_lucene_document_text_as_query_ranks_it_first(lucene: LuceneEnglishAnalyzer, tmp_path: Path) -> None:
    corpus = load_corpus(MINI, "biology")
    index = build_or_load_bm25(corpus, tmp_path / "biology", analyzer=lucene)
    for doc_id, text in zip(corpus.doc_ids, corpus.texts, strict=True):
        if text:
            assert index.search(text, k=1)[0][0] == doc_id
    reloaded = BM25Index.load(tmp_path / "biology", corpus, analyzer=lucene)
    assert json.loads((tmp_path / "biology" / "meta.json").read_text())["analyzer"] == lucene.name
    assert reloaded.search("why do cats purr", k=2) == index.search("why do cats purr", k=2)


def test_lucene_analyser_is_safe_under_concurrent_calls(lucene: LuceneEnglishAnalyzer) -> None:
    # Server requests run in a thread pool; an unguarded Lucene Analyzer returned other texts' tokens.
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"The {i} quick foxes jumped over {i * 7} lazy dogs' kennels number{i}" for i in range(200)]
    expected = [lucene.analyze(t) for t in texts]
    with ThreadPoolExecutor(max_workers=8) as pool:
        singles = list(pool.map(lucene.analyze, texts))
        batches = list(pool.map(lambda i: lucene.analyze_batch(texts[i : i + 5]), range(0, 200, 5)))
    assert singles == expected
    assert [tokens for batch in batches for tokens in batch] == expected
