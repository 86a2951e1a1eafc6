"""Query synthesis and training-set assembly: MCTS run directories -> Tevatron training records.

Spec: ``specs/training.md`` §1–§7 (stages S1–S6), ``specs/mcts.md`` §9 (what the runs hold).

Modules, in pipeline order:

* :mod:`.run_reader`   reads and validates an MCTS run directory (answer sheets, solution traces,
  self-reflection verdicts);
* :mod:`.trajectories` picks trajectories (correctness recomputed with our grader) and turns every
  retrieval node on them into a :class:`~.trajectories.RetrievalNode` (spec §3.3 [REC]);
* :mod:`.negatives`    hard-negative pools: self-reflection rejects per retrieval call (§5.1) and the
  lexical BM25 / dense candidates (§4.4 L4);
* :mod:`.llm_queries`  prompt rendering and robust parsing of q_llmq / q_lexical replies;
* :mod:`.generation`   resumable, concurrent LLM calls with an append-only completion cache;
* :mod:`.lexical`      the BM25 round-trip filter and candidate retrieval for lexical queries;
* :mod:`.records`      the intermediate ``QueryRecord`` JSONL schema shared by both stages;
* :mod:`.assembly`     QueryRecords + corpus -> Tevatron JSONL rows, drop reasons and statistics.

Entry points: ``python -m run_src.generate_queries`` and ``python -m run_src.build_training_data``.
"""
