"""Text analysers that turn a string into index terms; the Lucene English one is what BRIGHT's BM25 uses.

BRIGHT tokenises documents and queries with pyserini's ``Analyzer(get_lucene_analyzer())``
(specs/evaluation.md §3.1): Anserini's ``DefaultEnglishAnalyzer`` with Porter stemming, i.e. Lucene's
StandardTokenizer, English possessive removal, lower-casing, the 33 English stop words and the
Porter stemmer. No pure-Python re-implementation matches the StandardTokenizer's Unicode word-break
rules exactly, so :class:`LuceneEnglishAnalyzer` calls pyserini 0.22.1's Java analyser through pyjnius.
The JVM starts on the first call, never at import, so importing this module is free.

pyserini >= 0.23 needs Java 21; 0.22.1 runs on Java 17 and, for the analyser, needs only pyjnius:

    pip install pyjnius==1.9.0 && pip install --no-deps pyserini==0.22.1   # plus a JDK/JRE 11+ (java on PATH)

:class:`WhitespaceAnalyzer` is a trivial, JVM-free analyser for tests and toy corpora.

Usage::

    analyzer = LuceneEnglishAnalyzer()
    analyzer.analyze("The cat's paws")               # ['cat', 'paw']
    analyzer.analyze_batch(["Running dogs", "a fox"])  # [['run', 'dog'], ['fox']]
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

logger = logging.getLogger(__name__)

PYSERINI_VERSION = "0.22.1"
PYJNIUS_VERSION = "1.9.0"
INSTALL_HINT = (
    f"install a JDK 11+ (Debian: apt-get install openjdk-17-jdk-headless; `java` on PATH or JAVA_HOME set), then "
    f"`pip install pyjnius=={PYJNIUS_VERSION} && pip install --no-deps pyserini=={PYSERINI_VERSION}` "
    "(pyserini >= 0.23 needs Java 21)"
)

# A made-up word that joins many texts into one JVM call. Its analysed form is computed at start-up and a
# batch whose separator count is off (a text that contains the word) is re-analysed one text at a time.
_BATCH_SEPARATOR = "qqxbrightdocseparatorxqq"


class AnalyzerUnavailableError(RuntimeError):
    """The Lucene analyser cannot run here (pyserini, pyjnius or a Java runtime is missing)."""


@runtime_checkable
class TextAnalyzer(Protocol):
    """What BM25 needs from an analyser; ``name`` is recorded in index caches to refuse mismatches."""

    @property
    def name(self) -> str: ...

    def analyze(self, text: str) -> list[str]: ...

    def analyze_batch(self, texts: Sequence[str]) -> list[list[str]]: ...


class WhitespaceAnalyzer:
    """Lower-case and split on whitespace: no JVM, no stemming; for tests and toy corpora."""

    @property
    def name(self) -> str:
        return "whitespace-lowercase"

    def analyze(self, text: str) -> list[str]:
        return text.lower().split()

    def analyze_batch(self, texts: Sequence[str]) -> list[list[str]]:
        return [self.analyze(text) for text in texts]


class LuceneEnglishAnalyzer:
    """pyserini's default English analyser (Porter stemming, stop words), exactly as BRIGHT calls it.

    ``analyze_batch`` joins up to ``batch_docs`` texts (at most ``batch_chars`` characters) around a
    separator word and analyses them in one JVM call, then splits the token stream back. With the
    UTF-8 hand-over below this is about twice as fast as pyserini's one call per text (measured here on
    BRIGHT query texts) and gives the same tokens, because the StandardTokenizer never joins tokens
    across whitespace.
    """

    def __init__(self, batch_docs: int = 512, batch_chars: int = 2_000_000) -> None:
        if batch_docs < 1 or batch_chars < 1:
            raise ValueError(f"batch_docs and batch_chars must be >= 1, got {batch_docs} and {batch_chars}")
        self.batch_docs = batch_docs
        self.batch_chars = batch_chars
        self._java_analyzer: Any = None
        self._java_utils: Any = None
        self._java_string: Any = None
        self._separator_token: str | None = None
        # One Lucene Analyzer instance is not thread-safe (concurrent calls returned another text's
        # tokens or raised NullPointerException), and server requests run in a thread pool.
        self._lock = threading.RLock()

    @property
    def name(self) -> str:
        try:
            version = importlib.metadata.version("pyserini")
        except importlib.metadata.PackageNotFoundError as err:
            raise AnalyzerUnavailableError(f"pyserini is not installed; {INSTALL_HINT}") from err
        return f"lucene-english-porter-stopwords:pyserini-{version}"

    def analyze(self, text: str) -> list[str]:
        """Tokens of one text, identical to ``pyserini.analysis.Analyzer(get_lucene_analyzer()).analyze``."""
        with self._lock:
            self._ensure_started()
            return self._analyze_one(text)

    def analyze_batch(self, texts: Sequence[str]) -> list[list[str]]:
        """Tokens of each text, in order; same result as calling :meth:`analyze` on each."""
        with self._lock:
            return self._analyze_batch_locked(texts)

    def _analyze_batch_locked(self, texts: Sequence[str]) -> list[list[str]]:
        self._ensure_started()
        results: list[list[str]] = []
        start = 0
        while start < len(texts):
            end, chars = start, 0
            while end < len(texts) and end - start < self.batch_docs and (end == start or chars < self.batch_chars):
                chars += len(texts[end])
                end += 1
            results.extend(self._analyze_chunk(texts[start:end]))
            start = end
        return results

    def _ensure_started(self) -> None:
        """Start the JVM (through pyserini's import) on first use and check the batch separator."""
        if self._java_analyzer is not None:
            return
        try:
            # pyserini.analysis puts the Anserini fat jar on the classpath and starts the JVM when imported.
            from pyserini.analysis import JAnalyzerUtils, get_lucene_analyzer
        except ImportError as err:
            raise AnalyzerUnavailableError(f"cannot import pyserini.analysis ({err}); {INSTALL_HINT}") from err
        except (RuntimeError, OSError) as err:  # pyjnius raises RuntimeError when it finds no libjvm.so
            raise AnalyzerUnavailableError(f"cannot start the Java VM for pyserini ({err}); {INSTALL_HINT}") from err
        except Exception as err:
            # jnius.JavaException (not importable without a JVM): the JVM was started earlier by other code
            # without the Anserini jar on its classpath.
            raise AnalyzerUnavailableError(
                f"pyserini's Java classes are unavailable ({type(err).__name__}: {err}); if another library started "
                f"the JVM first, import models.retrieval.text_analysis users before it; otherwise {INSTALL_HINT}"
            ) from err
        from jnius import autoclass  # importable now that pyserini has configured and started the JVM

        self._java_analyzer = get_lucene_analyzer()
        self._java_utils = JAnalyzerUtils
        self._java_string = autoclass("java.lang.String")
        separator = self._analyze_one(_BATCH_SEPARATOR)
        self._separator_token = separator[0] if len(separator) == 1 else None
        if self._separator_token is None:
            logger.warning("batch separator analyses to %s; analysing one text per JVM call", separator)
        logger.info("Lucene English analyser ready (%s)", self.name)

    def _analyze_one(self, text: str) -> list[str]:
        if not isinstance(text, str):
            raise TypeError(f"analyser input must be str, got {type(text).__name__}")
        # Building the Java String from UTF-8 bytes is several times faster than pyjnius' str conversion and
        # gives the same string. DEVIATION: a lone surrogate (possible only in JSON-escaped text, never in
        # Arrow/parquet data) becomes "?", which no token contains; pyserini's own call raises instead.
        java_text = self._java_string(text.encode("utf-8", errors="replace"), "UTF-8")
        # toString() of the Java List is one JNI round trip ("[a, b, c]"); tokens never contain a space,
        # so ", " separates them unambiguously.
        flat = self._java_utils.analyze(self._java_analyzer, java_text).toString()[1:-1]
        return flat.split(", ") if flat else []

    def _analyze_chunk(self, texts: Sequence[str]) -> list[list[str]]:
        if len(texts) == 1 or self._separator_token is None:
            return [self._analyze_one(text) for text in texts]
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"analyser input must be str, got {type(text).__name__}")
        tokens = self._analyze_one(f" {_BATCH_SEPARATOR} ".join(texts))
        docs: list[list[str]] = [[]]
        for token in tokens:
            if token == self._separator_token:
                docs.append([])
            else:
                docs[-1].append(token)
        if len(docs) != len(texts):
            logger.debug("separator word occurs inside a text; re-analysing %d texts one by one", len(texts))
            return [self._analyze_one(text) for text in texts]
        return docs


_DEFAULT_ANALYZER: LuceneEnglishAnalyzer | None = None


def default_analyzer() -> LuceneEnglishAnalyzer:
    """The process-wide Lucene English analyser (one JVM per process, started on first use)."""
    global _DEFAULT_ANALYZER
    if _DEFAULT_ANALYZER is None:
        _DEFAULT_ANALYZER = LuceneEnglishAnalyzer()
    return _DEFAULT_ANALYZER
