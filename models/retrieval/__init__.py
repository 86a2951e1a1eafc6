"""Retrieval: corpora and examples (``corpus``), BRIGHT's BM25 (``text_analysis``, ``bm25``), dense
encoders (``text_formats``, ``encoders``, ``encoder_flags``), document-embedding caches
(``embedding_cache``), exact search (``dense_search``), the retriever interface (``retrievers``) and the
BM25 hybrid (``hybrid``)."""
