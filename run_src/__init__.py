"""Pipeline stages, each runnable as ``python -m run_src.<stage>``."""
