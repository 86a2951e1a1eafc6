#!/usr/bin/env bash
# Stage 07: rebuild paper Tables 1 and 2 (BRIGHT nDCG@10) from the evaluation runs, next to the paper's numbers.
#   scripts/07_tables.sh
#   RESULTS_ROOT=outputs/bright TABLES_DIR=outputs/tables TABLE=2 scripts/07_tables.sh
#   scripts/07_tables.sh --model_map rader=rader-qwen2.5-7b-math-llmq-cot-lexical   # extra flags go to make_tables
# Reads $RESULTS_ROOT/<model>/<query_type>/<task>/results.json (run_src.evaluate_bright's layout) and writes
# table<N>.md/.tex/.png, extra_splits.md/.tex, tables.json and config.json to $TABLES_DIR.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO_ROOT/servers/lib.sh"
stage_setup 07_tables  # .env (the environment wins) and the interpreter, printed

RESULTS_ROOT="${RESULTS_ROOT:-$REPO_ROOT/outputs/bright}"   # evaluate_bright's --output_dir
TABLES_DIR="${TABLES_DIR:-$REPO_ROOT/outputs/tables}"
TABLE="${TABLE:-all}"                                        # 1, 2 or all
METRIC="${METRIC:-NDCG@10}"                                  # paper numbers exist for NDCG@10 only

cd "$REPO_ROOT"
"$PY" -m run_src.make_tables --results_root "$RESULTS_ROOT" --output_dir "$TABLES_DIR" \
  --table "$TABLE" --metric "$METRIC" "$@"
