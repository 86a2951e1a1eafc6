"""Rerankers of a first-stage run: ``pointwise`` (the RaDeR reranker: backbone plus a linear head on the
last token, App. G) and ``llm`` (an LLM judging relevance on a 0-5 scale, the paper's "+QwenRerank")."""
