"""Final answers: ``extraction`` pulls and normalises them (boxed answers, MATH normalisation), ``checking``
decides equivalence with a gold answer (symbolic checks in a killable worker, optional LLM judge)."""
