"""Evaluation components: ``metrics`` (pytrec_eval exactly as BRIGHT), ``tasks`` (the BRIGHT task and
retriever registries), ``rarb_data`` (RAR-b task data), ``mteb_wrapper`` (our encoders for mteb) and
``paper_results`` (the published numbers, ``paper_results.json``)."""
